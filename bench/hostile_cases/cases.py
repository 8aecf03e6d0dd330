"""The hostile cases: film files POSTed to `boneage serve` (and the chunked upload), and
`boneage predict` command lines."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from hostile_cases.dicom import deflated_dicom, dicom_film
from hostile_cases.images import (
    bmp_claiming,
    encode,
    exif_sideways_jpeg,
    jpeg_claiming,
    pgm_claiming,
    reference_film,
    shrink,
    tiff_claiming,
    webp_claiming,
)
from hostile_cases.large import LIMIT_SIDE, deflated_dicom16, float_tiff, jpeg, png8, png16
from hostile_cases.limits import CONCURRENT_UPLOADS, HUGE_SIDE, UPLOAD_MB


@dataclass
class Case:
    name: str
    kind: str  # "serve", "upload" (chunked, small-limit server) or "cli"
    expect: str  # "read", "refuse", "refuse-or-read", "same-as-reference"
    build: Callable[[Path], object]  # -> file Path (serve) or argv list (cli)
    big: bool = False  # GiB-sized: skipped by --quick
    sex: str | None = "M"
    copies: int = 1  # "concurrent": this many uploads of the film at once
    headers: dict | None = None  # extra request headers (a browser's Origin, ...)


def film_cases(tmp: Path) -> tuple[list[Case], list[dict], str]:
    """Every case, the ones skipped for want of data (with why), and where the reference
    film came from."""
    grey, origin, real = reference_film()
    upright_png = tmp / "upright.png"
    upright_png.write_bytes(encode(grey, ".png"))
    cases, skipped = serve_cases(grey, real, upright_png)
    large = large_cases(grey)
    return cases + large + predict_cases(tmp, upright_png) + large_cli_cases(tmp, grey), \
        skipped, origin


LIMIT = f"{LIMIT_SIDE}x{LIMIT_SIDE}"


def _large_files(grey: np.ndarray) -> dict[str, Callable[[Path], Path]]:
    """name -> builder of each film at the size limit (built once, reused by every case)."""
    def once(file_name: str, make: Callable[[Path], None]) -> Callable[[Path], Path]:
        def build(folder: Path) -> Path:
            path = folder / file_name
            if not path.exists():
                make(path)
            return path
        return build

    return {
        f"PNG 8-bit {LIMIT}": once("limit8.png", lambda p: p.write_bytes(png8(grey))),
        f"PNG 16-bit {LIMIT}": once("limit16.png", lambda p: p.write_bytes(png16(grey))),
        f"float32 TIFF {LIMIT}": once("limit-float.tif", lambda p: p.write_bytes(float_tiff(grey))),
        f"JPEG {LIMIT}": once("limit.jpg", lambda p: p.write_bytes(jpeg(grey))),
        f"deflated 16-bit DICOM {LIMIT}": once("limit-deflated.dcm",
                                                lambda p: deflated_dicom16(p, grey)),
    }


def large_cases(grey: np.ndarray) -> list[Case]:
    """Issue 22: films at the size limit read with their heatmap, one at a time and
    CONCURRENT_UPLOADS at once (the heaviest two: 16-bit PNG and deflated DICOM)."""
    files = _large_files(grey)
    cases = [Case(f"largest legal {name}, read with heatmap", "serve", "read",
                  build) for name, build in files.items()]
    for name in (f"PNG 16-bit {LIMIT}", f"deflated 16-bit DICOM {LIMIT}"):
        cases.append(Case(f"{CONCURRENT_UPLOADS} concurrent uploads of the {name}",
                          "concurrent", "read", files[name],
                          copies=CONCURRENT_UPLOADS))
    return cases


def large_cli_cases(tmp: Path, grey: np.ndarray) -> list[Case]:
    """`boneage predict --explain` on each film at the size limit."""
    out = tmp / "heatmaps"

    def argv(build: Callable[[Path], Path]) -> Callable[[Path], list[str]]:
        return lambda folder: [str(build(folder)), "--sex", "M", "--explain", str(out)]

    return [Case(f"CLI --explain on the {name}", "cli", "read", argv(build))
            for name, build in _large_files(grey).items()]


def serve_cases(grey: np.ndarray, real: bool, upright_png: Path) -> tuple[list[Case], list[dict]]:
    """The film cases for `boneage serve` and the chunked upload, and those skipped (with why)."""
    import importlib.util

    import cv2

    small = shrink(grey, 512)
    skipped: list[dict] = []

    def write(name: str, data: bytes) -> Callable[[Path], Path]:
        def build(folder: Path) -> Path:
            path = folder / name
            path.write_bytes(data() if callable(data) else data)
            return path
        return build

    def coffee() -> bytes:
        from skimage import data as samples

        return encode(cv2.cvtColor(samples.coffee(), cv2.COLOR_RGB2BGR), ".jpg")

    h, w = 1024, 800
    gradient = np.tile(np.linspace(0, 255, w, dtype=np.float32), (h, 1)).astype(np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (h, w), dtype=np.uint8)
    wide = np.tile(np.linspace(0, 255, 20000, dtype=np.float32), (120, 1)).astype(np.uint8)
    upright_bytes = upright_png.read_bytes()
    cases = [
        Case("reference film, upright", "serve", "read", lambda f: upright_png),
        Case("deflated DICOM inflating to 1 GiB", "serve", "refuse",
             lambda f: deflated_dicom(f / "deflated.dcm"), big=True),
        Case("JPEG claiming 20000x20000, stray byte after the first segment", "serve", "refuse",
             write("claims-20000.jpg", lambda: jpeg_claiming(20000, 20000)), big=True),
        Case("plain JPEG 20000x120", "serve", "refuse",
             write("wide.jpg", lambda: encode(wide, ".jpg"))),
        Case(f"TIFF header claiming {HUGE_SIDE}x{HUGE_SIDE}", "serve", "refuse",
             write("huge.tif", lambda: tiff_claiming(HUGE_SIDE, HUGE_SIDE)), big=True),
        Case(f"BMP header claiming {HUGE_SIDE}x{HUGE_SIDE}", "serve", "refuse",
             write("huge.bmp", lambda: bmp_claiming(HUGE_SIDE, HUGE_SIDE)), big=True),
        Case("WebP header claiming 16383x16383", "serve", "refuse",
             write("huge.webp", lambda: webp_claiming()), big=True),
        Case(f"PGM header claiming {HUGE_SIDE}x{HUGE_SIDE}", "serve", "refuse",
             write("huge.pgm", lambda: pgm_claiming(HUGE_SIDE, HUGE_SIDE)), big=True),
        Case("DICOM with RescaleSlope 'abc'", "serve", "refuse-or-read",
             lambda f: dicom_film(f / "slope-abc.dcm", small, slope="abc")),
        Case("DICOM with PatientSex O, no sex given", "serve", "refuse",
             lambda f: dicom_film(f / "sex-o.dcm", small, sex="O"), sex=None),
        Case(f"chunked upload of {UPLOAD_MB} MB against --max-upload-mb 1", "upload", "refuse",
             lambda f: None, big=True),
        Case("empty file", "serve", "refuse", write("empty.png", b"")),
        Case("truncated PNG", "serve", "refuse",
             write("truncated.png", upright_bytes[:len(upright_bytes) // 2])),
        Case("black frame", "serve", "refuse",
             write("black.png", lambda: encode(np.zeros((h, w), np.uint8), ".png"))),
        Case("white frame", "serve", "refuse",
             write("white.png", lambda: encode(np.full((h, w), 255, np.uint8), ".png"))),
        Case("gradient", "serve", "refuse",
             write("gradient.png", lambda: encode(gradient, ".png"))),
        Case("colour photo (skimage coffee)", "serve", "refuse", write("coffee.jpg", coffee)),
        Case("random noise", "serve", "refuse", write("noise.png", lambda: encode(noise, ".png"))),
        Case("sideways JPEG with EXIF Orientation 6 (rotate 90)", "serve", "same-as-reference",
             write("sideways-exif.jpg", lambda: exif_sideways_jpeg(grey))),
        Case("the reference film POSTed by a page of another site (Origin)", "serve", "refuse",
             lambda f: upright_png, headers={"Origin": "https://evil.example",
                                             "Sec-Fetch-Site": "cross-site"}),
        Case("16-bit PNG of the reference film posterised to 4 grey levels", "serve", "refuse",
             write("posterised16.png", lambda: encode(posterised(grey, 4), ".png"))),
        Case("upload whose body stops short of its Content-Length", "stalled", "refuse",
             lambda f: upright_png),
    ]
    if importlib.util.find_spec("skimage") is None:
        cases = [c for c in cases if "coffee" not in c.name]
        skipped.append({"name": "colour photo (skimage coffee)", "why": "no scikit-image"})
    if real:
        cases.append(Case("inverted real film", "serve", "same-as-reference",
                          write("inverted.png", lambda: encode(255 - grey, ".png"))))
    else:
        skipped.append({"name": "inverted real film",
                        "why": "no ../shared/datasets/rsna-bone-age-fullres-sample"})
    return cases, skipped


def posterised(grey: np.ndarray, levels: int) -> np.ndarray:
    """``grey`` (8-bit) as a 16-bit film cut to ``levels`` grey levels over its range."""
    low, high = float(grey.min()), float(grey.max())
    step = (high - low) / levels
    index = np.clip(((grey - low) / step).astype(int), 0, levels - 1)
    return ((low + (index + 0.5) * step) * 257).astype(np.uint16)


def predict_cases(tmp: Path, upright_png: Path) -> list[Case]:
    """The `boneage predict` command lines (the last one reads every film case built)."""
    explain_file = tmp / "existing-file.txt"
    explain_file.write_text("not a folder\n")
    empty_dir = tmp / "empty-folder"
    empty_dir.mkdir(exist_ok=True)
    film = str(upright_png)
    return [
        Case("CLI --chronological-age 300", "cli", "refuse-or-read",
             lambda f: [film, "--sex", "M", "--chronological-age", "300"]),
        Case("CLI --chronological-age 10y15m", "cli", "refuse",
             lambda f: [film, "--sex", "M", "--chronological-age", "10y15m"]),
        Case("CLI --explain pointing at an existing file", "cli", "refuse",
             lambda f: [film, "--sex", "M", "--explain", str(explain_file)]),
        Case("CLI --sex X", "cli", "refuse", lambda f: [film, "--sex", "X"]),
        Case("CLI on an empty folder", "cli", "refuse", lambda f: [str(empty_dir), "--sex", "M"]),
        Case("CLI --json on every film case in one call", "cli-all", "refuse-or-read",
             lambda f: None),
    ]
