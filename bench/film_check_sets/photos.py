"""Negatives from photographs: scikit-image and scikit-learn sample images in colour and grey,
their quarter crops, and scikit-image's faces."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from film_check_sets.samples import Sample, enlarge, jpeg, png, to8


def colour_photos() -> Iterator[Sample]:
    from skimage import data as sk

    names = ["astronaut", "coffee", "chelsea", "cat", "rocket", "colorwheel", "retina",
             "immunohistochemistry", "hubble_deep_field", "stereo_motorcycle", "logo"]
    for name in names:
        try:
            image = getattr(sk, name)()
        except Exception:  # noqa: BLE001 - a data file not shipped in this install
            continue
        if isinstance(image, tuple):
            image = image[0]
        bgr = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2BGR)
        yield Sample("negative", "colour photo", f"skimage.{name}", jpeg(bgr))
        yield Sample("negative", "colour photo", f"skimage.{name} (png)", png(bgr))
    from sklearn.datasets import load_sample_images

    sample = load_sample_images()
    for name, image in zip(sample.filenames, sample.images):
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        yield Sample("negative", "colour photo", f"sklearn.{Path(name).stem}", jpeg(bgr))


def grey_photos() -> Iterator[Sample]:
    from skimage import data as sk

    names = ["camera", "moon", "coins", "brick", "grass", "gravel", "clock", "cell",
             "microaneurysms", "checkerboard", "horse", "binary_blobs", "astronaut", "coffee",
             "chelsea", "rocket", "retina", "hubble_deep_field", "stereo_motorcycle"]
    for name in names:
        try:
            image = getattr(sk, name)()
        except Exception:  # noqa: BLE001
            continue
        if isinstance(image, tuple):
            image = image[0]
        if image.ndim == 3:
            image = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY)
        grey = to8(image)
        if min(grey.shape) < 128:
            grey = enlarge(grey, 256)
        yield Sample("negative", "grey photo", f"skimage.{name}", png(grey))
        height, width = grey.shape
        for i, (rows, cols) in enumerate(((slice(0, height // 2), slice(0, width // 2)),
                                          (slice(0, height // 2), slice(width // 2, width)),
                                          (slice(height // 2, height), slice(0, width // 2)),
                                          (slice(height // 2, height), slice(width // 2, width)))):
            yield Sample("negative", "grey photo crop", f"skimage.{name} quarter {i}",
                         png(enlarge(grey[rows, cols], 256)))
    from sklearn.datasets import load_sample_images

    sample = load_sample_images()
    for name, image in zip(sample.filenames, sample.images):
        yield Sample("negative", "grey photo", f"sklearn.{Path(name).stem} grey",
                     png(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)))
    faces = sk.lfw_subset()
    for i in range(0, len(faces), 4):  # 50 faces, 25 px, enlarged to 100 px
        yield Sample("negative", "face photo", f"skimage.lfw_subset[{i}]",
                     png(enlarge(to8(faces[i]), 100)))
