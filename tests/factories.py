"""Small data made in the tests: raw dirs and stores of generated films (no shared data)."""

from __future__ import annotations

import functools
import io
import socket
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest


def blob_film(age: float, male: int, rng: np.random.Generator, height: int = 80) -> np.ndarray:
    """A dark film with a bright blob and a number of 'bones' that grows with age (learnable)."""
    width = height * 4 // 5
    film = rng.normal(20, 4, (height, width)).clip(0, 255).astype(np.uint8)
    cv2.ellipse(film, (width // 2, height // 2), (width // 3, height // 3), 0, 0, 360, 90, -1)
    dots = int(age // 30) + 1
    for i in range(dots):
        cv2.circle(film, (width // 4 + (i % 4) * width // 8, height // 3 + (i // 4) * height // 8),
                   max(2, height // 30), 220, -1)
    return film


def hand_radiograph(age: float = 120.0, male: int = 1, seed: int = 0,
                    height: int = 200) -> np.ndarray:
    """A synthetic hand radiograph (boneage.data.phantom) that the film check accepts upright:
    what predict and serve read (a blob film is refused there as not a hand)."""
    from boneage.imaging.film_check import check_film
    from boneage.data.phantom import render_film

    for attempt in range(seed, seed + 50):
        film = render_film(age, bool(male), np.random.default_rng(attempt), height)
        check = check_film(film)
        if check.accepted and not check.inverted:
            return film
    raise AssertionError(f"no accepted phantom film for seeds {seed}..{seed + 49}")


def write_raw(directory: Path, count: int = 40, seed: int = 0, height: int = 80) -> pd.DataFrame:
    """A raw dir as the fetch stage writes it: films.zip + labels.csv + fetch-report.json."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    with zipfile.ZipFile(directory / "films.zip", "w", zipfile.ZIP_STORED) as archive:
        for i in range(count):
            age, male = float(rng.integers(1, 229)), int(rng.integers(0, 2))
            ok, png = cv2.imencode(".png", blob_film(age, male, rng, height))
            archive.writestr(f"f{i:04d}.png", png.tobytes())
            rows.append({"id": f"f{i:04d}", "boneage": age, "male": male})
    labels = pd.DataFrame(rows)
    labels.to_csv(directory / "labels.csv", index=False)
    (directory / "fetch-report.json").write_text('{"source": "test", "fingerprint": "test"}')
    return labels


def make_store(tmp_path: Path, count: int = 40, size: int = 32, seed: int = 0):
    """A packed store and train/val/test split in ``tmp_path``; returns (store_dir, split_dir)."""
    from boneage.imaging.transforms import ImagingSettings
    from boneage.data.splits import write_split
    from boneage.data.store import build_store

    labels = write_raw(tmp_path / "raw", count=count, seed=seed)
    build_store(tmp_path / "raw", tmp_path / "prepared", ImagingSettings(crop="none", size=size),
                workers=1)
    write_split(tmp_path / "split", labels, val=0.2, test=0.2, seed=1, band_months=60)
    return tmp_path / "prepared", tmp_path / "split"


def train_members(tmp_path: Path, store_dir: Path, split_dir: Path,
                  seeds: dict[str, int]) -> dict[str, Path]:
    """One-epoch tiny models (width 4, float32) trained on the store, one per name: members
    or teachers of an ensemble; returns name -> train stage output folder."""
    from boneage.kernel.config import TrainParams
    from boneage.learning.training import run_training

    for name, seed in seeds.items():
        run_training(store_dir, split_dir,
                     TrainParams(width=4, epochs=1, batch_size=8, warmup_epochs=0, seed=seed,
                                 precision="float32"), tmp_path / name)
    return {name: tmp_path / name for name in seeds}


def make_export(tmp_path: Path, count: int = 40, size: int = 32, width: int = 4, seed: int = 0,
                train_seed: int = 42,
                formats: tuple[str, ...] = ("keras", "savedmodel", "tflite"),
                imaging: dict | None = None) -> Path:
    """Train a tiny model for one epoch and export it to ``tmp_path/boneage``; returns that dir.

    ``imaging`` overrides the store's imaging settings (e.g. ``{"resize": "pad"}``).
    """
    from boneage.kernel.config import TrainParams
    from boneage.learning.evaluation import run_evaluation
    from boneage.learning.export import run_export
    from boneage.imaging.transforms import ImagingSettings
    from boneage.data.splits import write_split
    from boneage.data.store import build_store
    from boneage.learning import calibration, training

    labels = write_raw(tmp_path / "raw", count=count, seed=seed)
    build_store(tmp_path / "raw", tmp_path / "prepared",
                ImagingSettings(**{"size": size, "crop": "none", **(imaging or {})}), workers=1)
    write_split(tmp_path / "split", labels, val=0.2, test=0.2, seed=1, band_months=60)
    store_dir, split_dir = tmp_path / "prepared", tmp_path / "split"
    # The calibration guard (boneage.learning.calibration.rejections) refuses any line fitted on
    # these 8 validation films; the tests of evaluate and export need one applied.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, "fit_calibration",
                      functools.partial(calibration.fit_calibration, guard=False))
        training.run_training(
            store_dir, split_dir,
            # float32 pinned: precision auto times both policies, and for a model this
            # small the faster one can differ from run to run
            TrainParams(width=width, epochs=1, batch_size=8, warmup_epochs=0, seed=train_seed,
                        precision="float32"),
            tmp_path / "trained")
    run_evaluation(tmp_path / "trained", store_dir, split_dir, [0, 120, 240],
                   tmp_path / "metrics" / "evaluate.json", tmp_path / "plots")
    run_export(tmp_path / "trained", store_dir / "store.json", tmp_path / "metrics" / "evaluate.json",
               tmp_path / "boneage", list(formats))
    return tmp_path / "boneage"


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (held together so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


DX = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


def dx_film(pixels: np.ndarray, *, sex: str | None = "M", age: str | None = "010Y",
            study: str | None = None, **tags):
    """A grey uint8/uint16 array wrapped as a DX film (synthetic patient data)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("film.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = DX, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality, ds.BodyPartExamined = "DX", "HAND"
    ds.PatientName, ds.PatientID = "Doe^Jane", "PID-SECRET-4711"
    ds.PatientBirthDate, ds.StudyDate, ds.StudyTime = "", "20240102", "101500"
    ds.ReferringPhysicianName, ds.StudyID, ds.AccessionNumber = "", "1", "ACC1"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    if sex:
        ds.PatientSex = sex
    if age:
        ds.PatientAge = age
    if pixels is not None:
        set_pixels(ds, pixels)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    return ds


def set_pixels(ds, pixels: np.ndarray, photometric: str = "MONOCHROME2") -> None:
    """The image pixel module of one grey uint8/uint16 frame, uncompressed."""
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    bits = 16 if pixels.dtype == np.uint16 else 8
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit, ds.PixelRepresentation = bits - 1, 0
    ds.PixelData = pixels.tobytes()


def to_bytes(ds) -> bytes:
    """A data set as the bytes of a DICOM Part 10 file."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
