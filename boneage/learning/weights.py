"""Loading a local weights file into a backbone, strictly: a half-loaded backbone is a
silently wrong model.

Its own module so that the network builders (:mod:`boneage.learning.models`) and the
EfficientNet-Lite variants (:mod:`boneage.learning.efficientnet_lite`) share it without
importing each other.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import keras

from boneage.kernel.errors import SetupError


def load_backbone_weights(backbone: keras.Model, path: str | Path) -> None:
    """Load a local weights file (``.weights.h5`` or legacy ``.h5``) into a backbone."""
    path = Path(path)
    if not path.is_file():
        raise SetupError(f"train.weights: {path} is not a file; use 'none', 'imagenet' "
                         "or the path of a weights file for this backbone")
    try:
        # Keras only warns when part of a file does not match; a half-loaded backbone is
        # a silently wrong model, so every warning here is an error.
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            backbone.load_weights(path)
    except Exception as exc:  # Keras raises several types for shape/name mismatches
        raise SetupError(f"train.weights: {path} does not fit the {backbone.name} backbone "
                         f"without its top: {exc}") from exc
