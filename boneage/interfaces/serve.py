"""``boneage serve``: a page to drop a radiograph on, and a JSON API, over exported models.

Models load once at start; each prediction runs in the thread pool so the event loop keeps
answering (health checks, other uploads) while a film is read. Uploads are checked before
any decoding: size limit (counted as the body streams in, so a chunked upload without a
Content-Length is cut off too), magic bytes (:data:`boneage.imaging.headers.FORMATS`), and the image
header's width and height (so a 20,000 px "film" is refused without decoding it). Every
refusal is a 4xx with ``{"detail": "<one string>", "code": "<short code>"}`` naming what is
wrong (plus the fields a program needs: ``errors`` per form field, ``checks`` for the film
check); anything unexpected is a JSON 500 with a generic message (the traceback goes to the
log); the server keeps serving.

Limits a hostile client (or a web page in someone's browser) could otherwise push past
(issue 22), each an option of ``boneage serve`` (docs/serving.md):

* a request from a browser page of another origin (``Origin``, or ``Sec-Fetch-Site:
  cross-site``) is refused with 403 before its body is read; ``--allow-origin`` opens the API
  to a named site, with CORS headers (:class:`OriginGuard`);
* a body that stalls or stops short of its Content-Length gets 408 after ``--body-timeout``
  seconds and its connection is closed (:class:`BodyDeadline`);
* at most ``--max-decoding`` films are decoded and read at once (a film over 25 M px takes
  every slot: it is read alone); the others wait up to ``--queue-timeout`` seconds for a
  slot, then get 503 with ``Retry-After``.

Every request gets one line in the request log (logger ``boneage.requests``, on stderr): time,
client, method, path, status, body size and milliseconds; never a file name or a form field,
which may name a patient. The API docs at ``/docs`` and ``/redoc`` load Swagger UI and ReDoc
from the installed ``fastapi-offline`` package, so they work without internet access.
"""

# No `from __future__ import annotations`: FastAPI resolves the endpoint annotations at
# definition time, and they name classes imported inside create_app.

import asyncio
import base64
import logging
import sys
import time
from pathlib import Path

from boneage.kernel.errors import ImageError, NotAFilmError, UsageError

log = logging.getLogger(__name__)
requests_log = logging.getLogger("boneage.requests")

PAGE = Path(__file__).with_name("static") / "index.html"  # the web page: HTML + JavaScript
MB = 1024 * 1024

MAX_DECODING = 2  # films decoded and read at once: each may take a few hundred MB transiently
QUEUE_TIMEOUT_S = 15.0  # how long an upload waits for a decoding slot before a 503
BODY_TIMEOUT_S = 30.0  # the whole request body must arrive within this, else 408
RETRY_AFTER_S = 5  # what a 503 asks the client to wait

# The short, machine-readable code of each error answer, beside its `detail` sentence.
CODES = {400: "bad_request", 403: "cross_origin", 404: "not_found", 405: "method_not_allowed",
         408: "body_timeout", 413: "too_large", 415: "unsupported_format",
         422: "unreadable", 500: "internal", 503: "busy"}


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or []:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


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
            return await JSONResponse({"detail": detail, "code": CODES[413]},
                                      status_code=413)(scope, receive, send)
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


class OriginGuard:
    """ASGI middleware: a browser request made by a page of another origin is refused with 403
    before its body is read, so no web page can make the server decode a film.

    Browsers send ``Origin`` with every cross-origin request (and with same-origin POSTs) and
    ``Sec-Fetch-Site`` with every request; programs (curl, httpx, the hostile bench) send
    neither and are not affected. A request is refused when its ``Origin`` is neither this
    server's own (scheme and ``Host``) nor one of ``allowed``; or, without an ``Origin``,
    when it is not a GET/HEAD and ``Sec-Fetch-Site`` says ``cross-site`` or ``same-site``.
    A cross-site link to the page (a GET navigation) still opens it.
    """

    def __init__(self, app, allowed: frozenset[str] = frozenset()):
        self.app, self.allowed = app, allowed

    def foreign(self, scope) -> str | None:
        """Why the request comes from another origin; None when it does not."""
        origin = _header(scope, b"origin")
        if origin is not None:
            origin = origin.strip().rstrip("/")
            own = f"{scope.get('scheme', 'http')}://{_header(scope, b'host') or ''}"
            if origin == own or origin in self.allowed:
                return None
            return f"a page of another origin ({origin[:100]})"
        site = (_header(scope, b"sec-fetch-site") or "").strip().lower()
        if site in ("cross-site", "same-site") and scope.get("method") not in ("GET", "HEAD"):
            return f"a page of another site (Sec-Fetch-Site: {site})"
        return None

    async def __call__(self, scope, receive, send):
        from starlette.responses import JSONResponse

        if scope["type"] == "http":
            why = self.foreign(scope)
            if why is not None:
                detail = (f"refused: this request was made by {why}; the server answers its own "
                          "page and programs only (start it with --allow-origin ORIGIN to "
                          "open the API to a site)")
                response = JSONResponse({"detail": detail, "code": CODES[403]}, status_code=403,
                                        headers={"Connection": "close"})
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


