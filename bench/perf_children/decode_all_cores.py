"""Films/s of ``cv2.imdecode`` over a films.zip in one process per usable core, each pinned
to its core: what this machine allows for decoding alone, the ceiling for the preprocess.

    python bench/perf_children/decode_all_cores.py FILMS_ZIP

Prints one JSON line: films, processes, films_per_s.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
import zipfile

import cv2
import numpy as np


def work(core: int, films_zip: str, names: list[str]) -> None:
    os.sched_setaffinity(0, {core})
    archive = zipfile.ZipFile(films_zip)
    for name in names:
        cv2.imdecode(np.frombuffer(archive.read(name), np.uint8), cv2.IMREAD_UNCHANGED)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("films_zip")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    cores = sorted(os.sched_getaffinity(0))
    names = [n for n in zipfile.ZipFile(args.films_zip).namelist() if n.endswith(".png")]
    started = time.perf_counter()
    processes = [multiprocessing.Process(target=work,
                                         args=(core, args.films_zip, names[i::len(cores)]))
                 for i, core in enumerate(cores)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    print(json.dumps({"films": len(names), "processes": len(cores),
                      "films_per_s": len(names) / (time.perf_counter() - started)}))


if __name__ == "__main__":
    main()
