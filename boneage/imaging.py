"""The one imaging path: decode, crop, normalise and resize a film.

The preprocess stage, ``boneage predict`` and the web app all call :func:`prepare`
with the :class:`ImagingSettings` that the export records in the model card, so a film
is turned into model input exactly the same way in training and in use. Training/serving
skew (a different crop, contrast or aspect at inference) is the classic failure of this
field; keeping one function makes it impossible.

DICOM files are decoded by :mod:`boneage.dicom` (called from :func:`read_film`) into the same
grey float array as PNG/JPEG, so they too flow through :func:`prepare_array`.

Films come from anyone (``boneage serve`` takes uploads), so no format is decoded unless its
header has been read and its width and height checked first (:data:`FORMATS`; anything else,
GIF or JPEG 2000 say, is refused rather than handed to OpenCV unchecked). Films are read
upright: the EXIF orientation of a JPEG or PNG is applied.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Any

import cv2
import numpy as np

from boneage.errors import ImageError

MAX_PIXELS = 100_000_000  # a 10,000 x 10,000 film; bigger is not a hand radiograph
MAX_SIDE = 16_384


@dataclass(frozen=True)
class ImagingSettings:
    """How a film becomes model input; saved in the model card and read back by predict."""

    size: int = 128
    resize: str = "squash"  # "squash" to a square, or "pad" keeping the aspect ratio
    contrast: str = "percentile"  # "none" | "percentile" | "clahe"
    percentiles: tuple[float, float] = (1.0, 99.0)
    clahe_clip: float = 2.0
    clahe_tiles: int = 8
    crop: str = "none"  # "none" | "hand": crop to the hand, blank markers and plate borders

    def __post_init__(self) -> None:
        if self.resize not in ("squash", "pad"):
            raise ValueError(f"resize must be 'squash' or 'pad', got {self.resize!r}")
        if self.contrast not in ("none", "percentile", "clahe"):
            raise ValueError(f"contrast must be none|percentile|clahe, got {self.contrast!r}")
        if self.crop not in ("none", "hand"):
            raise ValueError(f"crop must be 'none' or 'hand', got {self.crop!r}")
        if self.size < 8:
            raise ValueError(f"size must be at least 8 px, got {self.size}")
        object.__setattr__(self, "percentiles", tuple(float(p) for p in self.percentiles))

    @classmethod
    def from_params(cls, params: Any) -> "ImagingSettings":
        """Build from :class:`boneage.config.PreprocessParams` (or any object with the fields)."""
        return cls(**{f.name: getattr(params, f.name) for f in fields(cls)})

    @classmethod
    def from_dict(cls, data: dict) -> "ImagingSettings":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown imaging settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["percentiles"] = list(self.percentiles)
        return data


@dataclass
class Film:
    """A decoded film: grey float32 in [0, 1] (bone bright) and what its file said about
    the patient (DICOM tags; empty for PNG/JPEG)."""

    image: np.ndarray
    meta: dict


def read_film(data: bytes, name: str = "image") -> Film:
    """Decode a film (any of :data:`FORMATS`, 8- or 16-bit, grey or colour) to a :class:`Film`.

    Sizes are checked from the header before the pixels are decoded, so a decompression
    bomb costs nothing.
    """
    from boneage import dicom

    if data and dicom.is_dicom(data):
        image, meta = dicom.read_dicom(data, name, MAX_PIXELS, MAX_SIDE)
        return Film(image, meta)
    return Film(to_grey_float(decode_raw(data, name), name), {"format": sniff(data) or "other"})


FORCE_HINT = "read it anyway with --force (web API: force=true)"


def check_read_film(film: Film, data: bytes, name: str = "image", *,
                    force: bool = False) -> Film:
    """The film check (:mod:`boneage.film_check`) on a decoded film, as predict and serve
    read a film: what does not look like a hand radiograph, or looks inverted (bone dark), is
    refused with the reason unless ``force``; ``film.meta["checks"]`` records the verdict for
    the reading's machine-readable ``checks`` field.

    An inverted-looking film is refused, not inverted back: a bright collimation border
    around a normal film can look like an inverted background, and reading a film the wrong
    way up gives a confident wrong age, so the user decides (invert the file, or force).
    """
    from boneage.errors import NotAFilmError
    from boneage.film_check import check_film, colour_fraction

    check = check_film(film.image, colour=colour_fraction(data))
    checks = {**check.to_dict(), "forced": False}
    problems = list(check.reasons) if not check.accepted else []
    if check.inverted:
        problems.append("it looks inverted (bone darker than the background); save it with "
                        "bone bright")
    if problems and not force:
        raise NotAFilmError(f"{name}: not read: " + "; ".join(problems) + f"; {FORCE_HINT}",
                            checks)
    checks["forced"] = bool(problems)
    return Film(film.image, {**film.meta, "checks": checks})


def decode(data: bytes, name: str = "image") -> np.ndarray:
    """Decode a film (any of :data:`FORMATS`) to float32 grey in [0, 1]."""
    return read_film(data, name).image


def decode_raw(data: bytes, name: str = "image") -> np.ndarray:
    """Decode image bytes (not DICOM) to the array as stored (uint8/uint16, 1-3 channels),
    upright (EXIF orientation applied) and checked.

    Only formats whose header this module reads are decoded: the size check must hold for
    every format the decoder accepts, or a 20,000 px film in a format we cannot read the
    header of would be decoded in full.
    """
    if not data:
        raise ImageError(f"{name}: empty file")
    kind = sniff(data)
    if kind not in _HEADER_READERS:
        raise ImageError(f"{name}: not a readable {FORMATS} image "
                         f"(unrecognised content {data[:8]!r})")
    size = _HEADER_READERS[kind](data)
    if size is None:
        raise ImageError(f"{name}: not a readable {kind.upper()} image (corrupt or truncated?): "
                         "its header gives no width and height")
    width, height = size
    check_size(width, height, name)
    image = _decode_grey_png(data, name) if _is_plain_grey_png(data) else None
    if image is None:
        buffer = np.frombuffer(data, dtype=np.uint8)
        try:
            # Not IMREAD_UNCHANGED (-1, every flag bit): it skips the EXIF orientation, and a
            # film stored sideways must be read upright. ANYDEPTH keeps 16 bits, ANYCOLOR the
            # channels (alpha is dropped: films are grey).
            image = cv2.imdecode(buffer, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
        except cv2.error as exc:  # OpenCV's own size limit (boneage/__init__.py), bad data
            raise ImageError(f"{name}: not a readable {kind.upper()} image ({exc})") from exc
    if image is None or image.size == 0:
        raise ImageError(f"{name}: not a readable {kind.upper()} image "
                         "(corrupt or truncated?)")
    check_size(image.shape[1], image.shape[0], name)  # belt and braces: what was decoded
    return image


def _is_plain_grey_png(data: bytes) -> bool:
    """An 8- or 16-bit greyscale PNG (IHDR bit depth and colour type), how radiographs are
    stored; colour, palette and 1-4 bit films take OpenCV's path, and so do PNGs with an
    eXIf chunk (OpenCV applies its orientation; imagecodecs does not)."""
    return sniff(data) == "png" and len(data) > 25 and data[12:16] == b"IHDR" \
        and data[24] in (8, 16) and data[25] == 0 and not _png_has_exif(data)


def _png_has_exif(data: bytes) -> bool:
    """Whether an eXIf chunk comes before the image data (walks the chunk lengths)."""
    position = 8
    while position + 8 <= len(data):
        kind = data[position + 4:position + 8]
        if kind == b"eXIf":
            return True
        if kind in (b"IDAT", b"IEND"):
            return False
        position += 12 + int.from_bytes(data[position:position + 4], "big")
    return False


def _decode_grey_png(data: bytes, name: str) -> np.ndarray | None:
    """Decode a grey PNG with imagecodecs (libpng over zlib-ng): the same pixels as
    ``cv2.imdecode`` (a test checks), 6-14% faster on full-resolution films, and decoding
    is most of what preprocessing a full-resolution film costs. None (OpenCV decodes
    instead, and words the error for a bad file) when imagecodecs fails or gives anything
    but one grey plane. Imported on first use, not at start-up."""
    import imagecodecs

    try:
        image = imagecodecs.png_decode(data)
    except Exception:  # noqa: BLE001 - any failure: OpenCV reads the file or reports it
        return None
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    return image if image.ndim == 2 and image.dtype in (np.uint8, np.uint16) else None


FORMATS = "PNG, JPEG, TIFF, BMP, WebP, PNM or DICOM"  # what read_film accepts


def sniff(data: bytes) -> str | None:
    """'png', 'jpeg', 'tiff', 'bmp', 'webp', 'pnm' or 'dicom' from the magic bytes; None for
    anything else (GIF, JPEG 2000, HDR, ...: formats whose header this module does not read)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[128:132] == b"DICM":
        return "dicom"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if data[:2] == b"BM":
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if len(data) > 2 and data[0:1] == b"P" and data[1:2] in b"123456" and data[2:3].isspace():
        return "pnm"
    return None


