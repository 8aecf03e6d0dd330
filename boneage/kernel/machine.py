"""What this machine offers the pipeline: the cores a process may use."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's cpuset), not the
    machine's count: a pool sized by ``os.cpu_count()`` on a 2-core slice of a 64-core host
    would start 64 workers that fight over 2 cores."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1