class BodyDeadline:
    """ASGI middleware: the request body must arrive within ``seconds`` of the request, else 408
    and the connection is closed. A body that stalls, or stops short of its Content-Length,
    would otherwise hold its connection (and the form parser waiting on it) for ever."""

    def __init__(self, app, seconds: float):
        self.app, self.seconds = app, seconds

    async def __call__(self, scope, receive, send):
        from starlette.exceptions import HTTPException

        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        deadline = time.monotonic() + self.seconds
        done = False

        async def timed():
            nonlocal done
            if done:  # the body is in: waiting for a disconnect is not a body read
                return await receive()
            try:
                message = await asyncio.wait_for(receive(),
                                                 max(deadline - time.monotonic(), 0.001))
            except asyncio.TimeoutError:
                raise HTTPException(408, f"the request body did not arrive within "
                                         f"{self.seconds:g} s (stalled, or shorter than its "
                                         "Content-Length); send it again",
                                    headers={"Connection": "close"}) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                done = True
            return message

        await self.app(scope, timed, send)


class Slots:
    """``total`` decoding slots; a film takes one, or all of them (a large film), waiting its
    turn in order of arrival (an asyncio.Condition: taking several at once is atomic, so two
    large films cannot each hold half and wait for ever)."""

    def __init__(self, total: int):
        self.total, self.used = total, 0
        self._changed = asyncio.Condition()

    async def acquire(self, count: int = 1) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.used + count <= self.total)
            self.used += count

    def release(self, count: int = 1) -> None:
        self.used -= count

        async def wake() -> None:
            async with self._changed:
                self._changed.notify_all()

        asyncio.get_running_loop().create_task(wake())


def _large(data: bytes, kind: str) -> bool:
    """Whether an upload's header says it is over READ_PIXELS (images; a DICOM is reduced as
    it inflates, so its decoding stays small)."""
    from boneage.imaging.headers import HEADER_READERS, READ_PIXELS

    reader = HEADER_READERS.get(kind)
    size = reader(data) if reader is not None else None
    return size is not None and size[0] * size[1] > READ_PIXELS


def create_app(model_dirs: list[str | Path] | None, model_format: str = "auto",
               max_upload_mb: float = 20.0, release_variant: str = "ensemble", *,
               max_decoding: int = MAX_DECODING, queue_timeout: float = QUEUE_TIMEOUT_S,
               body_timeout: float = BODY_TIMEOUT_S,
               allow_origins: list[str] | tuple[str, ...] = ()):
    """The FastAPI app with its models loaded (and warmed up) once: the exports in
    ``model_dirs``, or without any, the release that ships with boneage."""
    import numpy as np
    from fastapi import File, Form, HTTPException, Request, UploadFile
    from fastapi.concurrency import run_in_threadpool
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from fastapi_offline import FastAPIOffline
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from boneage import __version__
    from boneage.imaging.headers import FORMATS, sniff
    from boneage.reading.inputs import parse_chronological_age, parse_height_cm, parse_sex
    from boneage.reading.predictor import FORM, Ensemble
    from boneage.reading.standards import RULE, SOURCE

    if not 0 < max_upload_mb < float("inf"):  # also refuses nan
        raise ValueError(f"max_upload_mb must be a size in MB above 0, got {max_upload_mb!r}")
    if int(max_decoding) != max_decoding or max_decoding < 1:
        raise ValueError(f"max_decoding must be a whole number of films >= 1, got "
                         f"{max_decoding!r}")
    for label, value in (("queue_timeout", queue_timeout), ("body_timeout", body_timeout)):
        if not 0 < value < float("inf"):
            raise ValueError(f"{label} must be a number of seconds above 0, got {value!r}")
    origins = frozenset(check_origin(origin) for origin in allow_origins)
    # auto: TFLite through LiteRT where every model has the file, as predict and the DICOM
    # commands read it (the release: 57 ms a film against Keras's 105 in
    # bench/release_report.py; an export: 35 against SavedModel's 39.5 in
    # bench/predict_latency.py); Grad-CAM still reads the Keras files
    from boneage.learning.runtimes import resolve_format

    if model_dirs:
        model_dirs = [Path(d) for d in model_dirs]
        chosen = resolve_format(model_dirs, model_format)
        ensemble = Ensemble(model_dirs, model_format=chosen)
    else:
        from boneage.reading.release import load_release

        choice = load_release(release_variant)
        chosen = resolve_format(choice.model_dirs, model_format)
        ensemble = Ensemble.from_choice(choice, chosen)
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
    app.add_middleware(BodyDeadline, seconds=body_timeout)
    if origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=sorted(origins),
                           allow_methods=["GET", "POST"], allow_headers=["*"], max_age=600)
    app.add_middleware(OriginGuard, allowed=origins)  # added last: runs first
    slots = Slots(max_decoding)
    app.add_middleware(RequestLog)  # outermost: also logs what BodyLimit refuses

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        # JSON like every other answer (the page shows `detail`), never a plain-text 500;
        # what went wrong is for the log, not for the client.
        log.error("unexpected error answering %s %s", request.method, request.url.path,
                  exc_info=exc)
        return JSONResponse({"detail": "internal error while answering; the server log has "
                                       "the details", "code": CODES[500]}, status_code=500)

    @app.exception_handler(StarletteHTTPException)
    async def refused(request: Request, exc: StarletteHTTPException):
        # One string in `detail` always, and a short code a program can switch on.
        return JSONResponse({"detail": str(exc.detail),
                             "code": CODES.get(exc.status_code, "error")},
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        # FastAPI's own answer is a list that echoes what was sent (an upload object's repr
        # included): one sentence instead, and per field what is wrong.
        errors = [field_error(error) for error in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['problem']}" for e in errors) or "invalid request"
        return JSONResponse({"detail": detail, "code": "invalid_field", "errors": errors},
                            status_code=422)

    page_html = PAGE.read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return page_html

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "models": [str(d) for d in model_dirs], "format": chosen,
                "model": ensemble.identity, "max_upload_mb": max_upload_mb,
                "max_decoding": max_decoding,
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
            field = "sex" if str(exc).startswith("sex") else "chronological_age"
            return JSONResponse({"detail": str(exc), "code": "invalid_field",
                                 "errors": [{"field": field, "problem": str(exc)}]},
                                status_code=422)
        # A bounded number of films in decoding at once: the rest wait, then 503. A film over
        # READ_PIXELS (its header says) takes every slot: it is read alone.
        weight = max_decoding if _large(data, kind) else 1
        try:
            await asyncio.wait_for(slots.acquire(weight), queue_timeout)
        except asyncio.TimeoutError:
            return JSONResponse(
                {"detail": f"{name}: the server is reading {max_decoding} other film(s) and "
                           f"none finished within {queue_timeout:g} s; send it again in "
                           f"{RETRY_AFTER_S} s", "code": CODES[503],
                 "retry_after_s": RETRY_AFTER_S},
                status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})
        try:
            # Not cancelled half-way: anyio waits for the thread, so the slot is held while
            # the film is in memory.
            reading, png = await run_in_threadpool(
                ensemble.predict_bytes, data, name, sex or None, age, explain, FORM, force,
                height_cm=height)
        except NotAFilmError as exc:
            return JSONResponse({"detail": str(exc), "code": "not_a_film", "checks": exc.checks},
                                status_code=422)
        except ImageError as exc:
            raise HTTPException(422, str(exc)) from exc
        except Exception:
            log.exception("%s: unexpected error reading the upload", name)
            raise HTTPException(500, f"{name}: internal error while reading the film; the "
                                     "server log has the details") from None
        finally:
            slots.release(weight)
        body = reading.to_dict()
        body.update({"format": kind, "report": reading.text(), "sd_source": SOURCE,
                     "rule": RULE})
        if png is not None:
            body["heatmap_png"] = "data:image/png;base64," + base64.b64encode(png).decode()
        return body

    return app


