"""Multi-worker training: two real worker processes on 127.0.0.1 train the compact model with
MultiWorkerMirroredStrategy and must end with the same weights and a falling loss."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from factories import free_ports, make_store

from boneage.kernel.config import TrainParams
from boneage.learning.distributed import compare
from boneage.learning.recipe import peak_lr
from boneage.learning.training import make_strategy

ROOT = Path(__file__).resolve().parents[1]


def test_lr_scales_with_replicas_only_when_asked():
    assert peak_lr(TrainParams(lr=0.002), 4) == pytest.approx(0.008)
    assert peak_lr(TrainParams(lr=0.002, scale_lr=False), 4) == pytest.approx(0.002)
    assert peak_lr(TrainParams(lr=0.002), 1) == pytest.approx(0.002)


def test_multi_worker_without_tf_config_says_what_to_set(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        make_strategy("multi_worker")


def test_distribute_is_validated(tmp_path):
    from boneage.kernel.config import ParamsError, load_section

    with pytest.raises(ParamsError, match="train.distribute"):
        load_section("train", _params_file(tmp_path, {"distribute": "horovod"}))


def _params_file(directory: Path, train: dict) -> Path:
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump({"train": train}))
    return path


@pytest.mark.slow
def test_two_workers_end_with_identical_weights_and_a_falling_loss(tmp_path):
    store_dir, split_dir = make_store(tmp_path, count=48, size=32)
    no_augment = dict(rotation_degrees=0, shift=0, zoom=0, brightness=0, contrast=0)
    params = _params_file(tmp_path, dict(
        width=4, epochs=3, batch_size=8, lr=0.003, lr_schedule="constant", warmup_epochs=0,
        early_stopping_patience=0, distribute="multi_worker", augment=no_augment))
    out = tmp_path / "out"
    hosts = [f"127.0.0.1:{port}" for port in free_ports(2)]
    workers = []
    for index in range(2):
        tf_config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TF_CPP_MIN_LOG_LEVEL": "2",
               "CUDA_VISIBLE_DEVICES": ""}
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "boneage.learning.distributed", "--params", str(params),
             "--store", str(store_dir), "--split", str(split_dir), "--out", str(out)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for worker in workers:
            outputs.append(worker.communicate(timeout=600)[0])
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 0, output[-4000:]
    # Each worker took 8 films per step: a global batch of 16 and lr scaled to 2 x 0.003.
    assert "2 replicas (multi_worker): global batch 16, peak lr 0.006" in outputs[0]

    assert sorted(p.name for p in out.glob("*.npz")) == ["worker-0.npz", "worker-1.npz"]
    assert compare(out) == 0.0  # every weight, moving batch-norm statistics included
    infos = [json.loads((out / f"worker-{i}.json").read_text()) for i in range(2)]
    assert all(info["replicas"] == 2 for info in infos)
    assert infos[0]["history"] == infos[1]["history"]
    loss = infos[0]["history"]["loss"]
    assert len(loss) == 3 and loss[-1] < loss[0], loss

    # Only the chief (worker 0) wrote the train stage's outputs.
    assert (out / "model" / "model.keras").is_file()
    summary = json.loads((out / "model" / "training.json").read_text())
    assert summary["replicas"] == 2 and summary["params"]["distribute"] == "multi_worker"
    assert (out / "live" / "metrics.json").is_file()


@pytest.mark.slow
def test_mirrored_strategy_runs_the_stage_with_its_callbacks(tmp_path):
    """The replicated loop (one CPU replica here) keeps fit's logs, early stopping and the
    plateau schedule, and saves a plain model (batch-norm sync switched off again)."""
    import keras

    from boneage.kernel.artifacts import TRAINED_MODEL, TRAINING_SUMMARY
    from boneage.learning.training import run_training

    store_dir, split_dir = make_store(tmp_path, count=40, size=32)
    params = TrainParams(width=4, epochs=4, batch_size=8, warmup_epochs=0, distribute="mirrored",
                         early_stopping_patience=1, lr_schedule="plateau")
    result = run_training(store_dir, split_dir, params, tmp_path / "out", tmp_path / "live")
    assert {"loss", "mae", "val_loss", "val_mae"} <= set(result.history)
    assert result.best_epoch == 1 + min(range(len(result.history["val_mae"])),
                                        key=result.history["val_mae"].__getitem__)
    summary = json.loads((tmp_path / "out" / TRAINING_SUMMARY).read_text())
    assert summary["replicas"] == 1 and summary["params"]["distribute"] == "mirrored"
    model = keras.saving.load_model(tmp_path / "out" / TRAINED_MODEL)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and not any(layer.synchronized for layer in norms)
    assert (tmp_path / "live" / "plots" / "metrics" / "eval" / "mae.tsv").is_file()
