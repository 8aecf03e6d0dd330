"""Negatives drawn here: blank frames, noise, gradients, text pages and flat shapes (one of
them a hand silhouette)."""

from __future__ import annotations

from typing import Iterator

import cv2
import numpy as np

from film_check_sets.samples import Sample, jpeg, png, to8


def blanks() -> Iterator[Sample]:
    rng = np.random.default_rng(0)
    for name, level in (("black", 0), ("white", 255), ("grey", 128), ("dark grey", 20)):
        for h, w in ((1024, 800), (100, 100)):
            frame = np.full((h, w), level, np.uint8)
            yield Sample("negative", "blank", f"{name} {w}x{h}", png(frame))
            noisy = np.clip(frame + rng.normal(0, 1.5, frame.shape), 0, 255).astype(np.uint8)
            yield Sample("negative", "blank", f"{name} {w}x{h} + sensor noise", png(noisy))
    yield Sample("negative", "blank", "black 16-bit", png(np.zeros((1024, 800), np.uint16)))
    yield Sample("negative", "blank", "white 16-bit",
                 png(np.full((1024, 800), 65535, np.uint16)))
    frame = np.zeros((1024, 800), np.uint8)
    cv2.rectangle(frame, (700, 40), (740, 100), 255, -1)  # a marker on an empty plate
    yield Sample("negative", "blank", "black with a marker", png(frame))
    yield Sample("negative", "blank", "black JPEG", jpeg(np.zeros((600, 480), np.uint8)))


def noises() -> Iterator[Sample]:
    for seed in range(4):
        rng = np.random.default_rng(100 + seed)
        h, w = (1024, 800) if seed % 2 == 0 else (256, 200)
        yield Sample("negative", "noise", f"uniform {seed}",
                     png(rng.integers(0, 256, (h, w), dtype=np.uint8)))
        yield Sample("negative", "noise", f"gaussian {seed}",
                     png(np.clip(rng.normal(128, 40, (h, w)), 0, 255).astype(np.uint8)))
        pepper = np.full((h, w), 128, np.uint8)
        pepper[rng.random((h, w)) < 0.1] = 0
        pepper[rng.random((h, w)) < 0.1] = 255
        yield Sample("negative", "noise", f"salt and pepper {seed}", png(pepper))
        for sigma in (1, 3, 8, 20):
            cloud = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0),
                                     sigma * h / 512)
            yield Sample("negative", "noise", f"blurred noise sigma {sigma} {seed}",
                         png(to8(cloud)))
        yield Sample("negative", "noise", f"uniform 16-bit {seed}",
                     png(rng.integers(0, 65536, (h, w), dtype=np.uint16)))
        yield Sample("negative", "noise", f"uniform JPEG {seed}",
                     jpeg(rng.integers(0, 256, (h, w), dtype=np.uint8)))


def gradients() -> Iterator[Sample]:
    h, w = 1024, 800
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    rng = np.random.default_rng(7)
    shapes = {
        "horizontal": xx / w,
        "vertical": yy / h,
        "diagonal": (xx / w + yy / h) / 2,
        "radial": np.hypot(xx - w / 2, yy - h / 2),
        "vignette": -np.hypot(xx - w / 2, yy - h / 2),
        "two bands": np.sin(yy / h * np.pi),
        "sinusoid": np.sin(xx / w * 3 * np.pi) + np.cos(yy / h * 2 * np.pi),
        "off-centre glow": np.exp(-((xx - 0.3 * w) ** 2 + (yy - 0.7 * h) ** 2) / (0.1 * h * h)),
    }
    for name, field in shapes.items():
        yield Sample("negative", "gradient", name, png(to8(field)))
        noisy = to8(field) + rng.normal(0, 3, field.shape)
        yield Sample("negative", "gradient", f"{name} + noise",
                     png(np.clip(noisy, 0, 255).astype(np.uint8)))
        yield Sample("negative", "gradient", f"{name} 16-bit",
                     png(np.round(to8(field).astype(np.float32) * 257).astype(np.uint16)))


_WORDS = ("bone age report left hand radiograph patient name date of birth the carpal bones "
          "are consistent with a skeletal age of ten years greulich pyle atlas standard "
          "deviation findings impression no fracture seen").split()


def text_pages() -> Iterator[Sample]:
    from skimage import data as sk

    yield Sample("negative", "text / document", "skimage.page", png(sk.page()))
    yield Sample("negative", "text / document", "skimage.text", png(sk.text()))
    fonts = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_DUPLEX,
             cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX)
    for i in range(16):
        rng = np.random.default_rng(300 + i)
        h, w = (1100, 850) if i % 2 == 0 else (600, 800)
        dark = i % 4 == 3
        page = np.full((h, w), 20 if dark else 245, np.uint8)
        scale = float(rng.uniform(0.6, 1.6))
        step = int(34 * scale)
        for y in range(step, h - step // 2, step):
            words = " ".join(rng.choice(_WORDS, 12))
            cv2.putText(page, words, (int(w * 0.05), y), fonts[i % len(fonts)], scale,
                        235 if dark else 15, max(1, int(round(scale * 1.5))), cv2.LINE_AA)
        name = f"page {i} ({'white on black' if dark else 'black on white'})"
        yield Sample("negative", "text / document", name,
                     jpeg(page) if i % 3 == 0 else png(page))


def shapes() -> Iterator[Sample]:
    h, w = 640, 512
    for i in range(8):
        rng = np.random.default_rng(500 + i)
        bg, fg = (15, 200) if i % 2 == 0 else (230, 40)
        img = np.full((h, w), bg, np.uint8)
        kind = ("ellipse", "rectangle", "star", "flat hand")[i % 4]
        if kind == "ellipse":
            cv2.ellipse(img, (w // 2, h // 2), (w // 3, h // 3), 15, 0, 360, fg, -1)
        elif kind == "rectangle":
            cv2.rectangle(img, (w // 5, h // 6), (4 * w // 5, 5 * h // 6), fg, -1)
        elif kind == "star":
            angles = np.linspace(0, 2 * np.pi, 11)[:-1]
            radius = np.where(np.arange(10) % 2 == 0, 0.4 * w, 0.15 * w)
            points = np.stack([w / 2 + radius * np.sin(angles), h / 2 - radius * np.cos(angles)],
                              1).astype(np.int32)
            cv2.fillPoly(img, [points], fg)
        else:  # a hand silhouette, flat: a shape, not a radiograph
            cv2.ellipse(img, (w // 2, int(h * 0.62)), (int(w * 0.2), int(h * 0.17)), 0, 0, 360,
                        fg, -1)
            cv2.rectangle(img, (int(w * 0.38), int(h * 0.7)), (int(w * 0.62), h), fg, -1)
            for k, angle in enumerate((-25, -8, 0, 8, 18)):
                base = (int(w * (0.33 + 0.085 * k)), int(h * 0.5))
                length = h * (0.22 if k in (1, 2, 3) else 0.17)
                tip = (int(base[0] + length * np.sin(np.radians(angle)) * (1 if k else -2)),
                       int(base[1] - length * np.cos(np.radians(angle)) * (1 if k else 0.3)))
                cv2.line(img, base, tip, fg, int(w * 0.055))
        img = cv2.GaussianBlur(img, (0, 0), 2)
        img = np.clip(img + rng.normal(0, 2, img.shape), 0, 255).astype(np.uint8)
        yield Sample("negative", "drawn shape", f"{kind} {i}", png(img))
