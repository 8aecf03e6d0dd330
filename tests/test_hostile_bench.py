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
    spec = importlib.util.spec_from_file_location("hostile", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["hostile"] = module  # its dataclass looks itself up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("hostile", None)


@pytest.fixture
def any_size(monkeypatch):
    """Let PIL open headers that claim gigapixels (opening reads the header only)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)


def test_deflated_dicom_says_deflated_and_inflates_to_its_pixels(hostile, tmp_path):
    path = hostile.deflated_dicom(tmp_path / "d.dcm", side=1024)  # 1 MB inflated
    meta = pydicom.filereader.read_file_meta_info(path)
    assert meta.TransferSyntaxUID == hostile.DEFLATED_LE
    assert meta.TransferSyntaxUID == pydicom.uid.DeflatedExplicitVRLittleEndian
    assert path.stat().st_size < 1024 * 1024 / 100  # the bomb's ratio
    ds = pydicom.dcmread(path)
    assert (ds.Rows, ds.Columns, ds.BitsAllocated, ds.PatientSex) == (1024, 1024, 8, "M")
    assert ds.pixel_array.shape == (1024, 1024) and not ds.pixel_array.any()


def test_dicom_film_keeps_the_invalid_values(hostile, tmp_path):
    grey = np.arange(30 * 20, dtype=np.uint8).reshape(30, 20)
    path = hostile.dicom_film(tmp_path / "f.dcm", grey, sex="O", slope="abc")
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == hostile.EXPLICIT_LE
    assert ds.PatientSex == "O"
    assert ds.get_item(0x00281053).value == b"abc "  # raw: not a number, as sent
    np.testing.assert_array_equal(ds.pixel_array, grey)


def test_jpeg_claiming_a_size_with_a_stray_byte(hostile, any_size):
    data = hostile.jpeg_claiming(20000, 20000)
    assert data[:2] == b"\xff\xd8" and hostile.sof_size(data) == (20000, 20000)
    (first,) = hostile.jpeg_segments(data)  # a strict walker stops at the stray byte
    assert data[first[1] + 2 + first[2]] == 0
    clean = hostile.jpeg_claiming(20000, 20000, stray=b"")
    assert Image.open(io.BytesIO(clean)).size == (20000, 20000)


@pytest.mark.parametrize("fmt", ["TIFF", "BMP", "PPM", "WEBP"])
def test_headers_claiming_huge_sizes(hostile, any_size, fmt):
    side = hostile.HUGE_SIDE
    data, size = {
        "TIFF": (hostile.tiff_claiming(side, side), (side, side)),
        "BMP": (hostile.bmp_claiming(side, side), (side, side)),
        "PPM": (hostile.pgm_claiming(side, side), (side, side)),
        "WEBP": (hostile.webp_claiming(), (16383, 16383)),
    }[fmt]
    image = Image.open(io.BytesIO(data))
    assert image.format == fmt and image.size == size and len(data) < 4096


def test_sideways_jpeg_is_upright_once_exif_is_applied(hostile):
    upright = np.tile(np.linspace(0, 255, 48, dtype=np.float32), (64, 1)).astype(np.uint8)
    upright[:8] = 255  # a bright top edge tells up from down
    image = Image.open(io.BytesIO(hostile.exif_sideways_jpeg(upright)))
    assert image.getexif()[0x0112] == 6 and image.size == (64, 48)  # stored sideways
    shown = np.asarray(ImageOps.exif_transpose(image).convert("L"), dtype=float)
    assert shown.shape == upright.shape and np.abs(shown - upright).mean() < 3


def test_chunked_upload_stops_when_the_server_answers_early(hostile):
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
    answer = hostile.chunked_upload(url, total, timeout=30)
    thread.join(10)
    listener.close()
    assert answer["status"] == 413 and answer["first_line"] == "upload is too big"
    assert answer["stopped_early"] and answer["sent_bytes"] < total
    assert b"transfer-encoding: chunked" in received[0].lower()
    assert b"content-length" not in received[0].lower()


def test_judging_answers(hostile):
    refuse = hostile.Case("x", "serve", "refuse", lambda f: None)
    same = hostile.Case("y", "serve", "same-as-reference", lambda f: None)
    assert hostile.judge_http(refuse, 413, "too big", None, None)[0]
    assert not hostile.judge_http(refuse, 500, "Internal Server Error", None, None)[0]
    assert not hostile.judge_http(refuse, None, "ReadTimeout", None, None)[0]
    assert not hostile.judge_http(refuse, 200, "", {"boneage_months": 100.0}, None)[0]
    assert hostile.judge_http(same, 200, "", {"boneage_months": 100.0}, 97.0)[0]
    assert not hostile.judge_http(same, 200, "", {"boneage_months": 100.0}, 80.0)[0]
    cli = hostile.Case("z", "cli", "refuse", lambda f: None)
    base = {"timed_out": False, "peak_rss_mb": 300.0, "stdout": ""}
    refused = {**base, "exit_code": 2, "stderr": "error: sex must be M or F"}
    assert hostile.judge_cli(cli, refused)[0]
    assert not hostile.judge_cli(cli, {**base, "exit_code": 0, "stderr": ""})[0]
    assert not hostile.judge_cli(cli, {**base, "exit_code": 1,
                                       "stderr": "Traceback (most recent call last):\n  x"})[0]
