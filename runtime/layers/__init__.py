"""One registered unit per Caffe layer type (see registry.py)."""
