"""``boneage serve``: a page to drop a radiograph on, and a JSON API, over exported models.

Models load once at start; each prediction runs in the thread pool so the event loop keeps
answering (health checks, other uploads) while a film is read. Uploads are checked before
any decoding: size limit (counted as the body streams in, so a chunked upload without a
Content-Length is cut off too), magic bytes (:data:`boneage.imaging.headers.FORMATS`), and the image
header's width and height (so a 20,000 px "film" is refused without decoding it). Every
refusal is a 4xx with ``{"detail": "..."}`` naming what is wrong; anything unexpected is a
JSON 500 with a generic message (the traceback goes to the log); the server keeps serving.

Every request gets one line in the request log (logger ``boneage.requests``, on stderr): time,
client, method, path, status, body size and milliseconds; never a file name or a form field,
which may name a patient. The API docs at ``/docs`` and ``/redoc`` load Swagger UI and ReDoc
from the installed ``fastapi-offline`` package, so they work without internet access.
"""

# No `from __future__ import annotations`: FastAPI resolves the endpoint annotations at
# definition time, and they name classes imported inside create_app.

import base64
import logging
import sys
import time
from pathlib import Path

from boneage.kernel.errors import ImageError, NotAFilmError, UsageError

log = logging.getLogger(__name__)
requests_log = logging.getLogger("boneage.requests")

PAGE = Path(__file__).with_name("static") / "index.html"  # the web page: HTML + JavaScript
FORMAT_PREFERENCE = ("savedmodel", "keras", "tflite")  # fastest first: bench/predict_latency.py
MB = 1024 * 1024