def check_size(width: int, height: int, name: str = "image") -> None:
    """Refuse films too large to be a hand radiograph (and decompression bombs)."""
    if width < 1 or height < 1:
        raise ImageError(f"{name}: image header gives {width}x{height} px (corrupt?)")
    if width * height > MAX_PIXELS or max(width, height) > MAX_SIDE:
        raise ImageError(
            f"{name}: image is {width}x{height} px; films larger than "
            f"{MAX_SIDE} px a side or {MAX_PIXELS:,} px are refused"
        )


def reduce_for(image: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Shrink a film by a whole factor while its shorter side stays >= 2 x ``size``.

    Returns ``(reduced, samples)``: the box average of each ``factor x factor`` block, and
    the block's top-left pixel as it was. Decoding is the one cost a full-resolution film
    cannot avoid (~20 ms for 1600x2080 px); the box average costs ~1 ms in any dtype, and
    then the hand mask, blanking and resize work on a few per cent of the pixels instead of
    costing several times the decode. Averaging pulls the brightest and darkest pixels in,
    so the percentile statistics (background level, contrast stretch) are taken from
    ``samples``, which keep the film's own pixel distribution. The output is at most
    ``size`` px a side, so twice that detail is plenty. Films already that small come
    back as they are (``samples`` is then the film itself).
    """
    height, width = image.shape[:2]
    factor = min(height, width) // (2 * size)
    if factor < 2:
        return image, image
    height, width = height // factor, width // factor
    # Exact whole factors (edges trimmed by < factor px) take OpenCV's fast box-average
    # path; halving repeatedly (SIMD 2x2 means) is ~2x faster than one 8x8 box and differs
    # from it by rounding only (at most 1 grey level).
    reduced, remaining = image[:height * factor, :width * factor], factor
    while remaining % 2 == 0:
        remaining //= 2
        reduced = cv2.resize(reduced, (width * remaining, height * remaining),
                             interpolation=cv2.INTER_AREA)
    if remaining > 1:
        reduced = cv2.resize(reduced, (width, height), interpolation=cv2.INTER_AREA)
    return reduced, np.ascontiguousarray(image[:height * factor:factor, :width * factor:factor])


def grey_plane(image: np.ndarray, name: str = "image") -> np.ndarray:
    """One grey plane of a decoded array (1-4 channels), in its own dtype."""
    if image.ndim == 3:
        if image.shape[2] == 1:
            return image[:, :, 0]
        if image.shape[2] in (3, 4):
            return cv2.cvtColor(image[:, :, :3], cv2.COLOR_BGR2GRAY)
        raise ImageError(f"{name}: unsupported channel count {image.shape[2]}")
    if image.ndim != 2:
        raise ImageError(f"{name}: unsupported image shape {image.shape}")
    return image


def to_grey_float(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Convert a decoded array (uint8/uint16/float, 1-4 channels) to float32 grey in [0, 1]."""
    image = grey_plane(image, name)
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise ImageError(f"{name}: image is only {image.shape[1]}x{image.shape[0]} px")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535.0
    image = image.astype(np.float32)
    if not np.isfinite(image).all():
        raise ImageError(f"{name}: image holds NaN or infinite values")
    low, high = float(image.min()), float(image.max())
    return (image - low) / (high - low) if high > low else np.zeros_like(image)


_INTEGER_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


@dataclass
class Levels:
    """The grey levels of a film's own pixels as a histogram, for percentile statistics.

    Radiographs are stored as 8- or 16-bit integers, so counting the levels once and reading
    a percentile off the cumulative counts replaces a partial sort of the pixels (``np.percentile``)
    with the same figure (its linear interpolation). ``fill_count`` copies of the level ``fill``
    stand for blanked pixels (the background outside the hand), which need not be a whole level.
    Levels are in the stored units; :meth:`percentiles` returns them scaled to [0, 1].
    """

    counts: np.ndarray
    scale: float
    fill: float = 0.0
    fill_count: int = 0

    @classmethod
    def of(cls, values: np.ndarray, fill: float = 0.0, fill_count: int = 0) -> "Levels":
        """Levels of a uint8/uint16 array; ``fill`` is in [0, 1] units."""
        scale = _INTEGER_SCALE[values.dtype]
        return cls(np.bincount(values.ravel()), scale, fill * scale, int(fill_count))

    def percentiles(self, qs) -> np.ndarray:
        cumulative = np.cumsum(self.counts)
        counted = int(cumulative[-1]) if cumulative.size else 0
        total = counted + self.fill_count
        if total == 0:
            raise ValueError("percentiles of no pixels")
        below = 0  # counted pixels darker than the fill level
        if self.fill_count and cumulative.size:
            level = int(np.ceil(self.fill)) - 1
            below = int(cumulative[min(level, cumulative.size - 1)]) if level >= 0 else 0

        def value(rank: int) -> float:
            if rank < below:
                return float(np.searchsorted(cumulative, rank, side="right"))
            if rank < below + self.fill_count:
                return self.fill
            return float(np.searchsorted(cumulative, rank - self.fill_count, side="right"))

        out = []
        for q in np.atleast_1d(qs):
            position = float(q) / 100.0 * (total - 1)
            rank = int(np.floor(position))
            low = value(rank)
            fraction = position - rank
            out.append(low + (value(rank + 1) - low) * fraction if fraction > 0 else low)
        return np.asarray(out) / self.scale


def _percentiles(samples, qs) -> np.ndarray:
    """Percentiles in [0, 1] of float pixels, of integer pixels (scaled) or of :class:`Levels`."""
    if isinstance(samples, np.ndarray) and samples.dtype in _INTEGER_SCALE:
        samples = Levels.of(samples)
    if isinstance(samples, Levels):
        return samples.percentiles(qs)
    return np.percentile(samples, qs)


# Frame headers: baseline, extended, progressive, lossless (Huffman and arithmetic) and
# JPEG-LS (0xF7, met inside DICOM). 0xC4 (DHT), 0xC8 (JPG) and 0xCC (DAC) are not frames.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a JPEG's frame header (SOFn); None when there is none.

    Markers are found the way libjpeg finds them (its ``next_marker``): bytes that are not
    0xFF between segments are skipped, as are fill bytes and stuffed zeros. Stopping at the
    first stray byte instead would let a stray byte hide the frame header from the size
    check while the decoder still reads it. A scan (SOS) or the end (EOI) before any frame
    header gives None: the decoder cannot decode that either.
    """
    if data[:2] != b"\xff\xd8":
        return None
    position, end = 2, len(data)
    while True:
        position = data.find(b"\xff", position)
        if position < 0:
            return None
        while position < end and data[position] == 0xFF:
            position += 1
        if position >= end:
            return None
        marker = data[position]
        position += 1
        if marker == 0x00:  # a stuffed zero: not a marker
            continue
        if marker in _JPEG_SOF:
            if position + 7 > end:
                return None
            height = int.from_bytes(data[position + 3:position + 5], "big")
            width = int.from_bytes(data[position + 5:position + 7], "big")
            return width, height
        if marker in (0xD9, 0xDA):  # EOI, SOS
            return None
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # SOI, TEM, RSTn: no length
            continue
        position += max(2, int.from_bytes(data[position:position + 2], "big"))


def _png_size(data: bytes) -> tuple[int, int] | None:
    """IHDR must be the first chunk (libpng refuses anything else)."""
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


_TIFF_TYPES = {1: "B", 3: "H", 4: "I", 16: "Q"}  # BYTE, SHORT, LONG, LONG8


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """ImageWidth (256) and ImageLength (257) of the first directory, the page OpenCV
    decodes; classic TIFF and BigTIFF. The first of duplicate tags counts, as in libtiff."""
    import struct

    order = "<" if data[:2] == b"II" else ">"
    try:
        if data[2:4] == (b"*\x00" if order == "<" else b"\x00*"):
            (offset,) = struct.unpack_from(order + "I", data, 4)
            count_format, entry_format, entry_size = "H", "HHI4s", 12
        else:  # BigTIFF
            (offset,) = struct.unpack_from(order + "Q", data, 8)
            count_format, entry_format, entry_size = "Q", "HHQ8s", 20
        (count,) = struct.unpack_from(order + count_format, data, offset)
        found: dict[int, int] = {}
        start = offset + struct.calcsize(count_format)
        for index in range(min(count, 4096)):
            tag, kind, values, value = struct.unpack_from(order + entry_format, data,
                                                          start + index * entry_size)
            if tag in (256, 257) and tag not in found:
                if kind not in _TIFF_TYPES or values != 1:
                    return None
                found[tag] = struct.unpack_from(order + _TIFF_TYPES[kind], value)[0]
            if len(found) == 2:
                return found[256], found[257]
    except struct.error:  # the directory runs past the end of the file
        return None
    return None


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    """From the DIB header: OS/2 (12 bytes, unsigned 16-bit) or Windows (>= 40, signed 32-bit;
    a negative height means top-down rows)."""
    if len(data) < 26:
        return None
    header = int.from_bytes(data[14:18], "little")
    if header == 12:
        return int.from_bytes(data[18:20], "little"), int.from_bytes(data[20:22], "little")
    if header >= 40:
        width = int.from_bytes(data[18:22], "little", signed=True)
        height = int.from_bytes(data[22:26], "little", signed=True)
        return (width, abs(height)) if width >= 0 else None
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    """From the first chunk: VP8X (the canvas), VP8 (lossy key frame) or VP8L (lossless)."""
    kind, payload = data[12:16], data[20:30]
    if kind == b"VP8X" and len(payload) >= 10:
        return (int.from_bytes(payload[4:7], "little") + 1,
                int.from_bytes(payload[7:10], "little") + 1)
    if kind == b"VP8 " and len(payload) >= 10 and payload[3:6] == b"\x9d\x01\x2a":
        return (int.from_bytes(payload[6:8], "little") & 0x3FFF,
                int.from_bytes(payload[8:10], "little") & 0x3FFF)
    if kind == b"VP8L" and len(payload) >= 5 and payload[0] == 0x2F:
        bits = int.from_bytes(payload[1:5], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _pnm_size(data: bytes) -> tuple[int, int] | None:
    """The first two numbers after the magic (P1-P6), skipping white space and # comments."""
    numbers = re.match(rb"P[1-6](?:\s|#[^\n\r]*)+(\d{1,9})(?:\s|#[^\n\r]*)+(\d{1,9})",
                       data[:4096])
    return (int(numbers.group(1)), int(numbers.group(2))) if numbers else None


_HEADER_READERS = {"png": _png_size, "jpeg": jpeg_size, "tiff": _tiff_size, "bmp": _bmp_size,
                   "webp": _webp_size, "pnm": _pnm_size}


def _candidates(small8: np.ndarray, valid: np.ndarray):
    """Bright connected regions (Otsu over the ``valid`` pixels) with a hand-likeness score.

    A hand sits near the middle of the film and meets at most one edge (the forearm);
    the bright surround outside the collimated field and plate borders meet two or more
    edges and lie off-centre, so they score low even when they are larger.
    """
    pixels = small8[valid].reshape(1, -1)
    if pixels.size < 64 or pixels.min() == pixels.max():
        return None
    threshold, _ = cv2.threshold(pixels, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    binary = ((small8 > threshold) & valid).astype(np.uint8)
    binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, _KERNEL)
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if count <= 1:
        return None
    height, width = small8.shape
    left, top = stats[1:, cv2.CC_STAT_LEFT], stats[1:, cv2.CC_STAT_TOP]
    right, bottom = left + stats[1:, cv2.CC_STAT_WIDTH], top + stats[1:, cv2.CC_STAT_HEIGHT]
    sides = ((left == 0).astype(int) + (top == 0) + (right == width) + (bottom == height))
    off_centre = np.hypot((centroids[1:, 0] - width / 2) / (width / 2),
                          (centroids[1:, 1] - height / 2) / (height / 2)) / np.sqrt(2)
    centrality = np.clip(1 - off_centre, 0.05, 1)
    area = stats[1:, cv2.CC_STAT_AREA].astype(np.float64)
    score = area * centrality * np.select([sides <= 1, sides == 2], [1.0, 0.5], 0.15)
    best = int(np.argmax(score))
    return labels == best + 1, int(sides[best]), float(centrality[best]), float(area[best])


_KERNEL = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))


