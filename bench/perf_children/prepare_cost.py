"""CPU seconds a film of what the preprocess does to it (``decoding.read_film`` then
``imaging.prepare``) at several sizes, and of ``cv2.imdecode`` alone, on one core and one
OpenCV thread: the per-film cost the scaling estimates multiply up.

    python bench/perf_children/prepare_cost.py FOLDER SETTINGS_JSON SIZES

FOLDER holds the PNGs; SETTINGS_JSON an ``ImagingSettings`` dict whose size each of SIZES
(comma-separated px) replaces. Prints one JSON line: seconds a film by size, and "decode".
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import time

import cv2
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder")
    parser.add_argument("settings", help="ImagingSettings as JSON")
    parser.add_argument("sizes", help="comma-separated sizes in px")
    args = parser.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    cv2.setNumThreads(1)
    from boneage.imaging.decoding import read_film
    from boneage.imaging.transforms import ImagingSettings, prepare

    files = sorted(glob.glob(args.folder + "/*.png"))
    data = []
    for file in files:
        with open(file, "rb") as handle:
            data.append(handle.read())
    base = json.loads(args.settings)
    out = {}
    for size in map(int, args.sizes.split(",")):
        settings = ImagingSettings.from_dict({**base, "size": size})
        prepare(read_film(data[0]), settings)
        started = time.process_time()
        for item in data:
            prepare(read_film(item), settings)
        out[str(size)] = (time.process_time() - started) / len(data)
    started = time.process_time()
    for item in data:
        cv2.imdecode(np.frombuffer(item, np.uint8), cv2.IMREAD_UNCHANGED)
    out["decode"] = (time.process_time() - started) / len(data)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