def pick_format(model_dirs: list[Path], requested: str = "auto") -> str:
    """The requested format, or for 'auto' the fastest one every export has."""
    from boneage.reading.predictor import FORMAT_FILES

    if requested != "auto":
        return requested
    for model_format in FORMAT_PREFERENCE:
        if all((Path(d) / FORMAT_FILES[model_format]).exists() for d in model_dirs):
            return model_format
    return "keras"  # the one every export ships; Predictor names what is missing


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets a 413 ``{"detail": ...}``.

    A declared Content-Length is refused before the body is read; a body without one
    (chunked transfer encoding) is counted as it streams in, and reading stops at the first
    chunk past the limit: the rest is never spooled to disk to be measured afterwards.
    """

    def __init__(self, app, limit: int, limit_mb: float):
        self.app, self.limit, self.limit_mb = app, limit, limit_mb

    async def __call__(self, scope, receive, send):
        from starlette.exceptions import HTTPException
        from starlette.responses import JSONResponse

        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length", b"").decode("latin-1")
        if length.isdigit() and int(length) > self.limit:
            detail = f"upload is {int(length) / MB:.1f} MB; the limit is {self.limit_mb:g} MB"
            return await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # Raised inside the app's body parsing: FastAPI lets HTTPExceptions
                    # through and its exception middleware answers {"detail": ...}.
                    raise HTTPException(413, f"upload is over the {self.limit_mb:g} MB limit "
                                             f"(stopped reading at {received / MB:.1f} MB)")
            return message

        await self.app(scope, counted, send)


class RequestLog:
    """ASGI middleware: one line per HTTP request to ``boneage.requests``, as the answer goes
    out (a request cut off before any answer is logged with status 0)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, answer = time.perf_counter(), {"status": 0, "bytes": 0}

        async def sending(message):
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
            elif message["type"] == "http.response.body":
                answer["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            client = scope.get("client") or ("-", 0)
            requests_log.info("%s %s %s %d %dB %.0fms", client[0], scope["method"],
                              scope["path"], answer["status"], answer["bytes"],
                              1000 * (time.perf_counter() - started))


def show_request_log() -> None:
    """The request log on stderr at INFO, whatever the root logger's level (the CLI keeps
    library logging at WARNING unless --verbose)."""
    if not requests_log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        requests_log.addHandler(handler)
    requests_log.setLevel(logging.INFO)
    requests_log.propagate = False


def create_app(model_dirs: list[str | Path] | None, model_format: str = "auto",
               max_upload_mb: float = 20.0, release_variant: str = "ensemble"):
    """The FastAPI app with its models loaded (and warmed up) once: the exports in
    ``model_dirs``, or without any, the release that ships with boneage."""
    import numpy as np
    from fastapi import File, Form, HTTPException, Request, UploadFile
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import HTMLResponse, JSONResponse
    from fastapi_offline import FastAPIOffline

    from boneage import __version__
    from boneage.imaging.headers import FORMATS, sniff
    from boneage.reading.inputs import parse_chronological_age, parse_height_cm, parse_sex
    from boneage.reading.predictor import FORM, Ensemble
    from boneage.reading.standards import RULE, SOURCE

    if not 0 < max_upload_mb < float("inf"):  # also refuses nan
        raise ValueError(f"max_upload_mb must be a size in MB above 0, got {max_upload_mb!r}")
    if model_dirs:
        model_dirs = [Path(d) for d in model_dirs]
        chosen = pick_format(model_dirs, model_format)
        ensemble = Ensemble(model_dirs, model_format=chosen)
    else:
        chosen = "keras" if model_format == "auto" else model_format
        ensemble = Ensemble.from_release(release_variant, chosen)
        model_dirs = [p.model_dir for p in ensemble.predictors]
    limit = int(max_upload_mb * MB)
    # Warm up: the first call of each model (and of Grad-CAM) builds its graph.
    for settings in ensemble.settings:
        blank = np.zeros((settings.size, settings.size), dtype=np.uint8)
        for predictor in ensemble.predictors:
            if predictor.settings == settings:
                predictor.predict_prepared(blank[None], 1)
    ensemble.explainers()

    # /docs and /redoc from the package's own copy of Swagger UI and ReDoc (no CDN).
    app = FastAPIOffline(title="boneage", version=__version__,
                         description="Bone age (months) from a hand radiograph and sex, with a "
                                     "Grad-CAM heatmap. Research and decision support only.")

    # Refuse on the declared length before the multipart body is read at all, and count the
    # bytes of a body without one (64 KB for the form fields around the file).
    app.add_middleware(BodyLimit, limit=limit + 64 * 1024, limit_mb=max_upload_mb)
    app.add_middleware(RequestLog)  # outermost: also logs what BodyLimit refuses

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        # JSON like every other answer (the page shows `detail`), never a plain-text 500;
        # what went wrong is for the log, not for the client.
        log.error("unexpected error answering %s %s", request.method, request.url.path,
                  exc_info=exc)
        return JSONResponse({"detail": "internal error while answering; the server log has "
                                       "the details"}, status_code=500)

    page_html = PAGE.read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return page_html

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "models": [str(d) for d in model_dirs], "format": chosen,
                "model": ensemble.identity, "max_upload_mb": max_upload_mb,
                "trained_on_synthetic": [str(d) for d in ensemble.synthetic]}

    @app.post("/api/predict")
    async def predict(file: UploadFile = File(..., description=f"{FORMATS} film"),
                      sex: str | None = Form(None, description="M or F; may be left out for "
                                                               "a DICOM with PatientSex"),
                      chronological_age: str | None = Form(
                          None, description="months (122) or years and months (10y2m), from "
                                            "1 month to 20 years"),
                      height_cm: str | None = Form(
                          None, description="current height in cm (else a DICOM's "
                                            "PatientSize); with the age, adds the adult height "
                                            "predicted by Bayley-Pinneau"),
                      explain: bool = Form(True, description="include the Grad-CAM heatmap"),
                      force: bool = Form(False, description="read a film the film check "
                                                            "refuses as not a hand radiograph, "
                                                            "and give the clinical call of a "
                                                            "model trained on synthetic films "
                                                            "(the answer says so)")):
        name = file.filename or "upload"
        data = await file.read(limit + 1)
        if len(data) > limit:
            raise HTTPException(413, f"{name}: upload is over the {max_upload_mb:g} MB limit")
        if not data:
            raise HTTPException(400, f"{name}: the uploaded file is empty")
        kind = sniff(data)
        if kind is None:
            raise HTTPException(415, f"{name}: not a {FORMATS} image (unrecognised content "
                                     f"{data[:8]!r})")
        try:
            if sex not in (None, ""):
                parse_sex(sex)
            age = (parse_chronological_age(chronological_age)
                   if chronological_age not in (None, "") else None)
            height = parse_height_cm(height_cm) if height_cm not in (None, "") else None
        except UsageError as exc:
            raise HTTPException(422, str(exc)) from exc
        try:
            reading, png = await run_in_threadpool(
                ensemble.predict_bytes, data, name, sex or None, age, explain, FORM, force,
                height_cm=height)
        except NotAFilmError as exc:
            return JSONResponse({"detail": str(exc), "checks": exc.checks}, status_code=422)
        except ImageError as exc:
            raise HTTPException(422, str(exc)) from exc
        except Exception:
            log.exception("%s: unexpected error reading the upload", name)
            raise HTTPException(500, f"{name}: internal error while reading the film; the "
                                     "server log has the details") from None
        body = reading.to_dict()
        body.update({"format": kind, "report": reading.text(), "sd_source": SOURCE,
                     "rule": RULE})
        if png is not None:
            body["heatmap_png"] = "data:image/png;base64," + base64.b64encode(png).decode()
        return body

    return app


def run_server(model_dirs: list[str | Path] | None, host: str = "127.0.0.1", port: int = 8000,
               model_format: str = "auto", max_upload_mb: float = 20.0,
               release_variant: str = "ensemble") -> None:
    import uvicorn

    app = create_app(model_dirs, model_format, max_upload_mb, release_variant)
    show_request_log()
    print(f"boneage: serving on http://{host}:{port}/ (API docs at /docs)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
