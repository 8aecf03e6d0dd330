"""The naive way to augment, shared by the naive input pipelines (naive_directory.py,
naive_pydataset.py): the Keras augmentation layers, same ranges as recipe.augment_films, so
the comparison with ``make_dataset`` is of the pipeline and not of what it computes."""

from __future__ import annotations

import argparse

import keras


def pipeline_arguments(doc: str) -> argparse.Namespace:
    """``FOLDER SIZE BATCHES``, the command line of both naive pipelines."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder")
    parser.add_argument("size", type=int)
    parser.add_argument("batches", type=int)
    return parser.parse_args()


def augmenter(params, seed: int) -> keras.Sequential | None:
    """The augmentation layers a Keras user would stack for ``params`` (an AugmentParams)."""
    steps = []
    if params.horizontal_flip:
        steps.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if params.rotation_degrees:
        steps.append(keras.layers.RandomRotation(params.rotation_degrees / 360.0,
                                                 fill_mode="constant", seed=seed + 1))
    if params.shift:
        steps.append(keras.layers.RandomTranslation(params.shift, params.shift,
                                                    fill_mode="constant", seed=seed + 2))
    if params.zoom:
        steps.append(keras.layers.RandomZoom(params.zoom, fill_mode="constant", seed=seed + 3))
    if params.brightness:
        steps.append(keras.layers.RandomBrightness(params.brightness, value_range=(0, 255),
                                                   seed=seed + 4))
    if params.contrast:
        steps.append(keras.layers.RandomContrast(params.contrast, value_range=(0, 255),
                                                 seed=seed + 5))
    return keras.Sequential(steps, name="augment") if steps else None
