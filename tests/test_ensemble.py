"""An ensemble reads as the mean of its models, with their spread (SD), on both paths a film
takes: an upload (predict_bytes, the web app) and files in batches (predict_paths, the CLI).

The stub models answer clearly different ages, so a mean replaced by the first model's
reading, a population SD for the sample SD, or a batch that mixes films up all fail here.
"""


import cv2
import numpy as np
import pytest
from factories import hand_radiograph

from boneage.imaging.transforms import ImagingSettings
from boneage.reading.predictor import Ensemble

READINGS = (100.0, 130.0, 175.0)  # months: mean 135, sample SD 37.75


class StubModel:
    """Answers ``base`` months for a male and ``base - 10`` for a female, plus 0.01 x the
    film's mean grey level (so two different films read differently)."""

    def __init__(self, base: float, settings: ImagingSettings):
        self.base, self.settings, self.model_dir = base, settings, f"stub-{base:g}"
        self.card = {"name": "stub", "boneage_version": "0"}

    def predict_prepared(self, films, male):
        films = np.asarray(films, dtype=float)
        male = np.broadcast_to(np.asarray(male, dtype=float).reshape(-1), (len(films),))
        return self.base - 10.0 * (1 - male) + 0.01 * films.mean(axis=(1, 2))


def ensemble(bases=READINGS) -> Ensemble:
    settings = [ImagingSettings(size=32, crop="none"), ImagingSettings(size=24, crop="hand")]
    out = Ensemble.of_predictors(
        [StubModel(base, settings[i % 2]) for i, base in enumerate(bases)])
    out._explainers = []  # no Grad-CAM of a stand-in model
    return out


@pytest.fixture(scope="module")
def film_png() -> bytes:
    return cv2.imencode(".png", hand_radiograph(seed=2))[1].tobytes()


def test_an_upload_reads_as_the_mean_of_the_models_with_their_spread(film_png):
    reading, _ = ensemble().predict_bytes(film_png, "film.png", sex="M", explain=False)
    models = np.array(reading.per_model)
    offsets = models - np.array(READINGS)  # each model's own film term (0.01 x mean grey)
    assert np.all((offsets > 0) & (offsets < 2.56))
    assert reading.months == pytest.approx(models.mean())
    assert reading.months == pytest.approx(np.mean(READINGS), abs=2.6)
    assert reading.spread == pytest.approx(np.std(models, ddof=1))
    assert reading.spread == pytest.approx(37.75, abs=1.5)  # not the population SD (30.8)
    row = reading.to_dict()
    assert row["models"] == [round(m, 1) for m in models]
    assert row["spread_months"] == round(reading.spread, 1)
    assert row["boneage_months"] == round(models.mean(), 1)
    assert f"+- {reading.spread:.1f} months (SD between 3 models" in reading.text()


def test_one_model_has_no_spread(film_png):
    reading, _ = ensemble((120.0,)).predict_bytes(film_png, "film.png", sex="F", explain=False)
    assert reading.spread is None and reading.months == pytest.approx(reading.per_model[0])
    assert reading.months == pytest.approx(110.0, abs=2.6)  # the female reading
    assert "models" not in reading.to_dict() and "+-" not in reading.text()


def test_films_read_in_batches_keep_their_own_readings_sex_and_order(tmp_path, film_png):
    paths = []
    for index, seed in enumerate((2, 5, 9)):
        path = tmp_path / f"{index}.png"
        path.write_bytes(cv2.imencode(".png", hand_radiograph(seed=seed))[1].tobytes())
        paths.append(path)
    one_by_one = [ensemble().predict_paths([path], sex="F", batch_size=1)[0] for path in paths]
    batched = ensemble().predict_paths(paths, sex="F", batch_size=2)  # a full and a part batch
    for single, together in zip(one_by_one, batched):
        assert together.path == single.path
        assert together.per_model == pytest.approx(single.per_model)
        assert together.months == pytest.approx(np.mean(single.per_model))
        assert together.spread == pytest.approx(np.std(single.per_model, ddof=1))
    assert len({round(r.months, 6) for r in batched}) == 3  # three films, three readings
    assert all(r.months == pytest.approx(np.mean(READINGS) - 10, abs=2.6) for r in batched)
