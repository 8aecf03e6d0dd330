"""One imaging path, bit for bit: the preprocess stage's store and the predict path make the
same model input from the same file, for every format a film comes in.

The store path is ``build_store`` (worker processes, the film check on); the predict path is
what ``boneage predict`` and the web app do with an upload: ``read_film``, the film check
(``check_read_film``), ``prepare``. Equality is exact (``assert_array_equal``), not a
tolerance: one differing grey level is a training/serving skew.
"""

import json
import zipfile

import cv2
import numpy as np
import pandas as pd
import pytest
from factories import hand_radiograph

from boneage.imaging.decoding import read_film
from boneage.imaging.film_check import check_read_film
from boneage.imaging.transforms import ImagingSettings, prepare
from boneage.data.store import build_store, open_store

make_dicom = pytest.importorskip("test_dicom").make_dicom


def _films() -> dict[str, bytes]:
    """The same kinds of film in each format the product reads, 8 and 16 bits."""
    film8 = hand_radiograph(100, 1, seed=3, height=260)  # reduced by 2 before the crop at 64 px
    rng = np.random.default_rng(0)
    film16 = (film8.astype(np.uint16) * 257 + rng.integers(0, 257, film8.shape)).astype(np.uint16)
    colour = cv2.merge([film8, np.clip(film8.astype(int) + 6, 0, 255).astype(np.uint8), film8])
    return {
        "png8.png": cv2.imencode(".png", film8)[1].tobytes(),
        "png16.png": cv2.imencode(".png", film16)[1].tobytes(),
        "colour.png": cv2.imencode(".png", colour)[1].tobytes(),
        "jpeg.jpg": cv2.imencode(".jpg", film8, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes(),
        "dicom8.dcm": make_dicom(film8, sex="M"),
        "dicom16.dcm": make_dicom(film16, sex="F", slope=1, intercept=0, centre=30000,
                                  width=50000),
    }


SETTINGS = [ImagingSettings(size=64, crop="hand"),
            ImagingSettings(size=32, crop="none", resize="pad", contrast="clahe"),
            ImagingSettings(size=300, crop="hand", contrast="none")]  # larger than the film


@pytest.mark.parametrize("settings", SETTINGS, ids=["hand-64", "pad-clahe-32", "none-300"])
def test_store_path_equals_predict_path_bit_for_bit(tmp_path, settings):
    films = _films()
    raw = tmp_path / "raw"
    raw.mkdir()
    with zipfile.ZipFile(raw / "films.zip", "w") as archive:
        for name, data in films.items():
            archive.writestr(name, data)
    pd.DataFrame({"id": [n.split(".")[0] for n in films], "boneage": 100.0, "male": 1}).to_csv(
        raw / "labels.csv", index=False)
    (raw / "fetch-report.json").write_text(json.dumps({"source": "test", "fingerprint": "t"}))
    build_store(raw, tmp_path / "prepared", settings, workers=2, film_check=True)
    store = open_store(tmp_path / "prepared")
    assert len(store.index) == len(films)
    for name, data in films.items():
        row = int(store.index.set_index("id").loc[name.split(".")[0], "row"])
        film = check_read_film(read_film(data, name), name, force=True)  # as predict reads
        predicted_path = prepare(film, settings)
        assert predicted_path.shape == (settings.size, settings.size)
        np.testing.assert_array_equal(predicted_path, store.images[row], err_msg=name)
