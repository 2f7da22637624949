"""LRCN image captioning: data preparation (text, streams, prepare), the synthetic shapes
dataset, and evaluation (metrics). Data side only; the nets live in nets/, the runtime in runtime/.
"""
