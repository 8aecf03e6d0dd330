"""Decoding: film bytes -> the pixels as stored, with sizes checked before anything is decoded.

Readers apart from transforms (:mod:`boneage.imaging.transforms` turns a decoded :class:`Film` into
model input). Films come from anyone (``boneage serve`` takes uploads), so no format is
decoded unless its header has been read and its width and height checked first
(:data:`FORMATS`; anything else, GIF or JPEG 2000 say, is refused rather than handed to
OpenCV unchecked). Films are read upright: the EXIF orientation of a JPEG or PNG is applied.
Grey 8/16-bit PNGs (how radiographs are stored) take imagecodecs' faster decoder; DICOM is
read by :mod:`boneage.imaging.dicom`.

Memory is bounded by the model, not by the film: a film over
:data:`~boneage.imaging.headers.READ_PIXELS` (25 M px; legal up to 100 M px) is reduced by a
whole factor as it is read (:func:`boneage.imaging.headers.read_factor`): a JPEG by libjpeg itself
(OpenCV's ``IMREAD_REDUCED_*``: the full-size image never exists), a striped TIFF a strip at a
time, other formats box-averaged in their stored dtype right after decoding (the full-size
array is dropped), a DICOM in its integer values before any float conversion. Every
radiograph up to 25 M px (5,000 x 5,000: past the largest plates in use) is read exactly as
before, so the preprocess stage's stored films do not change; the store and ``boneage
predict`` both read through here, so they still see the same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import cv2
import numpy as np

from boneage.imaging.headers import (  # noqa: F401  (READ_PIXELS: importable from here)
    FORMATS,
    MAX_PIXELS,
    MAX_SIDE,
    HEADER_READERS,
    READ_PIXELS,
    check_size,
    read_factor,
    reduce_by,
    sniff,
)
from boneage.kernel.errors import ImageError


@dataclass
class Film:
    """A decoded film and what its file said about the patient.

    ``pixels``: as stored, upright: uint8/uint16 (H, W) or (H, W, 3|4) for PNG, JPEG and the
    other image formats; float32 (H, W) grey in [0, 1], bone bright, for DICOM (after its
    rescale, VOI window and MONOCHROME1 inversion) and float TIFFs (their range stretched).
    :func:`boneage.imaging.transforms.prepare` takes the stored levels as they are (percentiles from
    their histogram), so the preprocess stage and ``boneage predict`` make the same model
    input from the same file.
    ``meta``: DICOM tags (sex, age) or just ``{"format": ...}``; ``reduced_by`` (2, 4 or 8) when
    the film was larger than :data:`READ_PIXELS` and was reduced as it was read.
    """

    pixels: np.ndarray
    meta: dict = field(default_factory=dict)

    @cached_property
    def image(self) -> np.ndarray:
        """The film as float32 grey in [0, 1] (H, W): what the film check and the heatmap
        overlay look at."""
        return self.pixels if self.pixels.dtype == np.float32 else to_grey_float(self.pixels)


def read_film(data: bytes, name: str = "image", force: bool = False) -> Film:
    """Decode a film (any of :data:`FORMATS`, 8- or 16-bit, grey or colour) to a :class:`Film`.

    Sizes are checked from the header before the pixels are decoded, so a decompression
    bomb costs nothing. A DICOM whose header says it is not a hand radiograph (Modality,
    BodyPartExamined: :mod:`boneage.imaging.dicom_header`) is refused before its pixels are
    decoded unless ``force``. Raises :class:`~boneage.kernel.errors.ImageError` naming ``name``.
    """
    from boneage.imaging import dicom

    if data and dicom.is_dicom(data):
        image, meta = dicom.read_dicom(data, name, MAX_PIXELS, MAX_SIDE, force=force)
        return Film(image, meta)
    pixels, factor = _decode_reduced(data, name)
    if pixels.dtype in (np.uint8, np.uint16):  # kept as stored; shape and size checked now
        grey_plane(pixels, name)
        if min(pixels.shape[:2]) < 8:
            raise ImageError(f"{name}: image is only {pixels.shape[1]}x{pixels.shape[0]} px")
    else:  # a float or 32-bit TIFF: its own range stretched to [0, 1] once, here (in place:
        pixels = to_grey_float(pixels, name, in_place=True)  # the decoded array is ours)
    meta = {"format": sniff(data) or "other"}
    if factor > 1:
        meta["reduced_by"] = factor
    return Film(pixels, meta)


def decode(data: bytes, name: str = "image") -> np.ndarray:
    """Decode a film (any of :data:`FORMATS`) to float32 grey in [0, 1]."""
    return read_film(data, name).image


def decode_raw(data: bytes, name: str = "image") -> np.ndarray:
    """Decode image bytes (not DICOM) to the array as stored (uint8/uint16, 1-3 channels),
    upright (EXIF orientation applied) and checked; a film over :data:`READ_PIXELS` comes back
    reduced (:func:`read_factor`).

    Only formats whose header this module reads are decoded: the size check must hold for
    every format the decoder accepts, or a 20,000 px film in a format we cannot read the
    header of would be decoded in full.
    """
    return _decode_reduced(data, name)[0]


def _decode_reduced(data: bytes, name: str) -> tuple[np.ndarray, int]:
    """:func:`decode_raw` and the factor the film was reduced by as it was read."""
    if not data:
        raise ImageError(f"{name}: empty file")
    kind = sniff(data)
    if kind not in HEADER_READERS:
        raise ImageError(f"{name}: not a readable {FORMATS} image "
                         f"(unrecognised content {data[:8]!r})")
    size = HEADER_READERS[kind](data)
    if size is None:
        raise ImageError(f"{name}: not a readable {kind.upper()} image (corrupt or truncated?): "
                         "its header gives no width and height")
    width, height = size
    check_size(width, height, name)
    factor = read_factor(width, height)
    left = factor  # the reduction still to do once decoded
    image = _decode_grey_png(data, name) if _is_plain_grey_png(data) else None
    if image is None and kind == "tiff" and factor > 1:
        image = _tiff_reduced(data, factor, (height, width))
        if image is not None:
            left = 1
    if image is None:
        buffer = np.frombuffer(data, dtype=np.uint8)
        # Not IMREAD_UNCHANGED (-1, every flag bit): it skips the EXIF orientation, and a
        # film stored sideways must be read upright. ANYDEPTH keeps 16 bits, ANYCOLOR the
        # channels (alpha is dropped: films are grey). A large JPEG is decoded reduced by
        # libjpeg (DCT scaling): its full-size pixels never exist.
        flags = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR
        if kind == "jpeg" and factor > 1:
            flags, left = flags | _REDUCED_FLAGS[factor], 1
        try:
            image = cv2.imdecode(buffer, flags)
        except cv2.error as exc:  # OpenCV's own size limit (boneage/__init__.py), bad data
            raise ImageError(f"{name}: not a readable {kind.upper()} image ({exc})") from exc
    if image is None or image.size == 0:
        raise ImageError(f"{name}: not a readable {kind.upper()} image "
                         "(corrupt or truncated?)")
    check_size(image.shape[1], image.shape[0], name)  # belt and braces: what was decoded
    if left > 1:  # the full-size array is dropped as soon as it is reduced
        image = reduce_by(image, left)
    return image, factor


def _tiff_reduced(data: bytes, factor: int, size: tuple[int, int]) -> np.ndarray | None:
    """A large striped TIFF decoded a strip at a time (tifffile, with imagecodecs' codecs) and
    box-averaged by ``factor`` as it goes, so the full-size array never exists (OpenCV's TIFF
    decoder holds twice a float32 film: 800 MB at 100 M px). Its Orientation tag is applied,
    as OpenCV does. None (OpenCV decodes instead, or words the error) for a tiled, planar,
    multi-sample-per-strip layout or anything tifffile cannot read."""
    import io

    try:
        import tifffile
    except ImportError:  # pragma: no cover - a declared dependency
        return None
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tiff:
            page = tiff.pages[0]
            shape = page.shape
            if page.is_tiled or tuple(shape[:2]) != size or len(shape) not in (2, 3) \
                    or (len(shape) == 3 and page.planarconfig != 1) or page.imagedepth != 1:
                return None
            height, width = size
            out, pending, row = None, [], 0
            for segment, _, _ in page.segments():
                if segment is None:
                    return None
                rows = segment.reshape((-1, width) + tuple(shape[2:]))
                pending.append(rows)
                whole = (sum(len(p) for p in pending) // factor) * factor
                if whole:
                    block = np.concatenate(pending) if len(pending) > 1 else pending[0]
                    reduced = reduce_by(np.ascontiguousarray(block[:whole]), factor)
                    if out is None:
                        out = np.empty((height // factor, width // factor)
                                       + reduced.shape[2:], reduced.dtype)
                    take = min(len(reduced), len(out) - row)
                    out[row:row + take] = reduced[:take]
                    row += take
                    pending = [block[whole:]] if whole < len(block) else []
            orientation = int(getattr(page, "orientation", 1) or 1)
    except Exception:  # noqa: BLE001 - OpenCV reads it instead, or words the error
        return None
    if out is None or row != len(out):
        return None
    return _orient(out, orientation)


def _orient(image: np.ndarray, orientation: int) -> np.ndarray:
    """Apply a TIFF/EXIF Orientation (1-8) so the film is upright."""
    if orientation in (5, 6, 7, 8):
        image = np.swapaxes(image, 0, 1)  # transpose, then the flips below
    flips = {2: (False, True), 3: (True, True), 4: (True, False), 5: (False, False),
             6: (False, True), 7: (True, True), 8: (True, False)}.get(orientation)
    if flips is not None:
        if flips[0]:
            image = image[::-1]
        if flips[1]:
            image = image[:, ::-1]
    return np.ascontiguousarray(image)


_REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
                  8: cv2.IMREAD_REDUCED_GRAYSCALE_8}  # with ANYCOLOR: colour stays colour


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
    ``cv2.imdecode`` (a test checks) and faster (bench/README.md); decoding is most of what
    preprocessing a full-resolution film costs. None (OpenCV decodes
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


def to_grey_float(image: np.ndarray, name: str = "image", *,
                  in_place: bool = False) -> np.ndarray:
    """Convert a decoded array (uint8/uint16/float, 1-4 channels) to float32 grey in [0, 1];
    ``in_place``: a float32 grey array may be stretched in place (no second copy)."""
    image = grey_plane(image, name)
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise ImageError(f"{name}: image is only {image.shape[1]}x{image.shape[0]} px")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535.0
    # A copy (unless the caller's float32 array may be changed), stretched in place below.
    image = image.astype(np.float32, copy=not (in_place and image.flags.writeable))
    if not np.isfinite(image).all():
        raise ImageError(f"{name}: image holds NaN or infinite values")
    low, high = float(image.min()), float(image.max())
    if not high > low:
        return np.zeros_like(image)
    image -= np.float32(low)
    image /= np.float32(high - low)
    return image
