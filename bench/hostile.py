"""Hostile and wrong inputs (issue 14) replayed against `boneage serve` and `boneage predict`.

    python bench/hostile.py [--model models/boneage] [--format auto] [--quick] [--only NAME ...]
                            [--out bench/results/hostile.json]

Every case file is built in a temporary folder at run time. Film cases are POSTed to
/api/predict of a `boneage serve --max-upload-mb 20` started here (the 300 MB chunked upload
goes to a second one with --max-upload-mb 1); CLI cases run `boneage predict` as a child
process. After each case the server's peak RSS is recorded (VmHWM from /proc, and RSS sampled
during the case with psutil or /proc); a server that dies is noted and restarted, so every
case is judged on its own.

The target the issue sets: every case answered 4xx with a reason (or a correct reading), no
5xx, the server alive after all of them, peak RSS under 1.5 GB. Each case records pass/fail
against it; nothing here assumes the fixes exist, it records what happens. "A correct
reading" is only judged where there is one: an inverted film and a sideways film with an
EXIF rotation must read within SAME_FILM_MONTHS of the same film sent upright.

--quick skips the GiB-sized cases: the deflated DICOM inflating to 1 GiB, the 300 MB upload,
and the headers claiming gigapixel images (whose decoding would allocate GBs).
Writes bench/results/hostile.json; exits 1 if any case misses the target.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import select
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

MB = 1 << 20
RSS_LIMIT_MB = 1536.0  # 1.5 GB
SAME_FILM_MONTHS = 6.0  # an inverted or EXIF-rotated film must read this close to upright
HTTP_TIMEOUT_S = 180.0
CLI_TIMEOUT_S = 300.0
UPLOAD_MB = 300  # the chunked upload, against --max-upload-mb 1
DEFLATED_SIDE = 32768  # 32768 x 32768 8-bit pixels: 1 GiB once inflated
HUGE_SIDE = 60000  # TIFF/BMP/PGM headers: 3.6 gigapixels
TARGET = ("every case answered 4xx with a reason (or a correct reading), no 5xx, the server "
          "alive after all of them, peak RSS under 1.5 GB")

# ----------------------------------------------------------------------------- DICOM

EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
_LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}


def _pad(value: bytes, vr: str) -> bytes:
    if len(value) % 2:
        value += b"\0" if vr in ("UI", "OB") else b" "
    return value


def dicom_element(group: int, element: int, vr: str, value: bytes | str | int,
                  length: int | None = None) -> bytes:
    """One explicit-VR little-endian element; ``length`` overrides the value's (for a
    pixel data header whose bytes are streamed after it)."""
    if isinstance(value, int):
        value = struct.pack("<H" if vr == "US" else "<I", value)
    elif isinstance(value, str):
        value = value.encode("ascii")
    value = _pad(value, vr) if length is None else value
    size = len(value) if length is None else length
    head = struct.pack("<HH", group, element) + vr.encode("ascii")
    if vr in _LONG_VRS:
        head += b"\0\0" + struct.pack("<I", size)
    else:
        head += struct.pack("<H", size)
    return head + value


def _file_meta(transfer_syntax: str, instance: str) -> bytes:
    body = b"".join([
        dicom_element(0x0002, 0x0001, "OB", b"\0\1"),
        dicom_element(0x0002, 0x0002, "UI", CR_STORAGE),
        dicom_element(0x0002, 0x0003, "UI", instance),
        dicom_element(0x0002, 0x0010, "UI", transfer_syntax),
        dicom_element(0x0002, 0x0012, "UI", "1.2.826.0.1.3680043.10.1451.1"),
    ])
    return (b"\0" * 128 + b"DICM" + dicom_element(0x0002, 0x0000, "UL", len(body)) + body)


def _dataset_head(rows: int, columns: int, sex: str, slope: str, instance: str) -> bytes:
    """Everything of an 8-bit MONOCHROME2 CR dataset up to (not including) the pixel data."""
    return b"".join([
        dicom_element(0x0008, 0x0016, "UI", CR_STORAGE),
        dicom_element(0x0008, 0x0018, "UI", instance),
        dicom_element(0x0008, 0x0060, "CS", "CR"),
        dicom_element(0x0010, 0x0010, "PN", "HOSTILE^CASE"),
        dicom_element(0x0010, 0x0040, "CS", sex),
        dicom_element(0x0028, 0x0002, "US", 1),
        dicom_element(0x0028, 0x0004, "CS", "MONOCHROME2"),
        dicom_element(0x0028, 0x0010, "US", rows),
        dicom_element(0x0028, 0x0011, "US", columns),
        dicom_element(0x0028, 0x0100, "US", 8),
        dicom_element(0x0028, 0x0101, "US", 8),
        dicom_element(0x0028, 0x0102, "US", 7),
        dicom_element(0x0028, 0x0103, "US", 0),
        dicom_element(0x0028, 0x1052, "DS", "0"),
        dicom_element(0x0028, 0x1053, "DS", slope),
    ])


def _uid() -> str:
    return "2.25." + str(uuid.uuid4().int)


def dicom_film(path: Path, grey: np.ndarray, *, sex: str = "M", slope: str = "1") -> Path:
    """An uncompressed 8-bit DICOM of ``grey``, with PatientSex and RescaleSlope as given
    (written by hand, so invalid values go in as they are)."""
    grey = np.ascontiguousarray(grey, dtype=np.uint8)
    instance = _uid()
    pixels = grey.tobytes()
    path.write_bytes(_file_meta(EXPLICIT_LE, instance)
                     + _dataset_head(grey.shape[0], grey.shape[1], sex, slope, instance)
                     + dicom_element(0x7FE0, 0x0010, "OB", _pad(pixels, "OB")))
    return path


def deflated_dicom(path: Path, side: int = DEFLATED_SIDE) -> Path:
    """A Deflated Explicit VR Little Endian DICOM whose dataset inflates to ``side``**2 bytes
    of zero pixels (1 GiB by default) from about a thousandth of that on disk; streamed, so
    building it needs no memory."""
    instance = _uid()
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate, as the standard says
    with open(path, "wb") as out:
        out.write(_file_meta(DEFLATED_LE, instance))
        size = side * side + side * side % 2
        out.write(squeeze.compress(_dataset_head(side, side, "M", "1", instance)
                                   + dicom_element(0x7FE0, 0x0010, "OB", b"", length=size)))
        zeros = bytes(min(size, 16 * MB))
        left = size
        while left:
            out.write(squeeze.compress(zeros[:min(left, len(zeros))]))
            left -= min(left, len(zeros))
        out.write(squeeze.flush())
    return path


# ----------------------------------------------------------------------------- images


def encode(image: np.ndarray, ext: str, params: list[int] | None = None) -> bytes:
    import cv2

    ok, buf = cv2.imencode(ext, image, params or [])
    if not ok:
        raise RuntimeError(f"cv2 cannot encode {ext}")
    return buf.tobytes()


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, offset, length incl. the 2 length bytes) of each header segment up to SOS."""
    out, at = [], 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        length = struct.unpack(">H", data[at + 2:at + 4])[0]
        out.append((marker, at, length))
        if marker == 0xDA:
            break
        at += 2 + length
    return out