def hand_mask(image: np.ndarray) -> np.ndarray:
    """Boolean mask of the hand: the most hand-like bright region after Otsu thresholding.

    Markers (the 'L' letter), plate borders and collimator edges are separate or thin
    regions; an opening cuts thin bridges so they do not join the hand. When the best
    region looks like a bright surround (meets two or more edges, off-centre), it is set
    aside and the rest of the film is thresholded again, as the hand then lies inside it.
    """
    height, width = image.shape
    scale = 256.0 / max(height, width)
    small = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                       interpolation=cv2.INTER_AREA) if scale < 1 else image
    small8 = cv2.GaussianBlur(np.clip(small * 255.0, 0, 255).astype(np.uint8), (5, 5), 0)
    valid = np.ones(small8.shape, dtype=bool)
    chosen = None
    for _ in range(3):
        found = _candidates(small8, valid)
        if found is None:
            break
        region, sides, centrality, area = found
        if chosen is not None and area < 0.02 * small8.size:
            break  # nothing hand-sized inside the surround: keep the first answer
        chosen = region
        remaining = valid & ~region
        if sides < 2 or centrality > 0.6 or remaining.mean() < 0.25:
            break
        valid = remaining
    if chosen is None:
        return np.ones_like(image, dtype=bool)
    mask = cv2.dilate(chosen.astype(np.uint8), _KERNEL, iterations=2)
    # Fill holes (dark gaps between bones inside the hand silhouette).
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(mask)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    if filled.shape != image.shape:
        filled = cv2.resize(filled, (width, height), interpolation=cv2.INTER_NEAREST)
    return filled.astype(bool)


