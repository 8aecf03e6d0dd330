"""The one imaging path: a decoded film -> model input (crop, normalise, resize).

The preprocess stage, ``boneage predict``, the web app and Grad-CAM all call :func:`prepare`
on a :class:`~boneage.imaging.decoding.Film` (from :func:`boneage.imaging.decoding.read_film`) with the
:class:`ImagingSettings` that the export records in the model card, so a film is turned into
model input exactly the same way in training and in use, bit for bit (tests/test_imaging_path.py).
Training/serving skew (a different crop, contrast or aspect at inference) is the classic
failure of this field; keeping one function makes it impossible.

Decoding (formats, header size checks, DICOM) lives in :mod:`boneage.imaging.decoding`; this module
only transforms pixels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import cv2
import numpy as np

from boneage.kernel.config import PreprocessParams
from boneage.imaging.decoding import Film, grey_plane, to_grey_float


_DEFAULTS = PreprocessParams()  # params.yaml's preprocess values (tests/test_config.py)


@dataclass(frozen=True)
class ImagingSettings:
    """How a film becomes model input; saved in the model card and read back by predict.
    The defaults are the ``preprocess`` section's."""

    size: int = _DEFAULTS.size  # px, the side of the square input
    resize: str = _DEFAULTS.resize  # "squash" to a square, or "pad" keeping the aspect ratio
    contrast: str = _DEFAULTS.contrast  # "none" | "percentile" | "clahe"
    percentiles: tuple[float, float] = _DEFAULTS.percentiles
    clahe_clip: float = _DEFAULTS.clahe_clip
    clahe_tiles: int = _DEFAULTS.clahe_tiles
    crop: str = _DEFAULTS.crop  # "none" | "hand": crop to the hand, blank markers and borders

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
        """Build from :class:`boneage.kernel.config.PreprocessParams` (or any object with the fields)."""
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


def reduction_factor(height: int, width: int, size: int) -> int:
    """The whole factor :func:`reduce_for` shrinks a ``height x width`` film by (1 = not)."""
    factor = min(height, width) // (2 * size)
    return factor if factor >= 2 else 1


def reduce_for(image: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Shrink a film by a whole factor while its shorter side stays >= 2 x ``size``.

    Returns ``(reduced, samples)``: the box average of each ``factor x factor`` block, and
    the block's top-left pixel as it was. Decoding is the one cost a full-resolution film
    cannot avoid; the box average is cheap in any dtype, and then the hand mask, blanking
    and resize work on a few per cent of the pixels instead of costing several times the
    decode (figures in bench/README.md). Averaging pulls the brightest and darkest pixels in,
    so the percentile statistics (background level, contrast stretch) are taken from
    ``samples``, which keep the film's own pixel distribution. The output is at most
    ``size`` px a side, so twice that detail is plenty. Films already that small come
    back as they are (``samples`` is then the film itself).
    """
    height, width = image.shape[:2]
    factor = reduction_factor(height, width, size)
    if factor == 1:
        return image, image
    height, width = height // factor, width // factor
    # Exact whole factors (edges trimmed by < factor px) take OpenCV's fast box-average
    # path; halving repeatedly (SIMD 2x2 means) is faster than one 8x8 box and differs from
    # it by rounding only (at most 1 grey level).
    reduced, remaining = image[:height * factor, :width * factor], factor
    while remaining % 2 == 0:
        remaining //= 2
        reduced = cv2.resize(reduced, (width * remaining, height * remaining),
                             interpolation=cv2.INTER_AREA)
    if remaining > 1:
        reduced = cv2.resize(reduced, (width, height), interpolation=cv2.INTER_AREA)
    return reduced, np.ascontiguousarray(image[:height * factor:factor, :width * factor:factor])


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
    Integer samples come back as the :class:`Levels` of the cropped, blanked film. Returns
    ``(image, samples, box)``, ``box`` the crop's (top, bottom, left, right) or None."""
    found = crop_box(image, margin)
    if found is None:
        return image, samples, None
    mask, (top, bottom, left, right) = found
    outside = ~mask
    background = float(_percentiles(samples[outside], [5])[0]) if outside.any() else 0.0
    box = (slice(top, bottom), slice(left, right))
    inside = mask[box]
    out = np.where(inside, image[box], background).astype(np.float32)
    edges = (top, bottom, left, right)
    if samples is image:
        return out, out, edges
    if samples.dtype in _INTEGER_SCALE:
        kept = samples[box][inside]
        return out, Levels.of(kept, fill=background, fill_count=inside.size - kept.size), edges
    return out, np.where(inside, samples[box], background).astype(np.float32), edges


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


def _transform(image: np.ndarray, samples, settings: ImagingSettings):
    """Crop, stretch and resize a (reduced) film: ``image`` float in [0, 1], ``samples`` its
    unaveraged pixels as floats or stored integers (:func:`reduce_for`). Returns the uint8
    model input and the crop box in ``image``'s px (None when not cropped)."""
    box = None
    if settings.crop == "hand":
        image, samples, box = _crop_to_hand(image, samples)
    image = normalise_contrast(image, settings, samples)
    image = resize(image, settings)
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8), box


@dataclass(frozen=True)
class Geometry:
    """Where a model input came from in its decoded film, to map a heatmap back onto it:
    the film's ``height`` x ``width`` (px) and the crop ``box`` (top, bottom, left, right)
    in those px (the whole film when nothing was cropped)."""

    height: int
    width: int
    box: tuple[int, int, int, int]


def prepare(film: Film, settings: ImagingSettings) -> np.ndarray:
    """A decoded film -> uint8 ``(size, size)`` model input: the one imaging path.

    The preprocess stage, ``boneage predict``, the web app and the evaluate stage's check
    all call this, so the same file gives the same input bit for bit. Raises nothing for a
    film :func:`~boneage.imaging.decoding.read_film` accepted.
    """
    return prepare_with_geometry(film, settings)[0]


def prepare_with_geometry(film: Film, settings: ImagingSettings) -> tuple[np.ndarray, Geometry]:
    """:func:`prepare`, and where the input came from in the film (:class:`Geometry`, for
    Grad-CAM to map its heatmap back with the very crop that was taken).

    The film is first reduced by a whole factor in its stored dtype (a full-resolution film
    is ~30x the pixels the output needs); the hand crop and contrast stretch then work on the
    reduced film, with the percentiles taken from the unaveraged stored levels
    (:func:`reduce_for`, :class:`Levels`).
    """
    pixels = film.pixels
    height, width = pixels.shape[:2]
    reduced, samples = reduce_for(pixels, settings.size)
    if pixels.dtype in _INTEGER_SCALE:  # stored levels: percentiles from their histogram
        image, samples = to_grey_float(reduced), grey_plane(samples)
    else:  # float grey in [0, 1] (DICOM): samples are the unaveraged floats (or the film)
        image = reduced
    prepared, box = _transform(image, samples, settings)
    if box is None:
        edges = (0, height, 0, width)
    else:
        factor = reduction_factor(height, width, settings.size)
        edges = tuple(min(edge * factor, limit)
                      for edge, limit in zip(box, (height, height, width, width)))
    return prepared, Geometry(height, width, edges)
