"""Films/s and peak memory of the preprocess stage's ``build_store`` on a fetched raw folder.

    python bench/perf_children/build_store.py RAW OUT WORKERS SETTINGS_JSON ONE_CORE

WORKERS as ``build_store`` takes it (0: one per usable core); SETTINGS_JSON an
``ImagingSettings`` dict; ONE_CORE 1 pins the process (and its pool) to one core with one
OpenCV thread, before OpenCV is imported, 0 leaves every core. Prints one JSON line: films,
films_per_s, main_rss_mb (the main process's ``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("raw")
    parser.add_argument("out")
    parser.add_argument("workers", type=int)
    parser.add_argument("settings", help="ImagingSettings as JSON")
    parser.add_argument("one_core", type=int, choices=(0, 1))
    args = parser.parse_args()
    one_core = args.one_core == 1
    if one_core:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    import cv2

    if one_core:
        cv2.setNumThreads(1)
    from boneage.imaging.transforms import ImagingSettings
    from boneage.data.store import build_store

    settings = ImagingSettings.from_dict(json.loads(args.settings))
    started = time.perf_counter()
    summary = build_store(args.raw, args.out, settings, workers=args.workers, on_error="fail")
    seconds = time.perf_counter() - started
    print(json.dumps({"films": summary["n_films"], "films_per_s": summary["n_films"] / seconds,
                      "main_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":
    main()
