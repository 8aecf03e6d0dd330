"""A process's RSS: its peak so far (VmHWM) and now, from /proc (or psutil), and a sampler."""

from __future__ import annotations

import re
import threading
from pathlib import Path

from hostile_cases.limits import MB


def _proc_status_mb(pid: int, field: str) -> float | None:
    """A ``kB`` field of /proc/<pid>/status in MB, None where /proc has none."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else None


def vm_hwm_mb(pid: int) -> float | None:
    """The process's peak RSS so far (VmHWM)."""
    return _proc_status_mb(pid, "VmHWM")


def rss_mb(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / MB
    except ImportError:
        pass
    except Exception:  # noqa: BLE001 - gone
        return None
    return _proc_status_mb(pid, "VmRSS")


class RssSampler:
    """Samples a process's RSS every 20 ms in a thread; ``peak`` is the highest seen."""

    def __init__(self, pid: int):
        self.pid, self.peak = pid, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            value = rss_mb(self.pid)
            if value is not None:
                self.peak = max(self.peak, value)
            self._stop.wait(0.02)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
