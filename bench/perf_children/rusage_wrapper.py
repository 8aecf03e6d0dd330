"""Runs a command and reports the peak RSS of its largest process, for bench/perf.py.

    python bench/perf_children/rusage_wrapper.py COMMAND [ARG ...]

Every timed child runs under this wrapper: ``RUSAGE_CHILDREN`` of the wrapper is the largest
``ru_maxrss`` among the processes it waited for (the command and whatever that command waited
for), which a sampler polling from outside can miss. The command's stdout and stderr pass
through; the last stderr line is ``@@rss {"code": ..., "max_single_rss_mb": ...}``.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys


def main() -> None:
    code = subprocess.run(sys.argv[1:]).returncode
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print("@@rss " + json.dumps({"code": code, "max_single_rss_mb": usage.ru_maxrss / 1024}),
          file=sys.stderr)


if __name__ == "__main__":
    main()
