"""Which exported file reads a film (boneage.learning.runtimes): TFLite through LiteRT where
every model has it, else Keras; and LiteRT's reading equals Keras's on a real export."""

import pytest

from boneage.kernel.errors import UsageError
from boneage.learning import runtimes
from boneage.learning.runtimes import needs_tensorflow, resolve_format


def export_folders(tmp_path, *, tflite: list[bool]):
    folders = []
    for index, has_tflite in enumerate(tflite):
        folder = tmp_path / f"m{index}"
        folder.mkdir(parents=True)
        (folder / "model.keras").write_bytes(b"k")
        if has_tflite:
            (folder / "model.tflite").write_bytes(b"t")
        folders.append(folder)
    return folders


def test_auto_reads_tflite_only_where_every_model_has_it(tmp_path):
    assert resolve_format(export_folders(tmp_path / "all", tflite=[True, True])) == "tflite"
    assert resolve_format(export_folders(tmp_path / "one", tflite=[True, False])) == "keras"
    assert resolve_format(export_folders(tmp_path / "none", tflite=[False])) == "keras"


def test_auto_falls_back_to_keras_without_litert(tmp_path, monkeypatch):
    folders = export_folders(tmp_path, tflite=[True])
    monkeypatch.setattr(runtimes, "litert_available", lambda: False)
    assert resolve_format(folders) == "keras"
    assert needs_tensorflow("tflite")  # tf.lite reads it then


def test_a_named_format_is_kept_and_a_wrong_one_refused(tmp_path):
    folders = export_folders(tmp_path, tflite=[True])
    assert resolve_format(folders, "savedmodel") == "savedmodel"
    assert resolve_format(folders, "keras") == "keras"
    with pytest.raises(UsageError, match="onnx"):
        resolve_format(folders, "onnx")
    assert not needs_tensorflow("tflite") and needs_tensorflow("keras")