def jpeg_claiming(width: int, height: int, stray: bytes = b"\x00") -> bytes:
    """A small real JPEG whose SOF says ``width`` x ``height``, with ``stray`` inserted after
    its first segment (a strict marker walker stops there; libjpeg skips it with a warning)."""
    data = bytearray(encode(np.full((64, 64), 128, np.uint8), ".jpg"))
    segments = jpeg_segments(bytes(data))
    for marker, at, _ in segments:
        if marker in (0xC0, 0xC1, 0xC2):
            data[at + 5:at + 9] = struct.pack(">HH", height, width)
            break
    else:
        raise RuntimeError("no SOF segment in the JPEG cv2 wrote")
    _, first, length = segments[0]
    end = first + 2 + length
    return bytes(data[:end]) + stray + bytes(data[end:])


def sof_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of the first SOF0-2 marker found by scanning (stray bytes and all)."""
    for marker in (b"\xff\xc0", b"\xff\xc1", b"\xff\xc2"):
        at = data.find(marker)
        if at >= 0:
            height, width = struct.unpack(">HH", data[at + 5:at + 9])
            return width, height
    return None


def tiff_claiming(width: int, height: int) -> bytes:
    """A little-endian 8-bit grey TIFF header of ``width`` x ``height`` with 64 bytes of data."""
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1),
               (273, 4, 0), (277, 3, 1), (278, 4, height), (279, 4, width * height)]
    ifd_at = 8
    data_at = ifd_at + 2 + 12 * len(entries) + 4
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        value = data_at if tag == 273 else value
        packed = struct.pack("<HI", value, 0)[:4] if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, 1) + packed
    ifd += struct.pack("<I", 0)
    return b"II*\0" + struct.pack("<I", ifd_at) + ifd + bytes(64)


def bmp_claiming(width: int, height: int) -> bytes:
    """An 8-bit grey-palette BMP header of ``width`` x ``height`` with 64 bytes of data."""
    palette = b"".join(bytes((i, i, i, 0)) for i in range(256))
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 0, 0, 2835, 2835, 256, 0)
    pixels = bytes(64)
    head = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    return head + info + palette + pixels


def webp_claiming(width: int = 16383, height: int = 16383) -> bytes:
    """A small lossy WebP whose VP8 frame header says ``width`` x ``height`` (14 bits each)."""
    data = bytearray(encode(np.full((64, 64, 3), 128, np.uint8), ".webp", [64, 80]))
    at = data.find(b"\x9d\x01\x2a")  # the VP8 key frame start code, then width and height
    if data[:4] != b"RIFF" or data[12:16] != b"VP8 " or at < 0:
        raise RuntimeError("cv2 did not write a lossy VP8 WebP")
    data[at + 3:at + 7] = struct.pack("<HH", width & 0x3FFF, height & 0x3FFF)
    return bytes(data)


def pgm_claiming(width: int, height: int) -> bytes:
    return f"P5\n{width} {height}\n255\n".encode("ascii") + bytes(64)


def exif_sideways_jpeg(upright: np.ndarray) -> bytes:
    """``upright`` stored turned 90 degrees anticlockwise, with EXIF Orientation 6 ("turn 90
    degrees clockwise to view"): a viewer that honours EXIF shows it upright."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.rot90(upright))).save(buf, "JPEG", quality=95,
                                                                   exif=exif.tobytes())
    return buf.getvalue()


