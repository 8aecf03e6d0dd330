"""A `boneage serve` child that is restarted if a case kills it, and the two ways a case
reaches it: a film POSTed to /api/predict, and a chunked upload with no length announced."""

from __future__ import annotations

import json
import re
import select
import socket
import subprocess
import time
import uuid
from pathlib import Path

from hostile_cases.judging import answer_line, first_line
from hostile_cases.limits import HTTP_TIMEOUT_S, MB


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


def post_film(url: str, path: Path, sex: str | None,
              headers: dict | None = None) -> tuple[int | None, str, dict | None]:
    """(HTTP status or None, first line of the answer or the error, JSON body or None)."""
    import httpx

    data = {}  # the heatmap stays on, as the page asks for it
    if sex:
        data["sex"] = sex
    try:
        with open(path, "rb") as f:
            response = httpx.post(f"{url}/api/predict", files={"file": (path.name, f)},
                                  data=data, headers=headers, timeout=HTTP_TIMEOUT_S)
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


def short_body(url: str, path: Path, missing: int = 100_000,
               timeout: float = HTTP_TIMEOUT_S) -> tuple[int | None, str, float, bool]:
    """POST ``path`` with a Content-Length ``missing`` bytes longer than the body sent, then
    wait: (status, first line, seconds until the answer, whether the server then closed the
    connection)."""
    parsed = re.match(r"http://([^:/]+):(\d+)", url)
    if parsed is None:
        raise ValueError(f"not an http://host:port URL: {url}")
    host, port = parsed.group(1), int(parsed.group(2))
    boundary = "stalled" + uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"sex\"\r\n\r\nM\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"{path.name}\"\r\n\r\n").encode() + path.read_bytes()
    started = time.monotonic()
    raw, closed = b"", False
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall((f"POST /api/predict HTTP/1.1\r\nHost: {host}:{port}\r\n"
                      f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                      f"Content-Length: {len(body) + missing}\r\n\r\n").encode() + body)
        try:
            while True:
                piece = sock.recv(65536)
                if not piece:
                    closed = True
                    break
                raw += piece
        except OSError:
            pass
    seconds = time.monotonic() - started
    match = re.match(rb"HTTP/1\.[01] (\d{3})", raw)
    status = int(match.group(1)) if match else None
    text = raw.split(b"\r\n\r\n", 1)[1].decode("utf-8", "replace") if b"\r\n\r\n" in raw else ""
    try:
        line = first_line(str(json.loads(text).get("detail", text)))
    except (ValueError, AttributeError):
        line = first_line(text) or "no answer"
    return status, line, round(seconds, 2), closed
