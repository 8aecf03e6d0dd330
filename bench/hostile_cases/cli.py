"""`boneage predict` run as a child: exit code, output, peak RSS and time."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from hostile_cases.limits import CLI_TIMEOUT_S
from hostile_cases.memory import vm_hwm_mb


def run_cli(args: list[str], model: Path, model_format: str, log: Path) -> dict:
    """`boneage predict ARGS --model MODEL` in a child; exit code, output, peak RSS, time."""
    command = [sys.executable, "-m", "boneage.interfaces.cli", "predict", *args, "--model", str(model),
               "--format", model_format]
    started = time.monotonic()
    with open(log.with_suffix(".out"), "w+b") as out, open(log.with_suffix(".err"), "w+b") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err,
                                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        peak_kb, timed_out, hwm = 0, False, None
        while True:
            # The child's own peak (VmHWM, reset at exec), polled: ru_maxrss from wait4 also
            # counts the pages of this (large) bench process at the moment the child exec'd.
            seen = vm_hwm_mb(process.pid)
            hwm = seen if hwm is None or (seen or 0) > hwm else hwm
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
            "peak_rss_mb": round(hwm if hwm is not None else peak_kb / 1024, 1),
            "ru_maxrss_mb": round(peak_kb / 1024, 1)}