def reference_film() -> tuple[np.ndarray, str, bool]:
    """(grey film, where it came from, real?): an RSNA full-resolution sample film when the
    shared folder is there, else a synthetic phantom film."""
    import cv2

    from serving import SAMPLE

    paths = sorted(SAMPLE.glob("*.png")) if SAMPLE.is_dir() else []
    if paths:
        grey = cv2.imdecode(np.frombuffer(paths[0].read_bytes(), np.uint8), cv2.IMREAD_GRAYSCALE)
        return grey, f"{paths[0].name} ({SAMPLE.parent.name})", True
    from boneage.phantom import render_film

    film = render_film(120.0, True, np.random.default_rng(0), height=1024)
    return film, "synthetic phantom film (120 months)", False


def shrink(grey: np.ndarray, height: int) -> np.ndarray:
    import cv2

    if grey.shape[0] <= height:
        return grey
    width = round(grey.shape[1] * height / grey.shape[0])
    return cv2.resize(grey, (width, height), interpolation=cv2.INTER_AREA)


# ----------------------------------------------------------------------------- cases


@dataclass
class Case:
    name: str
    kind: str  # "serve", "upload" (chunked, small-limit server) or "cli"
    expect: str  # "read", "refuse", "refuse-or-read", "same-as-reference"
    build: Callable[[Path], object]  # -> file Path (serve) or argv list (cli)
    big: bool = False  # GiB-sized: skipped by --quick
    sex: str | None = "M"


