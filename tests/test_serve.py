"""``boneage serve`` for real: a subprocess on a free loopback port, hit over HTTP, and a page
driven by headless Chromium."""

import base64
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from factories import free_ports, hand_radiograph, make_export

httpx = pytest.importorskip("httpx")

pytestmark = pytest.mark.slow
LIMIT_MB = 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    model = make_export(tmp, count=40, size=32)
    (port,) = free_ports(1)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    log = open(tmp / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "boneage.interfaces.cli", "serve", "--model", str(model), "--port", str(port),
         "--max-upload-mb", str(LIMIT_MB)], stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited: {(tmp / 'server.log').read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail(f"server did not start: {(tmp / 'server.log').read_text()[-3000:]}")
    yield url, tmp
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.fixture(scope="module")
def film_png(server):
    ok, png = cv2.imencode(".png", hand_radiograph(120, 1, seed=3))
    path = server[1] / "film.png"
    path.write_bytes(png.tobytes())
    return path


def post(url, data: bytes, name="film.png", **fields):
    return httpx.post(f"{url}/api/predict", files={"file": (name, data)}, data=fields, timeout=60)


def test_health_and_docs(server):
    url, _ = server
    health = httpx.get(f"{url}/healthz").json()
    # auto reads the TFLite file (through LiteRT), as predict does
    assert health["status"] == "ok" and health["format"] == "tflite"
    assert httpx.get(f"{url}/docs").status_code == 200
    assert "/api/predict" in httpx.get(f"{url}/openapi.json").json()["paths"]


def test_predict_png_with_age_gives_a_report_and_a_heatmap(server, film_png):
    url, _ = server
    response = post(url, film_png.read_bytes(), sex="F", chronological_age="10y2m")
    assert response.status_code == 200, response.text
    body = response.json()
    assert 0 < body["boneage_months"] < 300 and "month" in body["boneage_text"]
    assert body["sex"] == "F" and body["sex_source"] == "from the form"
    assert "--sex" not in body["report"] and "--chronological-age" not in body["report"]
    assert body["chronological_months"] == 122 and body["call"] in ("delayed", "normal", "advanced")
    assert "Greulich" in body["rule"] and "bone age" in body["report"]
    prefix = "data:image/png;base64,"
    assert body["heatmap_png"].startswith(prefix)
    heatmap = cv2.imdecode(np.frombuffer(base64.b64decode(body["heatmap_png"][len(prefix):]),
                                         np.uint8), cv2.IMREAD_COLOR)
    assert heatmap.shape[:2] == (200, 160)  # over the original film


def test_dicom_sex_comes_from_the_tag(server, film_png):
    from test_dicom import make_dicom

    url, _ = server
    pixels = cv2.imread(str(film_png), cv2.IMREAD_GRAYSCALE)
    body = post(url, make_dicom(pixels, sex="M", age="012Y"), name="film.dcm").json()
    assert body["sex"] == "M" and "PatientSex" in body["sex_source"]
    assert body["chronological_months"] == 144 and body["format"] == "dicom"


@pytest.mark.parametrize("case, status, message", [
    ("text", 415, "not a PNG, JPEG, TIFF, BMP, WebP, PNM or DICOM image"),
    ("empty", 400, "empty"),
    ("truncated", 422, "truncated"),
    ("wide", 422, "20000x100 px"),
    ("dicom_no_pixels", 422, "no pixel data"),
    ("too_big", 413, "limit"),
    ("bad_sex", 422, "sex must be M or F"),
    ("bad_age", 422, "cannot read age"),
    ("no_sex", 422, "sex unknown: choose the sex (M or F) in the form"),
    ("other_sex", 422, "PatientSex is 'O' (not M or F); choose the sex (M or F) in the form"),
    ("bad_dicom_number", 422, "DICOM tag RescaleSlope (0028,1053) is not a number: 'abcd'"),
    ("too_old", 422, "bone age is assessed from 1 month to 20 years"),
    ("months_over_11", 422, "months must be 0-11 when years are given"),
])
def test_bad_uploads_get_a_clear_4xx_and_the_server_keeps_serving(server, film_png, case, status,
                                                                  message):
    from test_dicom import make_dicom

    url, _ = server
    png = film_png.read_bytes()
    wide = bytearray(png[:33])  # signature + IHDR only
    wide[16:20], wide[20:24] = (20000).to_bytes(4, "big"), (100).to_bytes(4, "big")
    uploads = {
        "text": (b"hello, this is not a radiograph\n" * 10, {"sex": "F"}),
        "empty": (b"", {"sex": "F"}),
        "truncated": (png[: len(png) // 2], {"sex": "F"}),
        "wide": (bytes(wide), {"sex": "F"}),
        "dicom_no_pixels": (make_dicom(None, sex="F"), {}),
        "too_big": (png + os.urandom(int(LIMIT_MB * 1024 * 1024) + 100_000), {"sex": "F"}),
        "bad_sex": (png, {"sex": "X"}),
        "bad_age": (png, {"sex": "F", "chronological_age": "ten"}),
        "no_sex": (png, {}),
        "other_sex": (make_dicom(np.full((32, 32), 90, np.uint8), sex="O"), {}),
        "bad_dicom_number": (make_dicom(np.full((32, 32), 900, np.uint16), slope="7.25",
                                        intercept="0", sex="F").replace(b"7.25", b"abcd"), {}),
        "too_old": (png, {"sex": "F", "chronological_age": "300"}),
        "months_over_11": (png, {"sex": "F", "chronological_age": "10y15m"}),
    }
    data, fields = uploads[case]
    response = post(url, data, **fields)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert httpx.get(f"{url}/healthz").status_code == 200
    assert post(url, png, sex="M").status_code == 200


def test_chunked_upload_over_the_limit_is_refused_by_the_real_server(server, film_png):
    """A generator body goes out chunked (no Content-Length); the server counts as it reads.
    It may answer 413 or cut the connection while the client is still sending."""
    url, _ = server
    sent = []

    def body():
        yield (b'--b\r\nContent-Disposition: form-data; name="sex"\r\n\r\nF\r\n--b\r\n'
               b'Content-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n')
        yield film_png.read_bytes()
        for _ in range(8 * 16):  # 8 MB
            sent.append(64 * 1024)
            yield bytes(64 * 1024)
        yield b"\r\n--b--\r\n"

    try:
        response = httpx.post(f"{url}/api/predict", content=body(), timeout=60,
                              headers={"content-type": "multipart/form-data; boundary=b"})
    except (httpx.WriteError, httpx.ReadError, httpx.RemoteProtocolError):
        pass  # cut off mid-upload: refused too
    else:
        assert response.status_code == 413, response.text
        assert "limit" in response.json()["detail"]
    assert httpx.get(f"{url}/healthz").status_code == 200
    assert post(url, film_png.read_bytes(), sex="M").status_code == 200


def test_default_host_is_loopback():
    from boneage.interfaces.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1" and args.max_upload_mb == 20.0


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                                             "(.ci/run installs it: apt-get install chromium)")
def test_browser_upload_shows_bone_age_and_heatmap(server, film_png):
    playwright = pytest.importorskip("playwright.sync_api")
    url, tmp = server
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page()
            page.goto(url + "/")
            page.set_input_files("#file", str(film_png))
            page.select_option("#sex", "F")
            page.fill("#age", "8y")
            page.click("#submit")
            page.wait_for_selector("#result:not([hidden])", timeout=60_000)
            assert "months" in page.inner_text("#boneage")
            assert page.inner_text("#call").split(":")[0] in ("DELAYED", "NORMAL", "ADVANCED")
            page.wait_for_function(
                "() => document.getElementById('heatmap').naturalWidth > 0", timeout=30_000)
            assert page.evaluate("document.getElementById('heatmap').naturalWidth") == 160
            page.screenshot(path=str(tmp / "page.png"))
            # a bad file shows the server's message on the page
            bad = Path(tmp) / "notes.png"
            bad.write_bytes(b"not an image at all" * 10)
            page.set_input_files("#file", str(bad))
            page.click("#submit")
            page.wait_for_selector("#status .error", timeout=30_000)
            assert "not a PNG, JPEG, TIFF" in page.inner_text("#status")
        finally:
            browser.close()
