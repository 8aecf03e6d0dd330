"""Batches/s of a ``keras.utils.PyDataset`` that reads and resizes each batch's PNG files
with OpenCV and applies the Keras augmentation layers: the other naive input pipeline.

    python bench/perf_children/naive_pydataset.py FOLDER SIZE BATCHES

FOLDER holds the PNGs; BATCHES of 32 at SIZE px after 4 warm-up batches. Prints one JSON
line: batches_per_s.
"""

from __future__ import annotations

import glob
import json
import time

import cv2
import keras
import numpy as np
from keras_augment import augmenter, pipeline_arguments

from boneage.kernel.config import AugmentParams


class Films(keras.utils.PyDataset):
    """Batches of 32 films read from ``files``, resized to ``size`` and augmented by ``layer``."""

    def __init__(self, files: list[str], size: int, layer):
        super().__init__()
        self.files, self.size, self.layer = files, size, layer

    def __len__(self):
        return len(self.files) // 32

    def __getitem__(self, index):
        batch = [cv2.resize(cv2.imread(f, cv2.IMREAD_GRAYSCALE), (self.size, self.size))
                 for f in self.files[index * 32:(index + 1) * 32]]
        images = np.stack(batch)[..., None].astype("float32")
        return np.asarray(self.layer(images, training=True))


def main() -> None:
    args = pipeline_arguments(__doc__)
    files = sorted(glob.glob(args.folder + "/*.png"))
    data = Films(files, args.size, augmenter(AugmentParams(), 0))
    for index in range(4):
        data[index]
    started = time.perf_counter()
    for index in range(args.batches):
        data[index % len(data)]
    print(json.dumps({"batches_per_s": args.batches / (time.perf_counter() - started)}))


if __name__ == "__main__":
    main()