def crop_to_hand(image: np.ndarray, margin: float = 0.03) -> np.ndarray:
    """Blank everything outside the hand and crop to its bounding box (plus a margin)."""
    return _crop_to_hand(image, image, margin)[0]


def crop_box(image: np.ndarray, margin: float = 0.03):
    """The hand's mask and bounding box ``(top, bottom, left, right)`` plus a margin;
    None when nothing hand-like is found (the film is then left whole)."""
    mask = hand_mask(image)
    if mask.sum() < 0.02 * mask.size:  # nothing hand-like found: leave the film alone
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    pad_r, pad_c = round(margin * image.shape[0]), round(margin * image.shape[1])
    top, bottom = max(0, rows[0] - pad_r), min(image.shape[0], rows[-1] + 1 + pad_r)
    left, right = max(0, cols[0] - pad_c), min(image.shape[1], cols[-1] + 1 + pad_c)
    return mask, (int(top), int(bottom), int(left), int(right))


def _crop_to_hand(image: np.ndarray, samples, margin: float = 0.03):
    """:func:`crop_to_hand` of ``image`` and of its ``samples`` (see :func:`reduce_for`: the same
    shape, float or the stored integers), with the background level taken from ``samples``.
    Integer samples come back as the :class:`Levels` of the cropped, blanked film."""
    found = crop_box(image, margin)
    if found is None:
        return image, samples
    mask, (top, bottom, left, right) = found
    outside = ~mask
    background = float(_percentiles(samples[outside], [5])[0]) if outside.any() else 0.0
    box = (slice(top, bottom), slice(left, right))
    inside = mask[box]
    out = np.where(inside, image[box], background).astype(np.float32)
    if samples is image:
        return out, out
    if samples.dtype in _INTEGER_SCALE:
        kept = samples[box][inside]
        return out, Levels.of(kept, fill=background, fill_count=inside.size - kept.size)
    return out, np.where(inside, samples[box], background).astype(np.float32)


