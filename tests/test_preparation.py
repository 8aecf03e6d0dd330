"""Films read up to the models' input ahead of the models: the bounded background Prefetch,
prepare_paths' per-film errors, and `boneage predict` preparing a folder while TensorFlow
imports, with the same readings as preparing film by film."""

import json
import threading
import time

import cv2
import numpy as np
import pytest
from factories import hand_radiograph, make_export

from boneage.interfaces import cli
from boneage.reading.preparation import FilmPreparation, Prefetch, card_settings


def test_prefetch_yields_every_item_in_order_and_runs_at_most_its_limit_ahead():
    produced = []

    def items():
        for index in range(50):
            produced.append(index)
            yield index

    with Prefetch(items(), limit=4) as prefetch:
        time.sleep(0.3)  # the producer fills the queue, then waits for the consumer
        ahead = len(produced)
        seen = list(prefetch)
    assert seen == list(range(50))
    # 4 in the queue and one more in the producer's hand, never the whole list
    assert 4 <= ahead <= 5, ahead


def test_prefetch_raises_the_producers_error_in_the_consumer():
    def items():
        yield 1
        raise ValueError("film 2: broken")

    with pytest.raises(ValueError, match="film 2: broken"):
        with Prefetch(items(), limit=2) as prefetch:
            assert list(prefetch) == [1]


def test_prefetch_close_stops_the_producer():
    produced = []

    def endless():
        while True:
            produced.append(1)
            yield 1

    prefetch = Prefetch(endless(), limit=3)
    time.sleep(0.2)
    prefetch.close()
    count = len(produced)
    time.sleep(0.2)
    assert len(produced) == count and count <= 5
    assert not any(t.name == "boneage-prefetch" and t.is_alive() for t in threading.enumerate())
    with pytest.raises(ValueError, match="at least 1"):
        Prefetch([], limit=0)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    make_export(tmp, count=40, size=32)
    return tmp / "boneage"


@pytest.fixture()
def folder(tmp_path):
    folder = tmp_path / "films"
    folder.mkdir()
    for index, age in enumerate((20, 60, 100, 140, 180, 220)):
        cv2.imwrite(str(folder / f"film{index}.png"), hand_radiograph(age, index % 2, seed=index))
    (folder / "film9-broken.png").write_bytes(b"\x89PNG not really")
    return folder


@pytest.mark.slow
def test_prepare_paths_gives_each_film_in_order_with_its_error(export_dir, folder):
    paths = sorted(folder.iterdir())
    preparation = FilmPreparation(card_settings([export_dir]))
    films = list(preparation.prepare_paths(paths, sex="F", force=True))
    assert [f.path for f in films] == paths and [f.index for f in films] == list(range(7))
    assert all(f.reading.error is None and f.prepared is not None for f in films[:6])
    assert films[6].prepared is None and "film9-broken.png" in films[6].reading.error
    setting = preparation.settings[0]
    assert films[0].prepared[setting].shape == (setting.size, setting.size)
    assert films[0].film is None  # no film kept unless a heatmap needs it


@pytest.mark.slow
def test_predict_prepares_the_folder_while_tensorflow_imports(export_dir, folder, monkeypatch,
                                                              capsys):
    """`boneage predict FOLDER` starts preparing the films before TensorFlow is imported (for
    the formats that need it), and reads them exactly as preparing them one by one does."""
    from boneage.reading.predictor import Ensemble

    seen_during_import = []

    def importing(args):
        # stands in for TensorFlow's seconds-long import: the films are being prepared now
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            running = [t for t in threading.enumerate() if t.name == "boneage-prefetch"]
            if running:
                seen_during_import.append(True)
                break
            time.sleep(0.01)

    monkeypatch.setattr(cli, "_import_tensorflow", importing)
    code = cli.main(["predict", str(folder), "--sex", "F", "--force", "--json",
                     "--model", str(export_dir), "--format", "keras"])
    assert code == 1  # the broken file: a script must see it
    assert seen_during_import == [True]
    rows = json.loads(capsys.readouterr().out)
    serial = Ensemble([export_dir], "keras").predict_paths(sorted(folder.iterdir()), sex="F",
                                                           force=True)
    assert [r["path"] for r in rows] == [r.path for r in serial]
    assert "film9-broken.png" in rows[6]["error"] and serial[6].error == rows[6]["error"]
    np.testing.assert_array_equal([r["boneage_months"] for r in rows[:6]],
                                  [round(r.months, 1) for r in serial[:6]])
    assert not any(t.name == "boneage-prefetch" and t.is_alive() for t in threading.enumerate())
