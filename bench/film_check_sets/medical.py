"""Medical negatives that are not hands: pydicom's test DICOMs (one of each picture), the
Shepp-Logan head phantom and drawn chest films."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from boneage.imaging.decoding import read_film
from film_check_sets.samples import Sample, png, to8


def medical() -> Iterator[Sample]:
    import pydicom.data

    seen = set()
    files = [f for f in pydicom.data.get_testdata_files() if os.path.isfile(f)]
    for path in sorted(files):
        if path.endswith((".json", ".txt", ".dump", ".gz", ".icc")):
            continue
        data = Path(path).read_bytes()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                image = read_film(data, path, force=True).image  # the pixels' verdict,
                # not the header's (boneage.imaging.dicom_header refuses most of these)
        except Exception:  # noqa: BLE001 - reports, plans, waveforms, no codec: no image
            continue
        if min(image.shape) < 48:
            continue  # dose grids and 16 px test slices: refused for their size, not counted
        key = hashlib.sha1(cv2.resize(to8(image), (32, 32), interpolation=cv2.INTER_AREA)
                           .tobytes()).hexdigest()
        if key in seen:  # the same picture in another transfer syntax
            continue
        seen.add(key)
        rel = os.path.relpath(path, os.path.dirname(pydicom.data.__file__))
        yield Sample("negative", "DICOM, not a hand (pydicom test files)", rel, data)
    from skimage import data as sk

    yield Sample("negative", "drawn chest / head", "skimage.shepp_logan_phantom",
                 png(to8(sk.shepp_logan_phantom())))
    for i in range(12):
        yield Sample("negative", "drawn chest / head", f"chest {i}", png(chest(i)))


def chest(seed: int, size: int = 512) -> np.ndarray:
    """A frontal chest radiograph, roughly: bright body, dark lungs, spine, ribs, noise."""
    rng = np.random.default_rng(seed)
    h, w = size, int(size * rng.uniform(0.8, 1.1))
    img = np.full((h, w), rng.uniform(5, 30), np.float32)
    cv2.ellipse(img, (w // 2, int(h * 0.55)), (int(w * rng.uniform(0.38, 0.47)), int(h * 0.5)),
                0, 0, 360, float(rng.uniform(150, 200)), -1)
    lung = float(rng.uniform(40, 90))
    for side in (-1, 1):
        cv2.ellipse(img, (w // 2 + side * int(w * 0.2), int(h * 0.45)),
                    (int(w * 0.15), int(h * 0.3)), 0, 0, 360, lung, -1)
    cv2.rectangle(img, (w // 2 - w // 30, 0), (w // 2 + w // 30, h), 220, -1)
    for k in range(9):  # ribs: arcs over each lung
        y = int(h * (0.2 + 0.07 * k))
        for side in (-1, 1):
            cv2.ellipse(img, (w // 2 + side * int(w * 0.2), y), (int(w * 0.18), int(h * 0.05)),
                        0, 180, 360, 170, max(1, size // 100))
    cv2.circle(img, (w // 2 + int(w * 0.05), int(h * 0.6)), int(w * 0.12), 190, -1)  # heart
    img = cv2.GaussianBlur(img, (0, 0), size / 150)
    img += rng.normal(0, 4, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)