def normalise_contrast(image: np.ndarray, settings: ImagingSettings,
                       samples: np.ndarray | None = None) -> np.ndarray:
    """Stretch contrast so dark, low-contrast films look like the rest; returns [0, 1].

    The percentiles come from ``samples`` when given (the unaveraged pixels of a reduced film,
    as floats, stored integers or their :class:`Levels`).
    """
    if settings.contrast == "none":
        return np.clip(image, 0.0, 1.0)
    low, high = _percentiles(image if samples is None else samples, settings.percentiles)
    if high <= low:
        high = low + 1e-6
    stretched = np.clip((image - low) / (high - low), 0.0, 1.0).astype(np.float32)
    if settings.contrast == "percentile":
        return stretched
    clahe = cv2.createCLAHE(clipLimit=settings.clahe_clip,
                            tileGridSize=(settings.clahe_tiles, settings.clahe_tiles))
    # On 8 bits: OpenCV scales the clip limit by tile pixels / histogram bins, so on
    # 16-bit input (65,536 bins) any clip limit has the same (no) effect.
    as8 = np.round(stretched * 255.0).astype(np.uint8)
    return clahe.apply(as8).astype(np.float32) / 255.0


def resize(image: np.ndarray, settings: ImagingSettings) -> np.ndarray:
    """Resize to ``size x size``: squash, or keep the aspect ratio and pad with black."""
    size = settings.size
    height, width = image.shape
    if settings.resize == "squash":
        interp = cv2.INTER_AREA if (height > size or width > size) else cv2.INTER_LINEAR
        return cv2.resize(image, (size, size), interpolation=interp)
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    scaled = cv2.resize(image, (new_w, new_h), interpolation=interp)
    out = np.zeros((size, size), dtype=image.dtype)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top:top + new_h, left:left + new_w] = scaled
    return out


