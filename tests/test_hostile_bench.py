"""bench/hostile.py: its case files are what they claim to be, and its chunked upload stops
when the server answers early. (The cases themselves run only in the benchmark.)"""

import importlib.util
import io
import socket
import sys
import threading
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageOps

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "hostile.py"


@pytest.fixture(scope="module")
def hostile():
    """bench/hostile.py, loaded; loading it puts bench/ on sys.path, so its case modules
    (bench/hostile_cases/) import as hostile_cases.*."""
    spec = importlib.util.spec_from_file_location("hostile", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["hostile"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        for name in [n for n in sys.modules if n == "hostile" or n.startswith("hostile_cases")]:
            sys.modules.pop(name, None)


def _cases_module(name):
    @pytest.fixture(scope="module")
    def fixture(hostile):
        return importlib.import_module(f"hostile_cases.{name}")
    return fixture


dicom = _cases_module("dicom")
images = _cases_module("images")
limits = _cases_module("limits")
server = _cases_module("server")
judging = _cases_module("judging")
cases = _cases_module("cases")


@pytest.fixture
def any_size(monkeypatch):
    """Let PIL open headers that claim gigapixels (opening reads the header only)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)


def test_deflated_dicom_says_deflated_and_inflates_to_its_pixels(dicom, tmp_path):
    path = dicom.deflated_dicom(tmp_path / "d.dcm", side=1024)  # 1 MB inflated
    meta = pydicom.filereader.read_file_meta_info(path)
    assert meta.TransferSyntaxUID == dicom.DEFLATED_LE
    assert meta.TransferSyntaxUID == pydicom.uid.DeflatedExplicitVRLittleEndian
    assert path.stat().st_size < 1024 * 1024 / 100  # the bomb's ratio
    ds = pydicom.dcmread(path)
    assert (ds.Rows, ds.Columns, ds.BitsAllocated, ds.PatientSex) == (1024, 1024, 8, "M")
    assert ds.pixel_array.shape == (1024, 1024) and not ds.pixel_array.any()


def test_dicom_film_keeps_the_invalid_values(dicom, tmp_path):
    grey = np.arange(30 * 20, dtype=np.uint8).reshape(30, 20)
    path = dicom.dicom_film(tmp_path / "f.dcm", grey, sex="O", slope="abc")
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == dicom.EXPLICIT_LE
    assert ds.PatientSex == "O"
    assert ds.get_item(0x00281053).value == b"abc "  # raw: not a number, as sent
    np.testing.assert_array_equal(ds.pixel_array, grey)


def test_jpeg_claiming_a_size_with_a_stray_byte(images, any_size):
    data = images.jpeg_claiming(20000, 20000)
    assert data[:2] == b"\xff\xd8" and images.sof_size(data) == (20000, 20000)
    (first,) = images.jpeg_segments(data)  # a strict walker stops at the stray byte
    assert data[first[1] + 2 + first[2]] == 0
    clean = images.jpeg_claiming(20000, 20000, stray=b"")
    assert Image.open(io.BytesIO(clean)).size == (20000, 20000)


@pytest.mark.parametrize("fmt", ["TIFF", "BMP", "PPM", "WEBP"])
def test_headers_claiming_huge_sizes(images, limits, any_size, fmt):
    side = limits.HUGE_SIDE
    data, size = {
        "TIFF": (images.tiff_claiming(side, side), (side, side)),
        "BMP": (images.bmp_claiming(side, side), (side, side)),
        "PPM": (images.pgm_claiming(side, side), (side, side)),
        "WEBP": (images.webp_claiming(), (16383, 16383)),
    }[fmt]
    image = Image.open(io.BytesIO(data))
    assert image.format == fmt and image.size == size and len(data) < 4096


def test_sideways_jpeg_is_upright_once_exif_is_applied(images):
    upright = np.tile(np.linspace(0, 255, 48, dtype=np.float32), (64, 1)).astype(np.uint8)
    upright[:8] = 255  # a bright top edge tells up from down
    image = Image.open(io.BytesIO(images.exif_sideways_jpeg(upright)))
    assert image.getexif()[0x0112] == 6 and image.size == (64, 48)  # stored sideways
    shown = np.asarray(ImageOps.exif_transpose(image).convert("L"), dtype=float)
    assert shown.shape == upright.shape and np.abs(shown - upright).mean() < 3


def test_chunked_upload_stops_when_the_server_answers_early(server):
    """The server answers 413 after the headers; the client stops sending and reads it."""
    listener = socket.create_server(("127.0.0.1", 0))
    received = []

    def serve():
        conn, _ = listener.accept()
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(4096)
            received.append(head)
            body = b'{"detail": "upload is too big"}'
            conn.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(1 << 16):  # drain until the client hangs up
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    total = 64 << 20
    answer = server.chunked_upload(url, total, timeout=30)
    thread.join(10)
    listener.close()
    assert answer["status"] == 413 and answer["first_line"] == "upload is too big"
    assert answer["stopped_early"] and answer["sent_bytes"] < total
    assert b"transfer-encoding: chunked" in received[0].lower()
    assert b"content-length" not in received[0].lower()


def test_judging_answers(cases, judging):
    refuse = cases.Case("x", "serve", "refuse", lambda f: None)
    same = cases.Case("y", "serve", "same-as-reference", lambda f: None)
    assert judging.judge_http(refuse, 413, "too big", None, None)[0]
    assert not judging.judge_http(refuse, 500, "Internal Server Error", None, None)[0]
    assert not judging.judge_http(refuse, None, "ReadTimeout", None, None)[0]
    assert not judging.judge_http(refuse, 200, "", {"boneage_months": 100.0}, None)[0]
    assert judging.judge_http(same, 200, "", {"boneage_months": 100.0}, 97.0)[0]
    assert not judging.judge_http(same, 200, "", {"boneage_months": 100.0}, 80.0)[0]
    cli = cases.Case("z", "cli", "refuse", lambda f: None)
    base = {"timed_out": False, "peak_rss_mb": 300.0, "stdout": ""}
    refused = {**base, "exit_code": 2, "stderr": "error: sex must be M or F"}
    assert judging.judge_cli(cli, refused)[0]
    assert not judging.judge_cli(cli, {**base, "exit_code": 0, "stderr": ""})[0]
    assert not judging.judge_cli(cli, {**base, "exit_code": 1,
                                       "stderr": "Traceback (most recent call last):\n  x"})[0]
