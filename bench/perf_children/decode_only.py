"""Films/s of decoding a films.zip on one core and one OpenCV thread: the floor the
preprocess is compared with (it must do at least this, and more).

    python bench/perf_children/decode_only.py FILMS_ZIP [cv2|pipeline]

``cv2`` (the default): ``cv2.imdecode``, what a user would write; ``pipeline``: the
pipeline's own decoder (``decoding.decode_raw``: imagecodecs for grey PNGs). Prints one JSON
line: films, films_per_s.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import zipfile

import cv2
import numpy as np


def cv2_decode(data: bytes, name: str) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("films_zip")
    parser.add_argument("decoder", nargs="?", choices=("cv2", "pipeline"), default="cv2")
    args = parser.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    cv2.setNumThreads(1)
    if args.decoder == "pipeline":
        from boneage.imaging.decoding import decode_raw as decode
    else:
        decode = cv2_decode
    archive = zipfile.ZipFile(args.films_zip)
    names = [n for n in archive.namelist() if n.endswith(".png")]
    started = time.perf_counter()
    for name in names:
        decode(archive.read(name), name)
    print(json.dumps({"films": len(names),
                      "films_per_s": len(names) / (time.perf_counter() - started)}))


if __name__ == "__main__":
    main()
