"""The web app's answers to hostile and wrong uploads, in process (no model: a stub ensemble
that reads films through the real imaging path and answers a fixed bone age)."""

import json
import logging
import threading

import cv2
import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from boneage.interfaces import serve  # noqa: E402
from boneage.reading import predictor  # noqa: E402
from boneage.imaging.transforms import ImagingSettings  # noqa: E402

LIMIT_MB = 1.0
MB = 1024 * 1024


class StubPredictor:
    settings = ImagingSettings(crop="none", size=16)
    model_dir = "stub"

    def __init__(self, synthetic: bool = False):
        self.card = {"name": "stub", "boneage_version": "0",
                     "data": {"source": "synthetic" if synthetic else "rsna"}}

    def predict_prepared(self, films, male):
        return np.full(len(films), 100.0)


Ensemble = predictor.Ensemble


def stub_ensemble(model_dirs, model_format="keras", synthetic=False):
    """The real :class:`Ensemble` (reading, sex/age resolution, wording) over a stub model;
    ``synthetic``: as if its card said it was trained on synthetic films."""
    ensemble = Ensemble.of_predictors([StubPredictor(synthetic)],
                                      identity={"name": "stub", "version": "0"})
    ensemble._explainers = []  # no Grad-CAM of a stand-in model
    return ensemble


@pytest.fixture(scope="module")
def client():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(predictor, "Ensemble", stub_ensemble)
        app = serve.create_app(["stub"], "keras", max_upload_mb=LIMIT_MB)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def synthetic_client():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(predictor, "Ensemble",
                      lambda dirs, model_format="keras": stub_ensemble(dirs, model_format,
                                                                  synthetic=True))
        app = serve.create_app(["stub"], "keras", max_upload_mb=LIMIT_MB)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def png():
    from factories import hand_radiograph

    return cv2.imencode(".png", hand_radiograph(seed=0))[1].tobytes()


def post(client, data: bytes, name="film.png", **fields):
    return client.post("/api/predict", files={"file": (name, data)},
                       data={"explain": "false", **fields})


def test_a_good_upload_is_read_and_speaks_of_the_form(client, png):
    response = post(client, png, sex="F", chronological_age="10y2m")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["boneage_months"] == 100.0 and body["chronological_months"] == 122
    assert body["sex_source"] == "from the form" and body["age_source"] == "from the form"
    assert "--" not in body["report"]


def test_a_model_of_synthetic_films_says_so_and_gives_no_call_unless_forced(synthetic_client,
                                                                            client, png):
    body = post(synthetic_client, png, sex="F", chronological_age="15y").json()
    assert body["warning"] == predictor.SYNTHETIC_WARNING
    assert f"WARNING: {predictor.SYNTHETIC_WARNING}" in body["report"]
    assert body["boneage_months"] == 100.0 and body["chronological_months"] == 180
    for clinical in ("call", "z_score", "difference_months", "sd_months"):
        assert clinical not in body, body
    assert "DELAYED" not in body["report"] and "no difference, SD score or call" in body["report"]
    assert synthetic_client.get("/healthz").json()["trained_on_synthetic"] == ["stub"]
    forced = post(synthetic_client, png, sex="F", chronological_age="15y", force="true").json()
    assert forced["call"] == "delayed" and forced["warning"] == predictor.SYNTHETIC_WARNING
    assert "DELAYED" in forced["report"] and "WARNING: trained on synthetic" in forced["report"]
    # A model of real films: no warning, the call as always.
    plain = post(client, png, sex="F", chronological_age="15y").json()
    assert "warning" not in plain and plain["call"] == "delayed"


@pytest.mark.parametrize("fields, message", [
    ({}, "choose the sex (M or F) in the form"),
    ({"sex": "F", "chronological_age": "300"}, "from 1 month to 20 years"),
    ({"sex": "F", "chronological_age": "0"}, "from 1 month to 20 years"),
    ({"sex": "F", "chronological_age": "10y15m"}, "months must be 0-11"),
])
def test_wrong_fields_are_a_422_worded_for_the_form(client, png, fields, message):
    response = post(client, png, **fields)
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"] and "--sex" not in response.json()["detail"]


