"""Distillation: the teach stage's readings of the training films, and a student whose targets
blend them with the labels (train.distill_weight)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from factories import make_store, train_members

from boneage.data.splits import read_ids
from boneage.kernel.artifacts import SPLIT_FILES
from boneage.kernel.config import TrainParams
from boneage.kernel.errors import DataError, ParamsError
from boneage.learning.distillation import blend_targets, read_teacher_targets


def test_blended_targets_follow_the_ids_and_the_weight():
    teacher = pd.Series({"a": 100.0, "b": 50.0, "c": 10.0})
    labels = np.array([20.0, 120.0])  # for ids c, a
    assert blend_targets(["c", "a"], labels, teacher, 0.5).tolist() == [15.0, 110.0]
    assert blend_targets(["c", "a"], labels, teacher, 0.0).tolist() == [20.0, 120.0]
    assert blend_targets(["c", "a"], labels, teacher, 1.0).tolist() == [10.0, 100.0]
    with pytest.raises(DataError, match=r"1 training film.*'z'"):
        blend_targets(["a", "z"], labels, teacher, 0.5)
    with pytest.raises(ValueError, match="distill_weight"):
        blend_targets(["a"], labels[:1], teacher, 1.5)


def test_a_bad_teacher_file_names_its_row(tmp_path):
    with pytest.raises(DataError, match="run the teach stage"):
        read_teacher_targets(tmp_path)
    path = tmp_path / "targets.csv"
    path.write_text("id,boneage,teacher\n001,10,12.5\n002,20,oops\n")
    with pytest.raises(DataError, match=r"row 3 \(id 002\)"):
        read_teacher_targets(path)
    path.write_text("id,boneage,teacher\n001,10,12.5\n002,20,21\n")
    assert read_teacher_targets(tmp_path).to_dict() == {"001": 12.5, "002": 21.0}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("distil")
    store, split = make_store(tmp, count=80, size=32)
    train_members(tmp, store, split, {"a": 1, "b": 2})
    return tmp, store, split


@pytest.mark.slow
def test_the_teachers_read_the_training_films_only_and_average(tiny):
    from boneage.data.store import open_store
    from boneage.learning.evaluation import predict_store
    from boneage.learning.export import exportable_model
    from boneage.learning.teachers import teacher_targets, write_teacher_targets

    tmp, store, split = tiny
    targets = teacher_targets({"a": tmp / "a", "b": tmp / "b"}, store, split)
    train_ids = read_ids(split / SPLIT_FILES["train"])
    assert targets["id"].tolist() == train_ids  # never a validation or test film
    each = [predict_store(exportable_model(tmp / name)[0], open_store(store), train_ids)
            ["predicted"].to_numpy() for name in "ab"]
    np.testing.assert_allclose(targets["teacher"], np.mean(each, axis=0), rtol=1e-5)
    np.testing.assert_allclose(targets["spread"], np.std(each, axis=0), rtol=1e-4, atol=1e-4)
    written = read_teacher_targets(write_teacher_targets(targets, tmp / "teacher"))
    np.testing.assert_allclose(written.loc[train_ids], targets["teacher"], atol=1e-4)


@pytest.mark.slow
def test_the_student_learns_the_blended_targets_and_validates_on_labels(tiny):
    """Teachers that read every film 60 months older: a student with distill_weight 1 learns
    them (its readings sit ~60 months above the labels), with 0.5 about half that; its
    validation MAE is still against the labels."""
    from boneage.data.store import open_store
    from boneage.learning.training import predict_films, train

    tmp, store_dir, split = tiny
    store = open_store(store_dir)
    train_ids = read_ids(split / SPLIT_FILES["train"])
    val_ids = read_ids(split / SPLIT_FILES["val"])
    labels = store.select(train_ids).set_index("id")["boneage"].astype(float)
    older = labels + 60.0
    rows = store.select(val_ids)

    def offset(weight: float, teacher=older):
        params = TrainParams(width=4, epochs=2, batch_size=8, warmup_epochs=0, seed=3,
                             precision="float32", distill_weight=weight)
        result = train(store, train_ids, val_ids, params, out_dir=tmp / f"student{weight}",
                       verbose=0, teacher=teacher)
        read = predict_films(result.model, store.images, rows["row"].to_numpy(),
                             rows["male"].to_numpy(float))
        val_mae = np.abs(read - rows["boneage"].to_numpy(float)).mean()
        return float(np.mean(read - rows["boneage"].to_numpy(float))), val_mae, result

    full, full_mae, result = offset(1.0)
    half, _, _ = offset(0.5)
    assert 40 < full < 80, full
    assert 15 < half < 45 and half < full - 10, (half, full)
    assert min(result.history["val_mae"]) == pytest.approx(full_mae, rel=0.02, abs=0.5)

    with pytest.raises(ParamsError, match="no teacher targets"):
        offset(0.5, teacher=None)
    with pytest.raises(ParamsError, match="distill_weight is 0"):
        offset(0.0)


@pytest.mark.slow
def test_a_student_weighs_its_films_by_their_labelled_age(tiny, monkeypatch):
    """train.age_weighting makes rare ages count more: the rarity is the label's, not the
    blended target's (teachers 60 months off would move every film to another band)."""
    from boneage.data.store import open_store
    from boneage.learning import training

    tmp, store_dir, split = tiny
    store = open_store(store_dir)
    train_ids = read_ids(split / SPLIT_FILES["train"])
    labels = store.select(train_ids).set_index("id")["boneage"].astype(float)
    seen = []
    real = training.age_weights

    def recording(ages, kind):
        seen.append(np.asarray(ages, float).copy())
        return real(ages, kind)

    monkeypatch.setattr(training, "age_weights", recording)
    params = TrainParams(width=4, epochs=1, batch_size=8, warmup_epochs=0, seed=3,
                         precision="float32", distill_weight=0.5,
                         age_weighting="inverse_density")
    training.train(store, train_ids, read_ids(split / SPLIT_FILES["val"]), params,
                   out_dir=tmp / "weighted", verbose=0, teacher=labels + 60.0)
    np.testing.assert_allclose(seen[-1], labels.loc[train_ids].to_numpy())
