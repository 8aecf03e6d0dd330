"""The packed film store: one uint8 array + index, built from films.zip + labels.csv."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from boneage.kernel.errors import DataError
from boneage.imaging.decoding import read_film
from boneage.imaging.transforms import ImagingSettings, prepare
from boneage.data.store import FilmStore, build_store, open_store

SETTINGS = ImagingSettings(size=32, crop="hand", contrast="percentile")


def test_store_rows_are_prepared_films_in_label_order(tiny_raw_dir, tmp_path):
    out = tmp_path / "store"
    summary = build_store(tiny_raw_dir.path, out, SETTINGS, workers=1)
    films = np.load(out / "films.npy")
    assert films.dtype == np.uint8
    assert films.shape == (10, 32, 32)
    index = pd.read_csv(out / "index.csv", dtype={"id": str})
    assert list(index.columns) == ["id", "boneage", "male", "row"]
    assert index["id"].tolist() == tiny_raw_dir.ids  # labels.csv order, leading zeros kept
    assert index["row"].tolist() == list(range(10))
    for fid, age, male in tiny_raw_dir.labels:
        row = index.loc[index["id"] == fid].iloc[0]
        assert row["boneage"] == pytest.approx(age) and row["male"] == male
        expected = prepare(read_film(tiny_raw_dir.films[fid], f"{fid}.png"), SETTINGS)
        np.testing.assert_array_equal(films[row["row"]], expected)
    # films are distinct, so a shuffled order would have been caught above
    assert len({films[i].tobytes() for i in range(10)}) == 10

    written = json.loads((out / "store.json").read_text())
    assert written == summary
    assert summary["source"] is None and summary["source_fingerprint"] is None  # no report
    assert summary["imaging"] == SETTINGS.to_dict()
    assert (summary["n_labels"], summary["n_films"], summary["n_failed"]) == (10, 10, 0)
    assert summary["failures"] == []


def test_store_records_provenance_from_fetch_report(tiny_raw_dir, tmp_path):
    report = {"source": "synthetic", "fingerprint": "abc123", "n_films": 10}
    (tiny_raw_dir.path / "fetch-report.json").write_text(json.dumps(report))
    summary = build_store(tiny_raw_dir.path, tmp_path / "store", SETTINGS, workers=1)
    assert summary["source"] == "synthetic"
    assert summary["source_fingerprint"] == "abc123"
    assert json.loads((tmp_path / "store" / "store.json").read_text())["source_fingerprint"] == "abc123"


def test_open_store_reads_back(tiny_raw_dir, tmp_path):
    build_store(tiny_raw_dir.path, tmp_path / "store", SETTINGS, workers=1)
    store = open_store(tmp_path / "store")
    assert isinstance(store, FilmStore)
    assert isinstance(store.images, np.memmap)
    assert store.images.shape == (10, 32, 32)
    assert store.settings == SETTINGS
    assert store.index["id"].tolist() == tiny_raw_dir.ids
    wanted = [tiny_raw_dir.ids[5], tiny_raw_dir.ids[0], tiny_raw_dir.ids[8]]
    picked = store.select(wanted)
    assert picked["id"].tolist() == wanted
    assert picked["row"].tolist() == [5, 0, 8]
    with pytest.raises(DataError, match="9999"):
        store.select([tiny_raw_dir.ids[0], "9999"])


def test_open_store_missing_file_names_it(tiny_raw_dir, tmp_path):
    out = tmp_path / "store"
    build_store(tiny_raw_dir.path, out, SETTINGS, workers=1)
    (out / "index.csv").unlink()
    with pytest.raises(DataError, match="index.csv"):
        open_store(out)


def corrupt_one(raw, make_raw_dir, bad_id: str, data: bytes = b"\x89PNG\r\n\x1a\n garbage"):
    films = dict(raw.films)
    films[bad_id] = data
    return make_raw_dir(films, raw.labels, name="raw-corrupt")


def test_corrupt_film_is_skipped_and_reported(tiny_raw_dir, make_raw_dir, tmp_path):
    bad = tiny_raw_dir.ids[3]
    raw = corrupt_one(tiny_raw_dir, make_raw_dir, bad)
    out = tmp_path / "store"
    summary = build_store(raw.path, out, SETTINGS, workers=1, on_error="skip")
    index = pd.read_csv(out / "index.csv", dtype={"id": str})
    assert bad not in index["id"].tolist()
    assert index["id"].tolist() == [i for i in tiny_raw_dir.ids if i != bad]
    assert (summary["n_labels"], summary["n_films"], summary["n_failed"]) == (10, 9, 1)
    info = json.loads((out / "store.json").read_text())
    assert [f["id"] for f in info["failures"]] == [bad]
    assert bad in info["failures"][0]["error"]  # the message names the member
    # the rows of the other films still point at their own prepared film
    films = np.load(out / "films.npy")
    for fid, row in zip(index["id"], index["row"]):
        np.testing.assert_array_equal(films[row], prepare(read_film(raw.films[fid]), SETTINGS))
    assert 3 not in index["row"].tolist()


def test_corrupt_film_fails_with_its_id(tiny_raw_dir, make_raw_dir, tmp_path):
    bad = tiny_raw_dir.ids[6]
    raw = corrupt_one(tiny_raw_dir, make_raw_dir, bad, data=b"")
    with pytest.raises(DataError, match=rf"1 of 10 films .*\n.*{bad}"):
        build_store(raw.path, tmp_path / "store", SETTINGS, workers=1, on_error="fail")
    assert not (tmp_path / "store" / "index.csv").exists()


def test_all_failures_are_listed_before_failing(tiny_raw_dir, make_raw_dir, tmp_path):
    films = dict(tiny_raw_dir.films)
    bad = [tiny_raw_dir.ids[1], tiny_raw_dir.ids[8]]
    for fid in bad:
        films[fid] = b"nonsense"
    raw = make_raw_dir(films, tiny_raw_dir.labels, name="raw-two-bad")
    with pytest.raises(DataError, match="2 of 10") as info:
        build_store(raw.path, tmp_path / "store", SETTINGS, workers=1, on_error="fail")
    for fid in bad:
        assert fid in str(info.value)


def test_no_readable_film_is_an_error(tiny_raw_dir, make_raw_dir, tmp_path):
    raw = make_raw_dir({i: b"x" for i in tiny_raw_dir.ids}, tiny_raw_dir.labels, name="all-bad")
    with pytest.raises(DataError, match="none of the 10 films"):
        build_store(raw.path, tmp_path / "store", SETTINGS, workers=1, on_error="skip")


def test_one_and_two_workers_give_identical_stores(tiny_raw_dir, make_raw_dir, tmp_path):
    raw = corrupt_one(tiny_raw_dir, make_raw_dir, tiny_raw_dir.ids[2])
    one, two = tmp_path / "one", tmp_path / "two"
    s1 = build_store(raw.path, one, SETTINGS, workers=1)
    s2 = build_store(raw.path, two, SETTINGS, workers=2)
    np.testing.assert_array_equal(np.load(one / "films.npy"), np.load(two / "films.npy"))
    assert (one / "index.csv").read_bytes() == (two / "index.csv").read_bytes()
    assert s1 == s2


def test_labelled_id_without_image_is_named(tiny_raw_dir, make_raw_dir, tmp_path):
    labels = tiny_raw_dir.labels + [("0404", 100.0, 1)]
    raw = make_raw_dir(tiny_raw_dir.films, labels, name="raw-missing")
    with pytest.raises(DataError, match=r"1 labelled ids have no image.*0404"):
        build_store(raw.path, tmp_path / "store", SETTINGS, workers=1)


def test_unlabelled_image_is_ignored(tiny_raw_dir, make_raw_dir, encode, hand_film, tmp_path):
    films = dict(tiny_raw_dir.films) | {"0999": encode(hand_film(seed=99))}
    raw = make_raw_dir(films, tiny_raw_dir.labels, name="raw-extra")
    summary = build_store(raw.path, tmp_path / "store", SETTINGS, workers=1)
    assert summary["n_films"] == 10
    assert "0999" not in pd.read_csv(tmp_path / "store" / "index.csv", dtype={"id": str})["id"].tolist()


def test_two_images_for_one_id_is_an_error(tiny_raw_dir, tmp_path):
    import zipfile

    with zipfile.ZipFile(tiny_raw_dir.path / "films.zip", "a", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{tiny_raw_dir.ids[0]}.jpg", tiny_raw_dir.films[tiny_raw_dir.ids[0]])
    with pytest.raises(DataError, match=rf"two images for id '{tiny_raw_dir.ids[0]}'"):
        build_store(tiny_raw_dir.path, tmp_path / "store", SETTINGS, workers=1)


@pytest.mark.parametrize("missing", ["labels.csv", "films.zip"])
def test_missing_raw_file_names_the_path(tiny_raw_dir, tmp_path, missing):
    (tiny_raw_dir.path / missing).unlink()
    with pytest.raises(DataError) as info:
        build_store(tiny_raw_dir.path, tmp_path / "store", SETTINGS, workers=1)
    assert str(tiny_raw_dir.path / missing) in str(info.value)


def test_labels_without_required_column(tiny_raw_dir, tmp_path):
    (tiny_raw_dir.path / "labels.csv").write_text("id,age,male\n0007,10,1\n")
    with pytest.raises(DataError, match=r"labels.csv: missing column.*boneage"):
        build_store(tiny_raw_dir.path, tmp_path / "store", SETTINGS, workers=1)


def test_bad_on_error_is_refused(tiny_raw_dir, tmp_path):
    with pytest.raises(ValueError, match="on_error"):
        build_store(tiny_raw_dir.path, tmp_path / "store", SETTINGS, on_error="ignore")


def test_settings_change_the_store(tiny_raw_dir, tmp_path):
    padded = ImagingSettings(crop="none", size=24, resize="pad", contrast="none")
    summary = build_store(tiny_raw_dir.path, tmp_path / "store", padded, workers=1)
    store = open_store(tmp_path / "store")
    assert store.images.shape == (10, 24, 24)
    assert store.settings == padded and summary["imaging"]["resize"] == "pad"


def test_member_reader_reads_stored_and_compressed_members_like_zipfile(tmp_path):
    import zipfile

    from boneage.data.store import _MemberReader

    path = tmp_path / "films.zip"
    payloads = {"a.png": b"\x89PNG" + bytes(range(256)) * 40, "b.png": b"second film" * 99}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("a.png", payloads["a.png"])
        archive.writestr(zipfile.ZipInfo("sub/with-extra.png"), payloads["b.png"])
        archive.writestr("c.png", payloads["b.png"], compress_type=zipfile.ZIP_DEFLATED)
    reader = _MemberReader(str(path))
    try:
        assert reader.read("a.png") == payloads["a.png"]
        assert reader.read("sub/with-extra.png") == payloads["b.png"]
        assert reader.read("c.png") == payloads["b.png"]  # deflated: ZipFile.read
    finally:
        reader.close()


def test_damaged_member_header_is_reported_by_film(tiny_raw_dir, tmp_path):
    """A films.zip whose member header was overwritten (a broken copy) reports that film
    and keeps the rest, not a stack trace."""
    import zipfile

    archive_path = tiny_raw_dir.path / "films.zip"
    with zipfile.ZipFile(archive_path) as archive:
        damaged = archive.infolist()[3]
    data = bytearray(archive_path.read_bytes())
    data[damaged.header_offset:damaged.header_offset + 4] = b"\0\0\0\0"
    archive_path.write_bytes(bytes(data))
    summary = build_store(tiny_raw_dir.path, tmp_path / "store", SETTINGS, workers=1)
    assert (summary["n_films"], summary["n_failed"]) == (9, 1)
    failure = summary["failures"][0]
    assert failure["id"] == damaged.filename.rsplit(".", 1)[0]
    assert "BadZipFile" in failure["error"] and damaged.filename in failure["error"]


def test_film_check_reports_but_keeps_films_that_are_not_hands(make_raw_dir, tmp_path):
    import cv2
    from factories import hand_radiograph

    def png(array):
        return cv2.imencode(".png", array)[1].tobytes()

    films = {"hand": png(hand_radiograph(seed=1)), "blank": png(np.full((200, 160), 40, np.uint8)),
             "inverted": png(255 - hand_radiograph(seed=1))}
    raw = make_raw_dir(films, [("hand", 100.0, 1), ("blank", 50.0, 0), ("inverted", 90.0, 1)])
    summary = build_store(raw.path, tmp_path / "store", SETTINGS, workers=1, film_check=True)
    report = summary["film_check"]
    assert report["n_checked"] == 3 and summary["n_films"] == 3  # reported, never dropped
    assert [f["id"] for f in report["not_hand"]] == ["blank"]
    assert report["inverted"] == ["inverted"]
    assert "film_check" not in build_store(raw.path, tmp_path / "plain", SETTINGS, workers=1)
