"""The LRCN applications built on compiler/ and runtime/: captioning and activity recognition."""