def check_origin(origin: str) -> str:
    """An ``--allow-origin`` value: scheme://host[:port], as a browser sends it in ``Origin``."""
    import re

    text = str(origin).strip().rstrip("/")
    if not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+", text):
        raise UsageError(f"--allow-origin {origin!r}: give an origin as a browser sends it, "
                         "scheme://host[:port] (e.g. https://pacs.example.org), no path")
    return text


FIELD_WORDS = {
    "missing": "missing",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be text",
}


def field_error(error: dict) -> dict:
    """One FastAPI validation error as {"field": ..., "problem": ...}, in words, without the
    value that was sent (it may be large, or an object's internals)."""
    location = [str(part) for part in error.get("loc", ()) if part not in ("body", "query")]
    field = ".".join(location) or "request"
    kind = str(error.get("type", ""))
    if field == "file" and kind != "missing":
        problem = "not a file: send the film as a multipart file field named 'file'"
    elif field == "file":
        problem = "missing: send the film as a multipart file field named 'file'"
    else:
        problem = FIELD_WORDS.get(kind)
        if problem is None:
            message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
            problem = message.split(",")[0][:120]
    return {"field": field, "problem": problem}


def run_server(model_dirs: list[str | Path] | None, host: str = "127.0.0.1", port: int = 8000,
               model_format: str = "auto", max_upload_mb: float = 20.0,
               release_variant: str = "ensemble", **limits) -> None:
    """Bind ``host:port`` first (a busy port is a one-line error before any model loads or
    anything says "serving"), then load the models and serve. ``limits``: the keyword
    options of :func:`create_app` (max_decoding, queue_timeout, body_timeout, allow_origins)."""
    import socket

    import uvicorn

    from boneage.kernel.errors import SetupError

    try:
        address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(address[0], socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address[4])
    except OSError as exc:
        raise SetupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; is another "
                         "server running there? choose another --port") from None
    try:
        app = create_app(model_dirs, model_format, max_upload_mb, release_variant, **limits)
        show_request_log()
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        shown = f"[{host}]" if ":" in host else host
        print(f"boneage: serving on http://{shown}:{port}/ (API docs at /docs)", flush=True)
        server.run(sockets=[sock])
    finally:
        sock.close()
