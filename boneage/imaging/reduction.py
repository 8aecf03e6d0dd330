"""Large films are reduced as they are read, so memory is bounded by the model, not the film.

A film may be as large as :data:`boneage.imaging.headers.MAX_PIXELS` (100 M px); one with more
than :data:`READ_PIXELS` is reduced by a whole factor (:func:`read_factor`: 2, 4 or 8) as
:mod:`boneage.imaging.decoding` and :mod:`boneage.imaging.dicom` read it, by
:func:`reduce_by` in its stored dtype (or by libjpeg itself for a JPEG), before any float
copy is made. Both the preprocess stage and ``boneage predict`` read through them, so they
still see the same pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

READ_PIXELS = 25_000_000
"""Films with more pixels than this (5,000 x 5,000) are reduced as they are read; every
radiograph in use (RSNA's full resolution: about 2,000 x 2,500; the largest detector plates:
about 4,300 x 4,300) stays under it and is read exactly as before. What is saved is the memory:
a 100 M px 16-bit film is 200 MB as stored, 400 MB as float32, and one such upload must not
cost gigabytes (issue 22)."""

REDUCED_PIXELS = 8_000_000
"""... by the smallest of 2, 4 or 8 that brings them to at most this many pixels (a 100 M px
film: by 4, to 2,500 x 2,500). The model input is at most a few hundred px a side (prepared
from at least twice that) and the heatmap picture is 1,024 px, so nothing downstream loses
detail, and everything after the decode costs a sixteenth."""

READ_FACTORS = (2, 4, 8)  # libjpeg's (and OpenCV's IMREAD_REDUCED_*) scales


def read_factor(width: int, height: int) -> int:
    """The whole factor a ``width x height`` film is reduced by as it is read (1: not at all)."""
    pixels = width * height
    if pixels <= READ_PIXELS:
        return 1
    for factor in READ_FACTORS:
        if pixels <= REDUCED_PIXELS * factor * factor:
            return factor
    return READ_FACTORS[-1]


def reduce_by(image: np.ndarray, factor: int) -> np.ndarray:
    """Box average of each ``factor x factor`` block (the edges trimmed by < ``factor`` px), in
    the array's own dtype where OpenCV averages it (uint8, uint16, int16, float32, float64);
    other dtypes (int32, uint32, ...) are averaged as float32, a band of rows at a time, so
    no full-size float copy is made."""
    if factor == 1:
        return image
    height, width = image.shape[0] // factor, image.shape[1] // factor
    if height < 1 or width < 1:
        return image
    trimmed = image[:height * factor, :width * factor]
    if image.dtype in (np.uint8, np.uint16, np.int16, np.float32, np.float64):
        return cv2.resize(trimmed, (width, height), interpolation=cv2.INTER_AREA)
    band = max(1, 1024 // factor) * factor
    out = np.empty((height, width) + image.shape[2:], dtype=np.float32)
    for top in range(0, height * factor, band):
        rows = trimmed[top:top + band].astype(np.float32)
        out[top // factor:(top + rows.shape[0]) // factor] = cv2.resize(
            rows, (width, rows.shape[0] // factor), interpolation=cv2.INTER_AREA)
    return out
