"""Video description (LRCN's third application; S2VT and the paper's TACoS-style variants)."""