def test_malformed_dicom_number_is_a_422_naming_the_tag(client):
    from test_dicom import make_dicom

    data = make_dicom(np.full((32, 32), 900, np.uint16), slope="7.25", intercept="0", sex="M")
    data = data.replace(b"7.25", b"abcd")
    response = post(client, data, name="bad.dcm")
    assert response.status_code == 422, response.text
    assert response.json() == {"detail": "bad.dcm: DICOM tag RescaleSlope (0028,1053) is not a "
                                         "number: 'abcd'", "code": "unreadable"}


def test_other_patient_sex_is_named_and_the_form_asked(client):
    from test_dicom import make_dicom

    response = post(client, make_dicom(np.full((32, 32), 90, np.uint8), sex="O"), name="o.dcm")
    assert response.status_code == 422
    assert response.json()["detail"] == ("o.dcm: sex unknown: PatientSex is 'O' (not M or F); "
                                         "choose the sex (M or F) in the form")


def test_an_unexpected_error_is_a_json_500_and_logged(client, png, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(Ensemble, "predict_bytes", broken)
    with caplog.at_level(logging.ERROR, logger="boneage.interfaces.serve"):
        response = post(client, png, sex="F")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert "internal error" in response.json()["detail"] and "a bug" not in response.text
    assert "ZeroDivisionError" in caplog.text
    monkeypatch.undo()
    assert post(client, png, sex="F").status_code == 200


def test_an_error_outside_the_predict_route_is_json_too(client):
    def broken():
        raise RuntimeError("a bug")

    client.app.add_api_route("/broken", broken)
    response = client.get("/broken")
    assert response.status_code == 500 and response.json()["detail"].startswith("internal error")
    assert "a bug" not in response.text


def test_a_declared_length_over_the_limit_is_refused_before_reading(client, png):
    response = post(client, png + bytes(int(LIMIT_MB * MB) + 100_000), sex="F")
    assert response.status_code == 413 and "the limit is 1 MB" in response.json()["detail"]


def post_chunked(app, *parts, sent: list):
    """POST a multipart body from an async generator: httpx sends it without a Content-Length
    and its ASGI transport hands the app one chunk per ``receive()``, when asked."""
    import asyncio

    boundary = "chunkedboundary"

    async def body():
        for part in (f"--{boundary}\r\n".encode(), *parts, f"\r\n--{boundary}--\r\n".encode()):
            for chunk in ([part] if isinstance(part, bytes) else part):
                sent.append(len(chunk))
                yield chunk

    async def run():
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post(
                "/api/predict", content=body(),
                headers={"content-type": f"multipart/form-data; boundary={boundary}"})

    return asyncio.run(run())


def form_fields(boundary: str = "chunkedboundary", **fields) -> bytes:
    return "".join(f'Content-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'
                   f"--{boundary}\r\n" for key, value in fields.items()).encode()


FILE_HEAD = b'Content-Disposition: form-data; name="file"; filename="f.png"\r\n\r\n'


def test_a_chunked_upload_over_the_limit_is_cut_off_as_it_streams(client, png):
    """No Content-Length: the body is counted chunk by chunk and the rest is never read."""
    sent: list[int] = []
    zeros = (bytes(64 * 1024) for _ in range(50 * 16))  # 50 MB, were it all read
    response = post_chunked(client.app, form_fields(sex="F"), FILE_HEAD, png, zeros, sent=sent)
    assert response.status_code == 413, response.text
    assert response.json()["detail"].startswith("upload is over the 1 MB limit")
    assert sum(sent) < 2 * MB  # stopped at the first chunk past the limit


def test_a_chunked_upload_under_the_limit_is_read(client, png):
    sent: list[int] = []
    response = post_chunked(client.app, form_fields(sex="M", explain="false"), FILE_HEAD, png,
                            sent=sent)
    assert response.status_code == 200, response.text
    assert json.loads(response.text)["sex"] == "M"


@pytest.mark.parametrize("value", [-5, 0, float("inf"), float("nan")])
def test_create_app_refuses_a_meaningless_upload_limit(value):
    with pytest.raises(ValueError, match="max_upload_mb"):
        serve.create_app(["stub"], "keras", max_upload_mb=value)


def test_what_is_not_a_hand_radiograph_is_refused_with_its_checks(client):
    blank = cv2.imencode(".png", np.full((200, 160), 30, np.uint8))[1].tobytes()
    response = post(client, blank, sex="F")
    assert response.status_code == 422, response.text
    body = response.json()
    assert "not read" in body["detail"] and "force" in body["detail"]
    assert body["checks"]["accepted"] is False and "blank" in body["checks"]["failed"]


def test_force_reads_a_refused_film_and_says_so(client):
    blank = cv2.imencode(".png", np.full((200, 160), 30, np.uint8))[1].tobytes()
    response = post(client, blank, sex="F", force="true")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["checks"]["forced"] is True and body["checks"]["accepted"] is False
    assert "WARNING: read on request (force)" in body["report"]


def test_an_inverted_film_is_refused_as_inverted(client):
    from factories import hand_radiograph

    inverted = cv2.imencode(".png", 255 - hand_radiograph(seed=0))[1].tobytes()
    response = post(client, inverted, sex="M")
    assert response.status_code == 422, response.text
    assert "inverted" in response.json()["detail"]
    assert response.json()["checks"]["inverted"] is True
    upright = post(client, cv2.imencode(".png", hand_radiograph(seed=0))[1].tobytes(), sex="M")
    assert upright.status_code == 200 and upright.json()["checks"]["forced"] is False


def test_the_api_docs_load_their_scripts_from_the_server_itself(client):
    page = client.get("/docs")
    assert page.status_code == 200
    assert "cdn.jsdelivr.net" not in page.text and "unpkg.com" not in page.text
    scripts = [part.split('"')[0] for part in page.text.split('src="')[1:]]
    styles = [part.split('"')[0] for part in page.text.split('href="')[1:]
              if part.split('"')[0].endswith(".css")]
    assert scripts and styles
    for url in (*scripts, *styles):
        assert url.startswith("/"), url  # served here, offline
        asset = client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 1000, url
    redoc = client.get("/redoc")
    assert redoc.status_code == 200 and "cdn" not in redoc.text


def test_every_request_gets_one_line_in_the_request_log(client, png, caplog):
    caplog.set_level(logging.INFO, logger="boneage.requests")
    post(client, png, name="Jane Doe hand.png", sex="F")
    client.get("/healthz")
    big = post(client, bytes(int(LIMIT_MB * MB) + 200_000), sex="F")
    assert big.status_code == 413
    lines = [record.getMessage() for record in caplog.records
             if record.name == "boneage.requests"]
    assert len(lines) == 3, lines
    assert lines[0].startswith("testclient POST /api/predict 200 ") and lines[0].endswith("ms")
    assert " GET /healthz 200 " in lines[1] and " POST /api/predict 413 " in lines[2]
    assert not any("Jane" in line or "sex" in line for line in lines)  # no patient details
# ----------------------------------------------------------------------------- issue 22


def stub_app(**options):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(predictor, "Ensemble", stub_ensemble)
        return serve.create_app(["stub"], "keras", max_upload_mb=LIMIT_MB, **options)


@pytest.mark.parametrize("headers", [
    {"Origin": "https://evil.example"},
    {"Origin": "null"},
    {"Origin": "http://testserver.evil.example"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
])
def test_a_request_from_another_origin_is_refused_before_its_body_is_read(client, png,
                                                                          monkeypatch, headers):
    def never(*args, **kwargs):
        raise AssertionError("a cross-origin upload was read")

    monkeypatch.setattr(Ensemble, "predict_bytes", never)
    response = client.post("/api/predict", files={"file": ("film.png", png)},
                           data={"sex": "F"}, headers=headers)
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["code"] == "cross_origin" and "--allow-origin" in body["detail"]
    assert "access-control-allow-origin" not in response.headers


def test_the_own_page_and_programs_are_served_and_a_cross_site_link_opens_the_page(client, png):
    assert post(client, png, sex="F").status_code == 200  # no Origin: a program
    own = client.post("/api/predict", files={"file": ("film.png", png)},
                      data={"sex": "F", "explain": "false"},
                      headers={"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"})
    assert own.status_code == 200, own.text
    page = client.get("/", headers={"Sec-Fetch-Site": "cross-site"})  # a link from elsewhere
    assert page.status_code == 200


def test_allow_origin_opens_the_api_to_that_site_with_cors_headers(png):
    app = stub_app(allow_origins=["https://pacs.example.org/"])
    with TestClient(app, raise_server_exceptions=False) as allowed:
        site = {"Origin": "https://pacs.example.org"}
        response = allowed.post("/api/predict", files={"file": ("film.png", png)},
                                data={"sex": "F", "explain": "false"}, headers=site)
        assert response.status_code == 200, response.text
        assert response.headers["access-control-allow-origin"] == "https://pacs.example.org"
        preflight = allowed.options("/api/predict", headers={
            **site, "Access-Control-Request-Method": "POST"})
        assert preflight.status_code == 200
        assert "POST" in preflight.headers["access-control-allow-methods"]
        other = allowed.post("/api/predict", files={"file": ("film.png", png)},
                             data={"sex": "F"}, headers={"Origin": "https://evil.example"})
        assert other.status_code == 403


@pytest.mark.parametrize("origin", ["pacs.example.org", "https://x.org/path", "ftp://x.org", ""])
def test_allow_origin_must_be_an_origin(origin):
    from boneage.kernel.errors import UsageError

    with pytest.raises(UsageError, match="scheme://host"):
        serve.check_origin(origin)


@pytest.mark.parametrize("request_kwargs, field", [
    ({"data": {"sex": "F"}}, "file"),  # no file at all
    ({"data": {"sex": "F", "file": "not a file"}}, "file"),  # a text field named file
    ({"files": {"file": ("f.png", b"x")}, "data": {"sex": "F", "explain": "maybe"}}, "explain"),
])
def test_validation_errors_are_one_string_and_per_field(client, request_kwargs, field):
    response = client.post("/api/predict", **request_kwargs)
    assert response.status_code == 422, response.text
    body = response.json()
    assert isinstance(body["detail"], str) and body["detail"].startswith(f"{field}: ")
    assert body["code"] == "invalid_field" and body["errors"][0]["field"] == field
    assert "UploadFile" not in response.text and "not a file'" not in response.text
    assert "input" not in json.dumps(body["errors"])


def test_every_error_answer_is_one_detail_string_and_a_code(client, png):
    answers = [post(client, b"", sex="F"), post(client, b"GIF89a" + bytes(64), sex="F"),
               post(client, png, sex="X"), client.get("/nothing-here"),
               client.put("/api/predict")]
    for response in answers:
        body = response.json()
        assert 400 <= response.status_code < 500
        assert isinstance(body["detail"], str) and body["detail"], body
        assert isinstance(body["code"], str) and body["code"], body


def test_films_beyond_max_decoding_wait_then_get_a_503_with_retry_after(png, monkeypatch):
    started, release = threading.Event(), threading.Event()
    real = Ensemble.predict_bytes

    def slow(self, *args, **kwargs):
        started.set()
        release.wait(10)
        return real(self, *args, **kwargs)

    app = stub_app(max_decoding=1, queue_timeout=0.5)
    monkeypatch.setattr(Ensemble, "predict_bytes", slow)
    with TestClient(app, raise_server_exceptions=False) as busy:
        first: dict = {}
        worker = threading.Thread(target=lambda: first.update(
            response=post(busy, png, sex="F")))
        worker.start()
        assert started.wait(10)
        second = post(busy, png, sex="F")
        release.set()
        worker.join(20)
    assert second.status_code == 503, second.text
    assert second.headers["retry-after"] == "5" and second.json()["code"] == "busy"
    assert second.json()["retry_after_s"] == 5
    assert first["response"].status_code == 200


@pytest.mark.parametrize("value", [0, -1, 1.5])
def test_create_app_refuses_a_meaningless_decoding_limit(value):
    with pytest.raises(ValueError, match="max_decoding"):
        stub_app(max_decoding=value)


@pytest.fixture()
def live_server(png):
    """The stub app under a real uvicorn (HTTP/1.1 on a socket), body timeout 1 s."""
    import socket
    import time

    import uvicorn

    app = stub_app(body_timeout=1.0)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    yield sock.getsockname()
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.mark.parametrize("declared_extra", [100_000, 0], ids=["short-body", "stalled-body"])
def test_a_stalled_or_short_body_gets_408_and_its_connection_is_closed(live_server, png,
                                                                       declared_extra):
    import socket
    import time

    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"sex\"\r\n\r\nF\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"f.png\"\r\n\r\n").encode() + png + f"\r\n--{boundary}--\r\n".encode()
    sent = body if declared_extra else body[:len(body) // 2]  # short, or stopping half-way
    with socket.create_connection(live_server, timeout=10) as conn:
        conn.sendall((f"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: "
                      f"multipart/form-data; boundary={boundary}\r\n"
                      f"Content-Length: {len(body) + declared_extra}\r\n\r\n").encode() + sent)
        started = time.monotonic()
        raw = b""
        while True:  # until the server closes the connection
            piece = conn.recv(65536)
            if not piece:
                break
            raw += piece
        waited = time.monotonic() - started
    assert raw.startswith(b"HTTP/1.1 408"), raw[:200]
    assert b"body_timeout" in raw and 0.5 < waited < 8
    import httpx

    host, port = live_server
    assert httpx.get(f"http://{host}:{port}/healthz").status_code == 200  # still serving


def test_serve_says_nothing_of_serving_when_its_port_is_busy(capsys):
    import socket

    from boneage.kernel.errors import SetupError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SetupError, match=f"cannot listen on 127.0.0.1:{port}.*--port"):
            serve.run_server(["no-such-model"], port=port)
    assert "serving" not in capsys.readouterr().out


def test_a_film_over_the_read_limit_is_decoded_alone(png, monkeypatch):
    """With two slots, a large film (header over READ_PIXELS) takes both: a second upload
    waits, and past the queue timeout gets a 503; a small film takes one slot only."""
    from boneage.imaging import headers

    started, release = threading.Event(), threading.Event()
    real = Ensemble.predict_bytes

    def slow(self, data, name, *args, **kwargs):
        if name == "large.png":
            started.set()
            release.wait(10)
        return real(self, data, name, *args, **kwargs)

    app = stub_app(max_decoding=2, queue_timeout=0.5)
    monkeypatch.setattr(Ensemble, "predict_bytes", slow)
    height, width = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED).shape[:2]
    with TestClient(app, raise_server_exceptions=False) as busy:
        monkeypatch.setattr(headers, "READ_PIXELS", height * width - 1)  # this film is "large"
        first: dict = {}
        worker = threading.Thread(target=lambda: first.update(
            response=post(busy, png, name="large.png", sex="F")))
        worker.start()
        assert started.wait(10)
        second = post(busy, png, name="other.png", sex="F")
        release.set()
        worker.join(20)
        monkeypatch.setattr(headers, "READ_PIXELS", height * width)  # now a small film
        started.clear()
        release.clear()
        worker = threading.Thread(target=lambda: first.update(
            response=post(busy, png, name="large.png", sex="F")))
        worker.start()
        assert started.wait(10)
        third = post(busy, png, name="other.png", sex="F")  # the second slot is free
        release.set()
        worker.join(20)
    assert second.status_code == 503, second.text
    assert third.status_code == 200, third.text
    assert first["response"].status_code == 200