def prepare_array(image: np.ndarray, settings: ImagingSettings, name: str = "image") -> np.ndarray:
    """Grey float [0, 1] film -> uint8 ``size x size`` model input."""
    return _prepare_reduced(*reduce_for(image, settings.size), settings)


def _prepare_reduced(image: np.ndarray, samples: np.ndarray,
                     settings: ImagingSettings) -> np.ndarray:
    """``image``: the (reduced) film as float in [0, 1]; ``samples``: its unaveraged pixels,
    as floats or as the stored integers (percentiles from a histogram, see :class:`Levels`)."""
    if settings.crop == "hand":
        image, samples = _crop_to_hand(image, samples)
    image = normalise_contrast(image, settings, samples)
    image = resize(image, settings)
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def prepare(data: bytes, settings: ImagingSettings, name: str = "image") -> np.ndarray:
    """Encoded film bytes -> uint8 ``size x size`` model input (the single imaging path).

    The film is reduced in its stored dtype (uint8/uint16), before the float conversion,
    which would otherwise cost most of a decode again on a full-resolution film.
    """
    from boneage import dicom

    if data and dicom.is_dicom(data):
        return prepare_array(decode(data, name), settings, name)
    return prepare_raw(decode_raw(data, name), settings, name)


def prepare_raw(raw: np.ndarray, settings: ImagingSettings, name: str = "image") -> np.ndarray:
    """:func:`prepare` of a film :func:`decode_raw` already decoded (not DICOM), for a caller
    that also looks at the decoded film (the preprocess stage's film check)."""
    reduced, samples = reduce_for(raw, settings.size)
    image = to_grey_float(reduced, name)
    if samples.dtype in _INTEGER_SCALE:
        samples = grey_plane(samples, name)  # percentiles from the stored levels
    elif samples is reduced:
        samples = image
    else:
        samples = to_grey_float(samples, name)
    return _prepare_reduced(image, samples, settings)
