"""Shared helpers for the predict/serve benchmarks: films to read and a `boneage serve` child."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / \
    "rsna-bone-age-fullres-sample" / "boneage-training-dataset"


def films(count: int = 24) -> tuple[list[tuple[str, bytes]], str]:
    """Full-resolution RSNA sample films when the shared folder is there, else synthetic
    phantom films; returns ([(name, bytes)], description)."""
    if SAMPLE.is_dir():
        paths = sorted(SAMPLE.glob("*.png"))[:count]
        if paths:
            return [(p.name, p.read_bytes()) for p in paths], \
                f"{len(paths)} full-resolution RSNA sample films ({SAMPLE.parent.name})"
    import cv2
    import numpy as np

    from boneage.data.phantom import render_film

    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        film = render_film(float(rng.uniform(12, 216)), bool(i % 2), rng, height=1024)
        ok, png = cv2.imencode(".png", film)
        out.append((f"synthetic{i}.png", png.tobytes()))
    return out, f"{count} synthetic phantom films"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: Path, model_format: str = "auto", nice: bool = True,
                 args: tuple[str, ...] = (), log: Path | None = None):
    """Start `boneage serve` on a free loopback port; returns (process, url) once healthy.

    ``args`` are added to the command line (e.g. ``("--max-upload-mb", "1")``); ``log``
    receives the server's output (else it is discarded).
    """
    import httpx

    port = free_port()
    command = [sys.executable, "-m", "boneage.interfaces.cli", "serve", "--model", str(model),
               "--port", str(port), "--format", model_format, *args]
    output = open(log, "ab") if log is not None else subprocess.DEVNULL
    try:
        process = subprocess.Popen(command, stdout=output, stderr=output,
                                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    finally:
        if log is not None:
            output.close()  # the child holds its own copy
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"boneage serve exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError("boneage serve did not start within 180 s")