def film_cases(tmp: Path) -> tuple[list[Case], list[dict], str]:
    """Every case, the ones skipped for want of data (with why), and where the reference
    film came from."""
    import importlib.util

    import cv2

    grey, origin, real = reference_film()
    upright_png = tmp / "upright.png"
    upright_png.write_bytes(encode(grey, ".png"))
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

    explain_file = tmp / "existing-file.txt"
    explain_file.write_text("not a folder\n")
    empty_dir = tmp / "empty-folder"
    empty_dir.mkdir(exist_ok=True)
    film = str(upright_png)
    cases += [
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
    return cases, skipped, origin


# ----------------------------------------------------------------------------- measuring


def _proc_status_mb(pid: int, field: str) -> float | None:
    """A ``kB`` field of /proc/<pid>/status in MB, None where /proc has none."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else None


def vm_hwm_mb(pid: int) -> float | None:
    """The process's peak RSS so far (VmHWM)."""
    return _proc_status_mb(pid, "VmHWM")


def rss_mb(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / MB
    except ImportError:
        pass
    except Exception:  # noqa: BLE001 - gone
        return None
    return _proc_status_mb(pid, "VmRSS")


class RssSampler:
    """Samples a process's RSS every 20 ms in a thread; ``peak`` is the highest seen."""

    def __init__(self, pid: int):
        self.pid, self.peak = pid, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            value = rss_mb(self.pid)
            if value is not None:
                self.peak = max(self.peak, value)
            self._stop.wait(0.02)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:300]
    return ""


def cli_reason(stderr: str) -> str:
    """The CLI's reason: its 'error: ...' line, else the last line (a traceback's exception)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("error:"):
            return line[:300]
    return lines[-1][:300] if lines else ""


def answer_line(response) -> str:
    """The first line of what the server said: its reason, or its reading."""
    try:
        body = response.json()
    except ValueError:
        return first_line(response.text)
    if isinstance(body, dict):
        detail = body.get("detail")
        if isinstance(detail, list) and detail:
            detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d)
                               for d in detail)
        if detail:
            return first_line(str(detail))
        if "report" in body:
            return first_line(str(body["report"]))
        if "boneage_months" in body:
            return f"boneage_months {body['boneage_months']}"
    return first_line(json.dumps(body))


# ----------------------------------------------------------------------------- running


class Server:
    """A `boneage serve` child that is restarted if a case kills it."""

    def __init__(self, model: Path, model_format: str, max_upload_mb: float, log: Path):
        self.model, self.format, self.max_upload_mb, self.log = model, model_format, \
            max_upload_mb, log
        self.restarts = 0
        self.process, self.url = self._start()
        self.died_ever = False

    def _start(self):
        from serving import start_server

        return start_server(self.model, self.format, args=(
            "--max-upload-mb", f"{self.max_upload_mb:g}"), log=self.log)

    def alive(self) -> bool:
        import httpx

        if self.process.poll() is not None:
            return False
        try:
            return httpx.get(f"{self.url}/healthz", timeout=30).status_code == 200
        except httpx.HTTPError:
            return False

    def restart(self) -> None:
        self.died_ever = True
        self.stop()
        self.restarts += 1
        self.process, self.url = self._start()

    def log_tail(self, since: int, lines: int = 8) -> list[str]:
        try:
            with open(self.log, "rb") as f:
                f.seek(since)
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if line.strip()][-lines:]

    def log_size(self) -> int:
        try:
            return self.log.stat().st_size
        except OSError:
            return 0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def post_film(url: str, path: Path, sex: str | None) -> tuple[int | None, str, dict | None]:
    """(HTTP status or None, first line of the answer or the error, JSON body or None)."""
    import httpx

    data = {}  # the heatmap stays on, as the page asks for it
    if sex:
        data["sex"] = sex
    try:
        with open(path, "rb") as f:
            response = httpx.post(f"{url}/api/predict", files={"file": (path.name, f)},
                                  data=data, timeout=HTTP_TIMEOUT_S)
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}", None
    try:
        body = response.json()
    except ValueError:
        body = None
    return response.status_code, answer_line(response), body if isinstance(body, dict) else None


def chunked_upload(url: str, total: int, chunk: int = MB, timeout: float = HTTP_TIMEOUT_S,
                   name: str = "big.png") -> dict:
    """POST a multipart upload of ``total`` bytes with chunked transfer encoding (no length
    announced), stopping as soon as the server answers; returns status, first line, bytes
    sent and seconds."""
    parsed = re.match(r"http://([^:/]+):(\d+)", url)
    if parsed is None:
        raise ValueError(f"not an http://host:port URL: {url}")
    host, port = parsed.group(1), int(parsed.group(2))
    boundary = "hostile" + uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"sex\"\r\n\r\nM\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    started = time.monotonic()
    sent, stopped_early, error = 0, False, None
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.sendall((f"POST /api/predict HTTP/1.1\r\nHost: {host}:{port}\r\n"
                      f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                      "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode())

        def send_chunk(data: bytes) -> None:
            sock.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n")

        try:
            send_chunk(head)
            block = b"\x89PNG\r\n\x1a\n" + bytes(chunk - 8)  # looks like a PNG to a sniffer
            while sent < total:
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:  # the server answered (or closed) before the body ended
                    stopped_early = True
                    break
                piece = block[:min(chunk, total - sent)]
                send_chunk(piece)
                sent += len(piece)
                block = bytes(chunk)
            if not stopped_early:
                send_chunk(tail)
                sock.sendall(b"0\r\n\r\n")
        except OSError as exc:  # reset or broken pipe: the server gave up on the body
            stopped_early, error = True, f"{type(exc).__name__}: {exc}"
        raw = b""
        try:
            while len(raw) < 64 * 1024:
                data = sock.recv(65536)
                if not data:
                    break
                raw += data
        except OSError as exc:
            error = error or f"{type(exc).__name__}: {exc}"
    finally:
        sock.close()
    status, line = None, error or "no answer"
    match = re.match(rb"HTTP/1\.[01] (\d{3})", raw)
    if match:
        status = int(match.group(1))
        body = raw.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in raw else b""
        if b"transfer-encoding: chunked" in raw.split(b"\r\n\r\n", 1)[0].lower():
            body = body.split(b"\r\n", 1)[1] if b"\r\n" in body else body
        try:
            detail = json.loads(body.decode("utf-8", "replace").split("\r\n")[0])
            line = first_line(str(detail.get("detail", detail)))
        except (ValueError, AttributeError):
            line = first_line(body.decode("utf-8", "replace"))
    return {"status": status, "first_line": line, "sent_bytes": sent,
            "stopped_early": stopped_early, "seconds": round(time.monotonic() - started, 2)}


def run_cli(args: list[str], model: Path, model_format: str, log: Path) -> dict:
    """`boneage predict ARGS --model MODEL` in a child; exit code, output, peak RSS, time."""
    command = [sys.executable, "-m", "boneage.cli", "predict", *args, "--model", str(model),
               "--format", model_format]
    started = time.monotonic()
    with open(log.with_suffix(".out"), "w+b") as out, open(log.with_suffix(".err"), "w+b") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err,
                                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        peak_kb, timed_out = 0, False
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                process.returncode = os.waitstatus_to_exitcode(status)
                peak_kb = usage.ru_maxrss  # kB on Linux
                break
            if time.monotonic() - started > CLI_TIMEOUT_S:
                process.kill()
                timed_out = True
            time.sleep(0.05)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    return {"exit_code": process.returncode, "stdout": stdout, "stderr": stderr,
            "seconds": round(time.monotonic() - started, 2), "timed_out": timed_out,
            "peak_rss_mb": round(peak_kb / 1024, 1)}


def judge_http(case: Case, status: int | None, line: str, body: dict | None,
               reference: float | None) -> tuple[bool, str]:
    """(pass, why) of one server answer against the issue's target."""
    if status is None:
        return False, "no HTTP answer (server down, reset or timed out)"
    if status >= 500:
        return False, f"HTTP {status}: a server error"
    if 400 <= status < 500:
        if case.expect == "read":
            return False, f"HTTP {status}: the reference film was refused"
        if not line:
            return False, f"HTTP {status} without a reason"
        return True, f"refused with HTTP {status} and a reason"
    if status != 200:
        return False, f"unexpected HTTP {status}"
    months = body.get("boneage_months") if body else None
    if not isinstance(months, (int, float)):
        return False, "HTTP 200 without boneage_months"
    if case.expect in ("read", "refuse-or-read"):
        return True, f"read as {months:.1f} months"
    if case.expect == "same-as-reference":
        if reference is None:
            return False, f"read as {months:.1f} months; no reference reading to judge it by"
        diff = abs(months - reference)
        ok = diff <= SAME_FILM_MONTHS
        return ok, (f"read as {months:.1f} months, {diff:.1f} from the upright film "
                    f"({'within' if ok else 'beyond'} {SAME_FILM_MONTHS:g})")
    return False, f"read as {months:.1f} months; a refusal was expected"


def judge_cli(case: Case, result: dict) -> tuple[bool, str]:
    if result["timed_out"]:
        return False, f"no answer within {CLI_TIMEOUT_S:g} s"
    if "Traceback (most recent call last)" in result["stderr"]:
        return False, "a traceback instead of a reason"
    if result["peak_rss_mb"] > RSS_LIMIT_MB:
        return False, f"peak RSS {result['peak_rss_mb']:.0f} MB"
    code = result["exit_code"]
    if code != 0:
        if not cli_reason(result["stderr"]):
            return False, f"exit code {code} without a reason"
        if case.expect == "read":
            return False, f"exit code {code}: refused"
        return True, f"refused with exit code {code} and a reason"
    if case.expect in ("refuse-or-read", "read") and first_line(result["stdout"]):
        return True, "read"
    return False, "exit code 0: accepted" + ("" if first_line(result["stdout"]) else
                                             " and printed nothing")


def judge_cli_all(result: dict, ok: bool, why: str) -> tuple[bool, str, dict]:
    """One `predict --json` over every film: besides judge_cli, a row per film that is
    either a reading or an error with a reason (exit 1 just means every film failed)."""
    try:
        rows = json.loads(result["stdout"]) if result["stdout"].strip() else []
    except ValueError:
        return False, "the --json output does not parse", {}
    films = {Path(str(r.get("path", "?"))).name: (first_line(str(r["error"])) if "error" in r
                                                   else r.get("boneage_months"))
             for r in rows}
    if result["exit_code"] == 1 and rows and not result["timed_out"] and \
            "Traceback (most recent call last)" not in result["stderr"]:
        ok, why = True, "every film refused with a reason"
    if ok and any(v in ("", None) for v in films.values()):
        ok, why = False, "a film has neither a reading nor a reason"
    return ok, why, films


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/boneage"))
    parser.add_argument("--format", default="auto",
                        help="serve format (auto: serve's choice); the CLI uses keras for auto")
    parser.add_argument("--quick", action="store_true", help="skip the GiB-sized cases")
    parser.add_argument("--only", nargs="+", metavar="TEXT",
                        help="run only the cases whose name contains one of these")
    parser.add_argument("--out", type=Path, default=Path("bench/results/hostile.json"))
    args = parser.parse_args()
    if not args.model.is_dir():
        parser.error(f"--model {args.model}: no such export folder (run dvc repro, or give one)")
    cli_format = "keras" if args.format == "auto" else args.format

    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="boneage-hostile-") as tmp_name:
        tmp = Path(tmp_name)
        files = tmp / "files"
        files.mkdir()
        cases, skipped, origin = film_cases(tmp)
        run = []
        for case in cases:
            if args.only and not any(t.lower() in case.name.lower() for t in args.only):
                continue
            if args.quick and case.big:
                skipped.append({"name": case.name, "why": "--quick"})
                continue
            run.append(case)

        servers: list[Server] = []
        alive_at_end = None
        try:
            server = None
            if any(c.kind == "serve" for c in run):
                server = Server(args.model, args.format, 20.0, tmp / "serve.log")
                servers.append(server)
                print(f"boneage serve at {server.url} (--max-upload-mb 20), idle RSS "
                      f"{rss_mb(server.process.pid) or 0:.0f} MB", flush=True)
            reference = None
            built: list[Path] = []
            for case in [c for c in run if c.kind == "serve"]:
                assert server is not None
                try:
                    path = case.build(files)
                except Exception as exc:  # noqa: BLE001 - record, go on
                    row = {"name": case.name, "kind": "serve", "first_line": "", "pass": False,
                           "why": f"could not build the case: {exc!r}"}
                    results.append(row)
                    report(row)
                    continue
                built.append(path)
                log_at = server.log_size()
                started = time.monotonic()
                with RssSampler(server.process.pid) as sampler:
                    status, line, body = post_film(server.url, path, case.sex)
                seconds = time.monotonic() - started
                if case.expect == "read" and status == 200 and body:
                    reference = body.get("boneage_months")
                ok, why = judge_http(case, status, line, body, reference)
                hwm = vm_hwm_mb(server.process.pid)
                peak = max(hwm or 0.0, sampler.peak)
                alive = server.alive()
                row = {"name": case.name, "kind": "serve", "expect": case.expect,
                       "file": f"{path.name} ({path.stat().st_size:,} bytes)",
                       "status": status, "first_line": line, "seconds": round(seconds, 2),
                       "case_rss_max_mb": round(sampler.peak, 1),
                       "peak_rss_mb": round(peak, 1), "server_alive": alive}
                if peak > RSS_LIMIT_MB:
                    ok, why = False, f"{why}; server peak RSS {peak:.0f} MB"
                if not alive:
                    ok, why = False, f"{why}; the server died"
                if status is None or status >= 500 or not alive:
                    row["server_log"] = server.log_tail(log_at)
                row.update({"pass": ok, "why": why})
                results.append(row)
                report(row)
                if not alive:
                    server.restart()
            if server is not None:
                alive_at_end = server.alive() and not server.died_ever
                server.stop()

            for case in [c for c in run if c.kind == "upload"]:
                small = Server(args.model, args.format, 1.0, tmp / "serve-small.log")
                servers.append(small)
                log_at = small.log_size()
                with RssSampler(small.process.pid) as sampler:
                    answer = chunked_upload(small.url, UPLOAD_MB * MB)
                hwm = vm_hwm_mb(small.process.pid)
                peak = max(hwm or 0.0, sampler.peak)
                alive = small.alive()
                ok, why = judge_http(case, answer["status"], answer["first_line"], None, None)
                if peak > RSS_LIMIT_MB:
                    ok, why = False, f"{why}; server peak RSS {peak:.0f} MB"
                if not alive:
                    ok, why = False, f"{why}; the server died"
                row = {"name": case.name, "kind": "serve", "expect": case.expect,
                       "status": answer["status"], "first_line": answer["first_line"],
                       "seconds": answer["seconds"], "sent_mb": round(answer["sent_bytes"] / MB, 1),
                       "stopped_early": answer["stopped_early"],
                       "case_rss_max_mb": round(sampler.peak, 1), "peak_rss_mb": round(peak, 1),
                       "server_alive": alive, "pass": ok, "why": why}
                if not ok:
                    row["server_log"] = small.log_tail(log_at)
                results.append(row)
                report(row)
                small.stop()
                alive_at_end = alive if alive_at_end is None else alive_at_end and alive

            for case in [c for c in run if c.kind in ("cli", "cli-all")]:
                if case.kind == "cli-all":
                    if not built:
                        skipped.append({"name": case.name, "why": "no film case was built"})
                        continue
                    argv = [*map(str, built), "--sex", "M", "--json"]
                else:
                    argv = case.build(files)  # type: ignore[assignment]
                result = run_cli(argv, args.model, cli_format, tmp / "cli")
                ok, why = judge_cli(case, result)
                line = cli_reason(result["stderr"]) if result["exit_code"] else \
                    first_line(result["stdout"])
                row = {"name": case.name, "kind": "cli", "expect": case.expect,
                       "argv": ["boneage", "predict", *[Path(a).name if os.sep in a else a
                                                        for a in argv]],
                       "exit_code": result["exit_code"], "first_line": line,
                       "seconds": result["seconds"], "peak_rss_mb": result["peak_rss_mb"]}
                if case.kind == "cli-all":
                    ok, why, row["films"] = judge_cli_all(result, ok, why)
                    row["first_line"] = f"{len(row['films'])} rows"
                row.update({"pass": ok, "why": why})
                results.append(row)
                report(row)

        finally:  # whatever went wrong, no server is left running
            for started in servers:
                started.stop()

    peaks = [r["peak_rss_mb"] for r in results if r.get("kind") == "serve" and "peak_rss_mb" in r]
    failed = [r["name"] for r in results if not r["pass"]]
    if alive_at_end is False:
        failed.append("server alive at the end")
    summary = {
        "target": TARGET,
        "model": str(args.model), "format": args.format, "quick": args.quick,
        "reference_film": origin,
        "cases": results, "skipped": skipped,
        "server_alive_at_end": alive_at_end,
        "server_peak_rss_mb": max(peaks) if peaks else None,
        "rss_limit_mb": RSS_LIMIT_MB,
        "passed": sum(r["pass"] for r in results), "failed": failed,
        "machine": f"{os.cpu_count()} cores, 1-min load average "
                   f"{os.getloadavg()[0]:.2f} at the end",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{summary['passed']} of {len(results)} cases met the target; server alive at the end: "
          f"{alive_at_end}; server peak RSS {summary['server_peak_rss_mb']} MB; wrote {args.out}")
    return 1 if failed else 0


def report(row: dict) -> None:
    answer = row.get("status", row.get("exit_code"))
    print(f"{'PASS' if row['pass'] else 'FAIL'}  {row['name'][:58]:<58} {answer!s:>5} "
          f"{row.get('peak_rss_mb', 0):>7.0f} MB  {row['first_line'][:70]}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
