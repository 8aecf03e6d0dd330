"""boneage: bone age from hand radiographs, as a reproducible DVC + Keras 3 pipeline."""

__version__ = "0.1.0"
