"""Tests of the fetch stage's library: every source shape ends in the same canonical form,
and every way the input can be wrong ends in an error that names file, line and field."""

from __future__ import annotations

import csv
import gzip
import hashlib
import http.server
import importlib.util
import io
import json
import logging
import multiprocessing
import os
import stat
import sys
import tarfile
import threading
import types
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest

import boneage
import boneage.data
from boneage.kernel.config import FetchParams, SyntheticParams
from boneage.kernel.errors import DataError
from boneage.data.sources import FetchReport, archives, downloads, fetch, filmzip, integrity

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


# ----------------------------------------------------------------------------- helpers


def png_bytes(i: int) -> bytes:
    """A tiny, distinct PNG per index."""
    img = np.full((10, 8), (i * 37) % 256, np.uint8)
    img[0, 0] = i % 251
    return cv2.imencode(".png", img)[1].tobytes()


def write_images(folder: Path, ids, ext: str = ".png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in ids:
        (folder / f"{i}{ext}").write_bytes(png_bytes(int(i)))


def write_csv(path: Path, header, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def kaggle(root: Path, ids=(1, 2, 3, 10), nested: bool = False) -> Path:
    write_csv(
        root / "boneage-training-dataset.csv",
        ["id", "boneage", "male"],
        [[i, 10 * i, "True" if i % 2 else "False"] for i in ids],
    )
    img = root / "boneage-training-dataset"
    write_images(img / "boneage-training-dataset" if nested else img, ids)
    return root


def read_labels(out: Path) -> list[dict]:
    with open(out / "labels.csv", newline="") as f:
        return list(csv.DictReader(f))


def run(source, out: Path, **kw) -> FetchReport:
    return fetch(FetchParams(source=str(source), **kw), out)


def check_output(out: Path, report: FetchReport, ids) -> None:
    """The canonical form: films.zip (stored, original bytes), labels.csv, report."""
    rows = read_labels(out)
    assert list(rows[0]) == ["id", "boneage", "male"]
    assert [r["id"] for r in rows] == [str(i) for i in ids]
    for r in rows:
        float(r["boneage"])
        assert r["male"] in ("0", "1")
    with zipfile.ZipFile(out / "films.zip") as zf:
        infos = zf.infolist()
        assert sorted(i.filename for i in infos) == sorted(f"{i}.png" for i in ids)
        assert all(i.compress_type == zipfile.ZIP_STORED for i in infos)
        for i in ids:
            assert zf.read(f"{i}.png") == png_bytes(int(i))
    saved = json.loads((out / "fetch-report.json").read_text())
    assert saved["fingerprint"] == report.fingerprint and len(report.fingerprint) == 64
    assert report.n_written == len(ids)


def zip_dir(folder: Path, archive: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, prefix + p.relative_to(folder).as_posix())
    return archive


# ----------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("nested", [False, True])
def test_kaggle_folder(tmp_path, nested):
    src = kaggle(tmp_path / "src", nested=nested)
    report = run(src, tmp_path / "raw")
    assert report.layout == "kaggle"
    assert (report.n_labels, report.n_images, report.n_written) == (4, 4, 4)
    check_output(tmp_path / "raw", report, [1, 2, 3, 10])  # natural order: 10 after 3
    rows = read_labels(tmp_path / "raw")
    assert rows[0] == {"id": "1", "boneage": "10.0", "male": "1"}
    assert rows[1]["male"] == "0"


def test_zip_with_wrapper_folder_and_macos_junk(tmp_path):
    src = kaggle(tmp_path / "src", nested=True)
    (src / "__MACOSX").mkdir()
    (src / "__MACOSX" / "._1.png").write_bytes(b"junk")
    (src / "boneage-training-dataset" / "boneage-training-dataset" / "._2.png").write_bytes(b"junk")
    archive = zip_dir(src, tmp_path / "rsna.zip", prefix="rsna-bone-age/")
    report = run(archive, tmp_path / "raw")
    assert report.layout == "kaggle" and report.images_without_labels == []
    check_output(tmp_path / "raw", report, [1, 2, 3, 10])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "rsna.zip", "src"]  # scratch gone


@pytest.mark.parametrize("suffix,mode", [(".tar.gz", "w:gz"), (".tgz", "w:gz"), (".tar", "w")])
def test_tar_sources(tmp_path, suffix, mode):
    src = kaggle(tmp_path / "src", nested=True)
    archive = tmp_path / f"data{suffix}"
    with tarfile.open(archive, mode) as tf:
        tf.add(src, arcname=".")
    report = run(archive, tmp_path / "raw")
    check_output(tmp_path / "raw", report, [1, 2, 3, 10])


def test_same_input_gives_same_bytes(tmp_path):
    """Byte-identical output means DVC sees no change and does not rerun later stages."""
    src = kaggle(tmp_path / "src")
    a = run(src, tmp_path / "a")
    os.utime(src / "boneage-training-dataset" / "1.png", (0, 0))
    b = run(src, tmp_path / "b")
    assert a.fingerprint == b.fingerprint
    for name in ("films.zip", "labels.csv", "fetch-report.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_rsna_validation_spelling(tmp_path):
    src = tmp_path / "src"
    write_csv(
        src / "validation.csv",
        ["Image ID", "male", "Bone Age (months)"],
        [[1, "TRUE", 12], [2, "false", "30.5"], [3, "True", 200]],
    )
    write_images(src / "images", [1, 2, 3])
    report = run(src, tmp_path / "raw")
    assert report.layout == "rsna-validation"
    check_output(tmp_path / "raw", report, [1, 2, 3])
    assert [r["boneage"] for r in read_labels(tmp_path / "raw")] == ["12.0", "30.5", "200.0"]
    assert [r["male"] for r in read_labels(tmp_path / "raw")] == ["1", "0", "1"]


def test_rsna_test_spelling(tmp_path):
    src = tmp_path / "src"
    write_csv(
        src / "test.csv",
        ["Case ID", "Sex", "Ground truth bone age (months)"],
        [[4360, "M", 168.9], [4361, "f", 169.7]],
    )
    write_images(src, [4360, 4361])
    report = run(src, tmp_path / "raw")
    assert report.layout == "rsna-test"
    check_output(tmp_path / "raw", report, [4360, 4361])
    assert [r["male"] for r in read_labels(tmp_path / "raw")] == ["1", "0"]


def test_plain_csv_beside_images_with_mixed_sex_spellings(tmp_path):
    src = tmp_path / "src"
    write_csv(
        src / "labels.csv",
        ["id", "boneage", "male"],
        [[1, 5, "1"], [2, 6, "Female"], [3, 7, "MALE"]],
    )
    write_images(src / "pngs", [1, 2, 3])
    (src / "pngs" / "3.png").rename(src / "pngs" / "3.PNG")  # extension is lower-cased in the zip
    report = run(src, tmp_path / "raw")
    assert report.layout == "plain"
    with zipfile.ZipFile(tmp_path / "raw" / "films.zip") as zf:
        assert sorted(zf.namelist()) == ["1.png", "2.png", "3.png"]
    assert [r["male"] for r in read_labels(tmp_path / "raw")] == ["1", "0", "1"]


def test_jpeg_and_dicom_keep_their_extension(tmp_path):
    src = tmp_path / "src"
    write_csv(
        src / "labels.csv", ["id", "boneage", "male"], [["a", 5, 1], ["b", 6, 0], ["c", 7, 0]]
    )
    (src / "a.JPG").write_bytes(b"jpegdata")
    (src / "b.jpeg").write_bytes(b"jpegdata2")
    (src / "c.dcm").write_bytes(b"DICM")
    run(src, tmp_path / "raw")
    with zipfile.ZipFile(tmp_path / "raw" / "films.zip") as zf:
        assert sorted(zf.namelist()) == ["a.jpg", "b.jpeg", "c.dcm"]
        assert zf.read("a.jpg") == b"jpegdata"


def test_csv_whose_ids_match_most_images_wins(tmp_path):
    src = tmp_path / "src"
    write_csv(src / "labels.csv", ["id", "boneage", "male"], [[100, 5, 1], [101, 5, 0]])
    write_csv(src / "other.csv", ["id", "boneage", "male"], [[1, 5, 1], [2, 6, 0]])
    write_csv(src / "notes.csv", ["what", "ever"], [["a", "b"]])
    write_images(src / "img", [1, 2])
    report = run(src, tmp_path / "raw")
    assert report.n_written == 2 and report.n_labels == 2


def test_kaggle_zip_with_label_less_test_csv(tmp_path):
    """The Kaggle zip also ships boneage-test-dataset.csv (Case ID, Sex): not a candidate."""
    src = kaggle(tmp_path / "src", nested=True)
    write_csv(src / "boneage-test-dataset.csv", ["Case ID", "Sex"], [[4360, "M"]])
    write_images(src / "boneage-test-dataset" / "boneage-test-dataset", [4360])
    report = run(src, tmp_path / "raw")
    assert report.n_written == 4 and report.images_without_labels == []


def test_no_label_csv_lists_what_was_found(tmp_path):
    src = tmp_path / "src"
    write_csv(src / "notes.csv", ["what", "ever"], [["a", "b"]])
    write_images(src, [1])
    with pytest.raises(DataError) as e:
        run(src, tmp_path / "raw")
    assert "notes.csv" in str(e.value) and "id,boneage,male" in str(e.value)


def test_no_image_matches(tmp_path):
    src = tmp_path / "src"
    write_csv(src / "labels.csv", ["id", "boneage", "male"], [[1, 5, 1]])
    write_images(src / "img", [7])
    with pytest.raises(DataError, match="no image matches a label id"):
        run(src, tmp_path / "raw")


def test_missing_source(tmp_path):
    with pytest.raises(DataError, match="no such folder or archive"):
        run(tmp_path / "nope", tmp_path / "raw")


def test_labels_without_images_and_images_without_labels(tmp_path):
    src = tmp_path / "src"
    write_csv(src / "labels.csv", ["id", "boneage", "male"], [[i, 10, 1] for i in (1, 2, 3, 4, 5)])
    write_images(src, [1, 2, 3, 9])
    report = run(src, tmp_path / "raw")
    assert (report.n_labels, report.n_images, report.n_written) == (5, 4, 3)
    assert report.labels_without_images == ["4", "5"]
    assert report.images_without_labels == ["9.png"]
    assert [r["id"] for r in read_labels(tmp_path / "raw")] == ["1", "2", "3"]


def test_output_is_replaced_cleanly_and_kept_on_failure(tmp_path):
    src = kaggle(tmp_path / "src")
    out = tmp_path / "raw"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    first = run(src, out)
    assert sorted(p.name for p in out.iterdir()) == ["fetch-report.json", "films.zip", "labels.csv"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask
    bad = tmp_path / "bad"
    write_csv(bad / "labels.csv", ["id", "boneage", "male"], [[1, "x", 1]])
    write_images(bad, [1])
    with pytest.raises(DataError):
        run(bad, out)
    assert json.loads((out / "fetch-report.json").read_text())["fingerprint"] == first.fingerprint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "raw", "src"]


def test_source_inside_output_is_refused(tmp_path):
    src = kaggle(tmp_path / "raw" / "incoming")
    with pytest.raises(DataError, match="inside the output folder"):
        run(src, tmp_path / "raw")
    assert (src / "boneage-training-dataset.csv").exists()


# ----------------------------------------------------------------------------- validation

GOOD = [[1, 12, "True"], [2, 24, "False"]]


@pytest.mark.parametrize(
    "bad_row,field,words",
    [
        ([3, "abc", "True"], "boneage", ["not a number", "'abc'"]),
        ([3, "", "True"], "boneage", ["not a number"]),
        ([3, "250", "True"], "boneage", ["outside 0..240"]),
        ([3, "-1", "True"], "boneage", ["outside"]),
        ([3, "nan", "True"], "boneage", ["outside"]),
        ([3, "12", "X"], "male", ["not a sex value", "'X'"]),
        ([1, "12", "True"], "id", ["duplicate id", "first on line 2"]),
        (["", "12", "True"], "id", ["is empty"]),
    ],
)
def test_bad_row_fails_naming_file_line_and_field(tmp_path, bad_row, field, words):
    src = tmp_path / "src"
    write_csv(src / "labels.csv", ["id", "boneage", "male"], [*GOOD, bad_row, [4, 30, "F"]])
    write_images(src, [1, 2, 3, 4])
    with pytest.raises(DataError) as e:
        run(src, tmp_path / "raw")
    msg = str(e.value)
    assert "labels.csv" in msg and "line 4 (data row 3)" in msg and f"field '{field}'" in msg
    for w in words:
        assert w in msg
    assert not (tmp_path / "raw").exists()


def test_field_named_as_the_file_spells_it(tmp_path):
    src = tmp_path / "src"
    write_csv(src / "val.csv", ["Image ID", "male", "Bone Age (months)"], [[1, "TRUE", "old"]])
    write_images(src, [1])
    with pytest.raises(
        DataError, match=r"val\.csv line 2 \(data row 1\), field 'Bone Age \(months\)'"
    ):
        run(src, tmp_path / "raw")


def test_skip_drops_and_reports_bad_rows(tmp_path):
    src = tmp_path / "src"
    rows = [*GOOD, [3, "abc", "True"], [4, 999, "M"], [5, 10, "?"], [1, 13, "True"], [6, 60, "m"]]
    write_csv(src / "labels.csv", ["id", "boneage", "male"], rows)
    write_images(src, [1, 2, 3, 4, 5, 6])
    report = run(src, tmp_path / "raw", on_error="skip")
    assert [r["id"] for r in read_labels(tmp_path / "raw")] == ["1", "2", "6"]
    assert read_labels(tmp_path / "raw")[0]["boneage"] == "12.0"  # the first of a duplicate is kept
    assert [(s["line"], s["row"], s["field"]) for s in report.skipped_rows] == [
        (4, 3, "boneage"), (5, 4, "boneage"), (6, 5, "male"), (7, 6, "id"),
    ]  # fmt: skip
    assert all(s["file"].endswith("labels.csv") for s in report.skipped_rows)
    assert report.n_labels == 3 and report.n_written == 3
    assert report.images_without_labels == ["3.png", "4.png", "5.png"]
    saved = json.loads((tmp_path / "raw" / "fetch-report.json").read_text())
    assert saved["skipped_rows"] == report.skipped_rows


def test_row_with_several_problems_lists_them_all(tmp_path):
    src = tmp_path / "src"
    write_csv(src / "labels.csv", ["id", "boneage", "male"], [*GOOD, [3, "abc", "?"]])
    write_images(src, [1, 2, 3])
    report = run(src, tmp_path / "raw", on_error="skip")
    (skipped,) = report.skipped_rows
    assert skipped["field"] == "boneage, male" and "not a number" in skipped["reason"]
    assert "not a sex value" in skipped["reason"]


def test_many_bad_rows_one_message_with_count(tmp_path):
    src = tmp_path / "src"
    write_csv(src / "labels.csv", ["id", "boneage", "male"], [[i, "x", 1] for i in range(15)])
    write_images(src, range(15))
    with pytest.raises(DataError) as e:
        run(src, tmp_path / "raw")
    msg = str(e.value)
    assert "15 bad label row(s)" in msg and "and 5 more" in msg
    assert msg.count("field 'boneage'") == 10


@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_missing_column_is_always_fatal(tmp_path, on_error):
    src = tmp_path / "src"
    write_csv(src / "labels.csv", ["id", "boneage"], [[1, 12]])
    write_images(src, [1])
    with pytest.raises(DataError) as e:
        run(src, tmp_path / "raw", on_error=on_error)
    msg = str(e.value)
    assert (
        "labels.csv" in msg
        and "line 1 (header)" in msg
        and "'male'" in msg
        and "missing column" in msg
    )


@pytest.mark.parametrize("content", ["", "\n", "id,boneage,male\n", "id,boneage,male\n\n,,\n"])
def test_empty_csv(tmp_path, content):
    src = tmp_path / "src"
    src.mkdir()
    (src / "labels.csv").write_text(content)
    write_images(src, [1])
    with pytest.raises(DataError) as e:
        run(src, tmp_path / "raw")
    assert "labels.csv" in str(e.value) and "empty" in str(e.value)


# ----------------------------------------------------------------------------- archive safety


def evil_zip(path: Path, name: str, *, symlink_to: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("labels.csv", "id,boneage,male\n1,12,True\n")
        zf.writestr("1.png", png_bytes(1))
        info = zipfile.ZipInfo(name)
        if symlink_to is not None:
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, symlink_to)
        else:
            zf.writestr(info, png_bytes(2))
    return path


def evil_tar(path: Path, name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for n, data in (("labels.csv", b"id,boneage,male\n1,12,True\n"), ("1.png", png_bytes(1))):
            ti = tarfile.TarInfo(n)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        ti = tarfile.TarInfo(name)
        ti.type = kind
        ti.linkname = link
        data = png_bytes(2) if kind == tarfile.REGTYPE else b""
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data) if data else None)
    return path


def assert_nothing_escaped(tmp_path: Path, work: Path, *outside: Path) -> None:
    assert not any(p.exists() for p in outside)
    assert list(work.iterdir()) == []  # no output, no scratch, no staging left behind
    assert not (tmp_path / "evil.png").exists() and not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "kind", ["dotdot", "dotdot-middle", "dotdot-deep", "backslash-middle", "absolute", "drive",
             "backslash", "symlink-abs", "symlink-up"]
)
def test_unsafe_zip_is_refused(tmp_path, kind):
    abs_target = Path("/tmp") / f"boneage-evil-{uuid.uuid4().hex}.png"
    member, link = {
        "dotdot": ("../evil.png", None),
        "dotdot-middle": ("a/../../evil.png", None),  # climbs out from inside a folder
        "dotdot-deep": ("a/b/../../../evil.png", None),
        "backslash-middle": ("a\\..\\..\\evil.png", None),
        "absolute": (str(abs_target), None),
        "drive": ("C:/evil.png", None),
        "backslash": ("..\\evil.png", None),
        "symlink-abs": ("passwd.png", "/etc/passwd"),
        "symlink-up": ("sub/x.png", "../../x"),
    }[kind]
    archive = evil_zip(tmp_path / "evil.zip", member, symlink_to=link)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(DataError) as e:
        run(archive, work / "raw")
    assert repr(member)[1:-1] in str(e.value) or member in str(e.value)
    assert "refusing" in str(e.value)
    assert_nothing_escaped(tmp_path, work, abs_target, work.parent / "evil.png")


@pytest.mark.parametrize(
    "name,kind,link",
    [
        ("../evil.png", tarfile.REGTYPE, ""),
        ("a/../../evil.png", tarfile.REGTYPE, ""),
        ("a/b/../../../evil.png", tarfile.REGTYPE, ""),
        ("/tmp/boneage-evil-abs.png", tarfile.REGTYPE, ""),
        ("passwd.png", tarfile.SYMTYPE, "/etc/passwd"),
        ("x.png", tarfile.SYMTYPE, "../x"),
        ("sub/x.png", tarfile.SYMTYPE, "../../x"),
        ("hard.png", tarfile.LNKTYPE, "../x"),
        ("dev.png", tarfile.CHRTYPE, ""),
        ("fifo.png", tarfile.FIFOTYPE, ""),
    ],
)
def test_unsafe_tar_is_refused(tmp_path, name, kind, link):
    archive = evil_tar(tmp_path / "evil.tar.gz", name, kind, link)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(DataError) as e:
        run(archive, work / "raw")
    assert name in str(e.value) and "refusing" in str(e.value)
    assert_nothing_escaped(tmp_path, work, work.parent / "evil.png")


def test_safe_symlink_inside_tar_is_ignored(tmp_path):
    archive = evil_tar(tmp_path / "ok.tar.gz", "2.png", tarfile.SYMTYPE, "1.png")
    report = run(archive, tmp_path / "raw")
    assert report.n_written == 1 and report.images_without_labels == []


def test_corrupt_archive(tmp_path):
    bad = tmp_path / "broken.zip"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="broken.zip"):
        run(bad, tmp_path / "raw")


def test_truncated_tar_gz(tmp_path):
    src = kaggle(tmp_path / "src")
    archive = tmp_path / "data.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(src, arcname=".")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match="cut.tar.gz"):
        run(cut, tmp_path / "raw")


def test_corrupt_member_in_zip(tmp_path):
    """A CRC failure while copying names the archive and leaves no output behind."""
    archive = zip_dir(kaggle(tmp_path / "src"), tmp_path / "data.zip")
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("boneage-training-dataset/10.png")
    at = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size // 2
    data[at] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises(DataError, match="data.zip"):
        run(archive, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


@pytest.mark.parametrize("kind", ["plain-cut-between-members", "gzip-trailer-missing"])
def test_cut_tar_is_refused(tmp_path, kind):
    """tarfile stops quietly at a missing header, so a cut tar would read as a shorter one."""
    src = kaggle(tmp_path / "src")
    archive, boundary = plain_tar(src, tmp_path / "data.tar")
    data = archive.read_bytes()
    if kind == "plain-cut-between-members":
        cut = tmp_path / "cut.tar"
        cut.write_bytes(data[:boundary])
    else:
        cut = tmp_path / "cut.tar.gz"
        cut.write_bytes(gzip.compress(data)[:-4])  # the tar is whole, its gzip stream is not
    with pytest.raises(DataError) as e:
        run(cut, tmp_path / "raw")
    assert str(cut) in str(e.value)
    if kind == "plain-cut-between-members":
        assert "end-of-archive marker" in str(e.value) and "cut short" in str(e.value)
    assert not (tmp_path / "raw").exists()


def bomb_source(tmp_path: Path, kind: str, bomb: bytes) -> Path:
    """Films 1, 2 and 10 are normal; film 3 is ``bomb``."""
    src = kaggle(tmp_path / "src")
    (src / "boneage-training-dataset" / "3.png").write_bytes(bomb)
    if kind == "folder":
        return src
    if kind == "zip":
        return zip_dir(src, tmp_path / "data.zip")
    archive = tmp_path / "data.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(src, arcname=".")
    return archive


class Opened:
    """Records the names of the archive members fetch opens."""

    def __init__(self, monkeypatch):
        self.names: list[str] = []
        original = archives._ZipTree.open_bytes

        def spy(tree, entry):
            self.names.append(entry.name)
            return original(tree, entry)

        monkeypatch.setattr(archives._ZipTree, "open_bytes", spy)


@pytest.mark.parametrize("kind", ["zip", "tar.gz", "folder"])
def test_member_over_the_size_limit_is_refused_unread(tmp_path, monkeypatch, kind):
    monkeypatch.setattr(integrity, "MAX_FILM_BYTES", 1 << 20)
    monkeypatch.setattr(archives, "MAX_RATIO", 10**9)  # the size alone must refuse it
    source = bomb_source(tmp_path, kind, bytes(5 << 20))
    opened = Opened(monkeypatch)
    with pytest.raises(DataError) as e:
        run(source, tmp_path / "raw")
    msg = str(e.value)
    assert "3.png" in msg and "over the 1,048,576-byte limit" in msg and "on_error" in msg
    assert not (tmp_path / "raw").exists()

    report = run(source, tmp_path / "raw", on_error="skip")
    assert report.n_written == 3 and [f["id"] for f in report.skipped_films] == ["3"]
    assert report.skipped_films[0]["size"] == 5 << 20
    assert report.n_labels == report.n_written + len(report.labels_without_images) + 1
    assert report.n_images == report.n_written + len(report.images_without_labels) + 1
    with zipfile.ZipFile(tmp_path / "raw" / "films.zip") as zf:
        assert sorted(zf.namelist()) == ["1.png", "10.png", "2.png"]
    assert "3.png" not in opened.names
    saved = json.loads((tmp_path / "raw" / "fetch-report.json").read_text())
    assert saved["skipped_films"] == report.skipped_films


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_member_that_expands_too_far_is_refused(tmp_path, kind):
    """5 MB of zeros deflates ~1000:1: under the size limit, over the ratio limit."""
    source = bomb_source(tmp_path, kind, bytes(5 << 20))
    with pytest.raises(DataError, match=r"3\.png.* expands [\d,]+:1 .*over the 100:1 limit"):
        run(source, tmp_path / "raw")
    report = run(source, tmp_path / "raw", on_error="skip")
    assert [f["id"] for f in report.skipped_films] == ["3"] and report.n_written == 3


def test_incompressible_film_is_not_a_bomb(tmp_path, monkeypatch):
    monkeypatch.setattr(archives, "RATIO_FROM_BYTES", 1000)
    noise = np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes()
    report = run(bomb_source(tmp_path, "zip", noise), tmp_path / "raw")
    assert report.n_written == 4 and report.skipped_films == []


def test_copy_stops_at_the_announced_size(tmp_path):
    """A member longer than its header says is cut off after one chunk, not copied whole."""

    class Endless(io.RawIOBase):
        served = 0

        def readable(self):
            return True

        def readinto(self, b):
            assert self.served < 64 << 20, "read far past the announced size"
            self.served += len(b)
            b[:] = bytes(len(b))
            return len(b)

    src = Endless()
    writer = filmzip._FilmsWriter(tmp_path / "films.zip")
    with pytest.raises(DataError, match=r"x\.png: the source holds more than the 1,000 bytes"):
        writer.add_stream("x.png", src, 1000)
    assert src.served <= 1001


def test_csv_too_big_for_labels_is_not_read(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(archives, "MAX_CSV_BYTES", 1000)
    src = kaggle(tmp_path / "src")
    write_csv(src / "notes.csv", ["id", "boneage", "male"], [[i, 1, 1] for i in range(500)])
    archive = tmp_path / "data.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(src, arcname=".")
    report = run(archive, tmp_path / "raw")
    assert report.n_written == 4
    assert "notes.csv" in caplog.text and "too big for a label CSV" in caplog.text


def test_two_images_for_one_id(tmp_path):
    src = tmp_path / "src"
    write_csv(src / "labels.csv", ["id", "boneage", "male"], [[1, 5, 1]])
    write_images(src, [1])
    (src / "1.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match="two images for id '1'"):
        run(src, tmp_path / "raw")


# ----------------------------------------------------------------------------- download


@dataclass
class Served:
    files: dict
    requests: list
    cut_after: int | None = None  # bytes sent before the first full response is cut
    ranges: bool = True
    length: bool = True  # send Content-Length (else the body ends when the connection closes)
    etags: bool = True
    if_range: list = field(default_factory=list)  # the If-Range header of each request
    url: str = ""
    last_modified: dict = field(default_factory=dict)  # path -> Last-Modified sent for it
    headers: dict = field(default_factory=dict)  # path -> extra headers of a full answer


def etag(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:16] + '"'


@pytest.fixture
def server():
    state = Served(files={}, requests=[])

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            state.requests.append((self.path, self.headers.get("Range")))
            state.if_range.append(self.headers.get("If-Range"))
            data = state.files.get(self.path)
            if data is None:
                self.send_error(404, "Not Found")
                return
            start, status = 0, 200
            rng = self.headers.get("Range")
            current = {etag(data)} if state.etags else set()
            current |= {state.last_modified[self.path]} if self.path in state.last_modified \
                else set()
            if self.headers.get("If-Range") is not None and \
                    self.headers.get("If-Range") not in current:
                rng = None  # the file changed: RFC 9110 says send it whole
            if rng and state.ranges:
                start = int(rng.split("=")[1].split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            body = data[start:]
            self.send_response(status)
            if state.length:
                self.send_header("Content-Length", str(len(body)))
            else:
                self.send_header("Connection", "close")
                self.close_connection = True
            if state.etags:
                self.send_header("ETag", etag(data))
            if self.path in state.last_modified:
                self.send_header("Last-Modified", state.last_modified[self.path])
            if status == 200:
                for key, value in state.headers.get(self.path, {}).items():
                    self.send_header(key, value)
            self.send_header("Accept-Ranges", "bytes" if state.ranges else "none")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if state.cut_after is not None:
                self.wfile.write(body[: state.cut_after])
                self.wfile.flush()
                state.cut_after = None
                self.close_connection = True
                return
            self.wfile.write(body)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    httpd.shutdown()
    httpd.server_close()


def url_fetch(url: str, tmp_path: Path, out: str = "raw") -> FetchReport:
    return fetch(FetchParams(source=url), tmp_path / out, download_dir=tmp_path / "dl")


def test_url_download_cut_then_resumed(tmp_path, server):
    payload = zip_dir(kaggle(tmp_path / "src", nested=True), tmp_path / "data.zip").read_bytes()
    server.files["/data.zip"] = payload
    server.cut_after = len(payload) // 2
    url = server.url + "/data.zip"

    with pytest.raises(DataError) as e:
        url_fetch(url, tmp_path)
    assert url in str(e.value) and "interrupted" in str(e.value)
    assert list((tmp_path / "dl").rglob("data.zip")) == []  # never a final file after a cut
    (part,) = (tmp_path / "dl").rglob("data.zip.part")
    assert part.stat().st_size == len(payload) // 2
    assert not (tmp_path / "raw").exists()

    assert json.loads(downloads._sidecar(part).read_text())["etag"] == etag(payload)

    report = url_fetch(url, tmp_path)
    assert server.requests[-1] == ("/data.zip", f"bytes={len(payload) // 2}-")
    assert server.if_range[-1] == etag(payload)  # resumes only onto the same file
    (final,) = (tmp_path / "dl").rglob("data.zip")
    assert final.read_bytes() == payload and not part.exists()
    assert not downloads._sidecar(part).exists()
    check_output(tmp_path / "raw", report, [1, 2, 3, 10])
    assert report.source == url

    n = len(server.requests)
    url_fetch(url, tmp_path, out="again")  # a finished download is reused, not fetched again
    assert len(server.requests) == n


def test_url_restarts_when_server_ignores_ranges(tmp_path, server):
    payload = zip_dir(kaggle(tmp_path / "src"), tmp_path / "data.zip").read_bytes()
    server.files["/d/data.zip"] = payload
    server.cut_after = 100
    server.ranges = False
    with pytest.raises(DataError):
        url_fetch(server.url + "/d/data.zip", tmp_path)
    report = url_fetch(server.url + "/d/data.zip", tmp_path)
    assert report.n_written == 4
    (final,) = (tmp_path / "dl").rglob("data.zip")
    assert final.read_bytes() == payload


def cache_folder(tmp_path: Path, url: str) -> Path:
    folder = tmp_path / "dl" / hashlib.sha256(url.encode()).hexdigest()[:12]
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_url_with_complete_part_left_over(tmp_path, server):
    """A .part that already holds everything (416 on resume) is finished, not refetched."""
    payload = zip_dir(kaggle(tmp_path / "src"), tmp_path / "data.zip").read_bytes()
    server.files["/data.zip"] = payload
    url = server.url + "/data.zip"
    folder = cache_folder(tmp_path, url)
    (folder / "data.zip.part").write_bytes(payload)
    (folder / "data.zip.part.json").write_text(json.dumps({"url": url, "etag": etag(payload)}))
    assert url_fetch(url, tmp_path).n_written == 4
    assert (folder / "data.zip").read_bytes() == payload
    assert server.requests == [("/data.zip", f"bytes={len(payload)}-")]  # the 416, no refetch


def test_url_part_without_record_starts_over(tmp_path, server):
    """A .part with no record of the download it belongs to cannot be resumed safely."""
    payload = zip_dir(kaggle(tmp_path / "src"), tmp_path / "data.zip").read_bytes()
    server.files["/data.zip"] = payload
    url = server.url + "/data.zip"
    (cache_folder(tmp_path, url) / "data.zip.part").write_bytes(b"old bytes of another file")
    assert url_fetch(url, tmp_path).n_written == 4
    assert server.requests == [("/data.zip", None)]


def test_url_without_archive_name_is_sniffed(tmp_path, server):
    payload = zip_dir(kaggle(tmp_path / "src"), tmp_path / "data.zip").read_bytes()
    server.files["/get?id=7"] = payload
    assert url_fetch(server.url + "/get?id=7", tmp_path).n_written == 4


def test_url_404(tmp_path, server):
    url = server.url + "/missing.zip"
    with pytest.raises(DataError) as e:
        url_fetch(url, tmp_path)
    assert url in str(e.value) and "404" in str(e.value) and "Not Found" in str(e.value)
    assert list((tmp_path / "dl").rglob("missing.zip")) == []


def test_url_unreachable(tmp_path):
    with pytest.raises(DataError, match=r"http://127\.0\.0\.1:9/x\.zip"):
        url_fetch("http://127.0.0.1:9/x.zip", tmp_path)


def plain_tar(src: Path, archive: Path) -> tuple[Path, int]:
    """labels.csv then four images; returns the archive and the offset of the third image's
    header, a member boundary."""
    with tarfile.open(archive, "w") as tf:
        tf.add(src / "boneage-training-dataset.csv", "boneage-training-dataset.csv")
        for i in (1, 2, 3, 10):
            tf.add(src / "boneage-training-dataset" / f"{i}.png", f"images/{i}.png")
    with tarfile.open(archive) as tf:
        return archive, tf.getmember("images/3.png").offset


@pytest.mark.parametrize("kind", ["zip", "tar-between-members"])
def test_url_cut_without_length_is_not_taken_as_complete(tmp_path, server, kind):
    """No Content-Length and a dropped connection look like a finished body: the archive
    itself must prove complete before the .part is renamed."""
    src = kaggle(tmp_path / "src")
    if kind == "zip":
        payload = zip_dir(src, tmp_path / "data.zip").read_bytes()
        cut, name = len(payload) // 2, "data.zip"
    else:
        archive, cut = plain_tar(src, tmp_path / "data.tar")
        payload, name = archive.read_bytes(), "data.tar"
    server.files["/" + name] = payload
    server.length = False
    server.cut_after = cut
    url = f"{server.url}/{name}"
    with pytest.raises(DataError) as e:
        url_fetch(url, tmp_path)
    assert url in str(e.value) and "not a whole archive" in str(e.value)
    assert "next run resumes it" in str(e.value)
    assert list((tmp_path / "dl").rglob(name)) == []
    (part,) = (tmp_path / "dl").rglob(name + ".part")
    assert part.stat().st_size == cut and not (tmp_path / "raw").exists()

    server.length = True
    report = url_fetch(url, tmp_path)
    assert server.requests[-1] == ("/" + name, f"bytes={cut}-")
    assert server.if_range[-1] == etag(payload)
    (final,) = (tmp_path / "dl").rglob(name)
    assert final.read_bytes() == payload and report.n_written == 4


def test_url_changed_on_server_starts_over(tmp_path, server):
    """A resume carries If-Range; the server sends a changed file whole (200), and it replaces
    the part instead of being spliced onto it."""
    old = zip_dir(kaggle(tmp_path / "old"), tmp_path / "old.zip").read_bytes()
    new_src = kaggle(tmp_path / "new", ids=(1, 2, 3, 10, 11))
    new = zip_dir(new_src, tmp_path / "new.zip").read_bytes()
    server.files["/data.zip"] = old
    server.cut_after = len(old) // 2
    url = server.url + "/data.zip"
    with pytest.raises(DataError, match="interrupted"):
        url_fetch(url, tmp_path)
    server.files["/data.zip"] = new
    report = url_fetch(url, tmp_path)
    assert server.if_range[-1] == etag(old)
    (final,) = (tmp_path / "dl").rglob("data.zip")
    assert final.read_bytes() == new and report.n_written == 5


def same_size_pair(tmp_path: Path) -> tuple[bytes, bytes]:
    """Two different whole zip archives of the same size (one label changed, 10 -> 11)."""
    def stored(folder: Path, archive: Path) -> bytes:
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(folder).as_posix())
        return archive.read_bytes()

    import shutil

    old = stored(kaggle(tmp_path / "old"), tmp_path / "old.zip")
    src = Path(shutil.copytree(tmp_path / "old", tmp_path / "new"))
    labels = src / "boneage-training-dataset.csv"
    labels.write_bytes(labels.read_bytes().replace(b"1,10,", b"1,11,"))
    new = stored(src, tmp_path / "new.zip")
    assert len(new) == len(old) and new != old
    return old, new


def test_url_without_validator_is_never_resumed_onto_a_changed_file(tmp_path, server, caplog):
    """Issue 22: Content-Length but neither ETag nor Last-Modified; the file changes (same
    size) between two attempts. The second attempt must start over, not splice."""
    old, new = same_size_pair(tmp_path)
    server.etags = False
    server.files["/data.zip"] = old
    server.cut_after = len(old) // 2
    url = server.url + "/data.zip"
    with pytest.raises(DataError, match="interrupted"):
        url_fetch(url, tmp_path)
    server.files["/data.zip"] = new
    with caplog.at_level(logging.WARNING, logger="boneage.data.sources"):
        url_fetch(url, tmp_path)
    assert server.requests[-1] == ("/data.zip", None)  # no Range: started over
    assert "neither an ETag nor a Last-Modified" in caplog.text and "spliced" in caplog.text
    (final,) = (tmp_path / "dl").rglob("data.zip")
    assert final.read_bytes() == new


def test_url_with_last_modified_resumes_with_it_as_if_range(tmp_path, server):
    old, new = same_size_pair(tmp_path)
    server.etags = False
    server.files["/data.zip"] = old
    server.last_modified["/data.zip"] = "Tue, 01 Dec 2026 10:00:00 GMT"
    server.cut_after = len(old) // 2
    url = server.url + "/data.zip"
    with pytest.raises(DataError, match="interrupted"):
        url_fetch(url, tmp_path)
    url_fetch(url, tmp_path)  # unchanged: resumed with If-Range = the date
    assert server.requests[-1] == ("/data.zip", f"bytes={len(old) // 2}-")
    assert server.if_range[-1] == "Tue, 01 Dec 2026 10:00:00 GMT"
    assert next((tmp_path / "dl").rglob("data.zip")).read_bytes() == old

    # changed on the server (a new date): sent whole and not spliced
    for path in (tmp_path / "dl").rglob("data.zip*"):
        path.unlink()
    server.cut_after = len(old) // 2
    with pytest.raises(DataError, match="interrupted"):
        url_fetch(url, tmp_path, out="second")
    server.files["/data.zip"] = new
    server.last_modified["/data.zip"] = "Wed, 02 Dec 2026 10:00:00 GMT"
    url_fetch(url, tmp_path, out="second")
    assert next((tmp_path / "dl").rglob("data.zip")).read_bytes() == new


def b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


@pytest.mark.parametrize("header", ["Content-MD5", "Digest", "Repr-Digest"])
def test_a_checksum_the_server_announces_is_checked(tmp_path, server, header):
    payload = zip_dir(kaggle(tmp_path / "src"), tmp_path / "data.zip").read_bytes()
    value = {"Content-MD5": b64(hashlib.md5(payload).digest()),
             "Digest": "SHA-256=" + b64(hashlib.sha256(payload).digest()),
             "Repr-Digest": "sha-256=:" + b64(hashlib.sha256(payload).digest()) + ":"}[header]
    server.files["/data.zip"] = payload
    server.headers["/data.zip"] = {header: value}
    server.cut_after = len(payload) // 3  # the checksum of the start holds across the resume
    url = server.url + "/data.zip"
    with pytest.raises(DataError, match="interrupted"):
        url_fetch(url, tmp_path)
    assert url_fetch(url, tmp_path).n_written == 4

    wrong = {"Content-MD5": b64(hashlib.md5(b"other").digest()),
             "Digest": "SHA-256=" + b64(hashlib.sha256(b"other").digest()),
             "Repr-Digest": "sha-256=:" + b64(hashlib.sha256(b"other").digest()) + ":"}[header]
    server.files["/other.zip"] = payload
    server.headers["/other.zip"] = {header: wrong}
    with pytest.raises(DataError, match=r"not the [0-9a-f]+ the server announced.*deleted"):
        url_fetch(server.url + "/other.zip", tmp_path, out="other")
    assert list((tmp_path / "dl").rglob("other.zip*")) == []


def test_fetch_sha256_as_digest_or_as_a_sha256_file_beside_the_url(tmp_path, server):
    payload = zip_dir(kaggle(tmp_path / "src"), tmp_path / "data.zip").read_bytes()
    digest = hashlib.sha256(payload).hexdigest()
    server.files["/data.zip"] = payload
    server.files["/data.zip.sha256"] = f"{digest}  data.zip\n".encode()
    server.files["/bad.zip.sha256"] = f"{'0' * 64}  data.zip\n".encode()
    url = server.url + "/data.zip"

    def run(sha256, out):
        return fetch(FetchParams(source=url, sha256=sha256), tmp_path / out,
                     download_dir=tmp_path / f"dl-{out}")

    assert run(digest.upper(), "a").n_written == 4
    assert run(server.url + "/data.zip.sha256", "b").n_written == 4
    with pytest.raises(DataError, match=rf"SHA-256 is {digest}, not {'0' * 64}.*deleted"):
        run(server.url + "/bad.zip.sha256", "c")
    assert [p for p in (tmp_path / "dl-c").rglob("*") if p.is_file()] == []
    with pytest.raises(DataError, match="64 hex digits"):
        run("abc", "d")
    with pytest.raises(DataError, match="cannot read .*missing.sha256: HTTP 404"):
        run(server.url + "/missing.sha256", "e")
    # a finished download is checked again when reused
    (final,) = (tmp_path / "dl-a").rglob("data.zip")
    final.write_bytes(payload[:-1] + b"!")
    with pytest.raises(DataError, match="SHA-256 is"):
        run(digest, "a")


def test_url_whole_but_not_an_archive_is_deleted(tmp_path, server):
    """Every announced byte came and it is still no archive (a login page, say): nothing to
    resume, so the part goes and the error says to check the URL."""
    server.files["/data.zip"] = b"<html>please log in</html>"
    url = server.url + "/data.zip"
    with pytest.raises(DataError) as e:
        url_fetch(url, tmp_path)
    assert url in str(e.value) and "not a whole zip or tar archive" in str(e.value)
    assert "check the URL" in str(e.value)
    assert [p for p in (tmp_path / "dl").rglob("*") if p.is_file()] == []


def test_unreadable_cached_download_names_the_file_to_delete(tmp_path, server):
    url = server.url + "/data.zip"
    final = cache_folder(tmp_path, url) / "data.zip"
    final.write_bytes(b"PK\x03\x04 damaged after the download")
    with pytest.raises(DataError) as e:
        url_fetch(url, tmp_path)
    assert f"delete {final}" in str(e.value) and url in str(e.value)
    assert server.requests == []


# ----------------------------------------------------------------------------- synthetic


@dataclass
class FakeFilm:
    id: str
    image: np.ndarray
    boneage: float
    male: bool


def _fake_film(i: int, height: int, seed: int, max_age: float) -> FakeFilm:
    rng = np.random.default_rng([seed, i])
    img = rng.integers(0, 256, (height, height * 4 // 5), dtype=np.uint8)
    return FakeFilm(f"syn{i:05d}", img, float(rng.uniform(1, max_age)), bool(rng.integers(2)))


def fake_generate(count: int, height: int = 320, seed: int = 0, max_age_months: float = 228.0):
    for i in range(count):
        yield _fake_film(i, height, seed, max_age_months)


@pytest.fixture
def fake_phantom(monkeypatch):
    def install(generate):
        module = types.ModuleType("boneage.data.phantom")
        module.generate = generate
        monkeypatch.setitem(sys.modules, "boneage.data.phantom", module)
        # `from boneage.data import phantom` takes the package's attribute when it is set
        monkeypatch.setattr(boneage.data, "phantom", module, raising=False)

    return install


def synth(tmp_path: Path, out: str, **kw) -> FetchReport:
    return fetch(FetchParams(source="synthetic", synthetic=SyntheticParams(**kw)), tmp_path / out)


def test_synthetic_with_fake_generator(tmp_path, fake_phantom):
    fake_phantom(fake_generate)
    a = synth(tmp_path, "a", count=12, height=40, seed=3)
    b = synth(tmp_path, "b", count=12, height=40, seed=3)
    c = synth(tmp_path, "c", count=12, height=40, seed=4)
    assert a.layout == "synthetic" and a.n_written == 12 and a.skipped_rows == []
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert (tmp_path / "a" / "films.zip").read_bytes() == (
        tmp_path / "b" / "films.zip"
    ).read_bytes()
    rows = read_labels(tmp_path / "a")
    assert len(rows) == 12 and rows[0]["id"] == "syn00000"
    with zipfile.ZipFile(tmp_path / "a" / "films.zip") as zf:
        img = cv2.imdecode(np.frombuffer(zf.read("syn00003.png"), np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(img, _fake_film(3, 40, 3, 228.0).image)


@pytest.mark.skipif(
    multiprocessing.get_start_method() != "fork" or (os.cpu_count() or 1) < 2,
    reason="the pool path needs fork (to see the monkeypatched module) and two cores",
)
def test_synthetic_pool_path_gives_the_same_films_as_serial_generation(tmp_path, caplog):
    from boneage.data import phantom

    caplog.set_level("INFO", logger="boneage.data.sources")
    synth(tmp_path, "pooled", count=70, height=32, seed=1)
    assert "processes" in caplog.text
    serial = list(phantom.generate(70, height=32, seed=1))
    with zipfile.ZipFile(tmp_path / "pooled" / "films.zip") as archive:
        for film in serial:
            data = np.frombuffer(archive.read(f"{film.id}.png"), dtype=np.uint8)
            assert np.array_equal(cv2.imdecode(data, cv2.IMREAD_UNCHANGED), film.image)
    labels = read_labels(tmp_path / "pooled")
    assert len(labels) == 70


def test_synthetic_bad_film_is_an_error(tmp_path, fake_phantom):
    def twice(count, height=320, seed=0, max_age_months=228.0):
        yield _fake_film(0, height, seed, max_age_months)
        yield _fake_film(0, height, seed, max_age_months)

    fake_phantom(twice)
    with pytest.raises(DataError, match="syn00000"):
        synth(tmp_path, "raw", count=2, height=32)


@pytest.mark.skipif(
    importlib.util.find_spec("boneage.data.phantom") is None, reason="boneage/data/phantom.py not written yet"
)
def test_synthetic_with_real_phantom(tmp_path):
    a = synth(tmp_path, "a", count=6, height=64)
    b = synth(tmp_path, "b", count=6, height=64)
    assert a.n_written == 6 and a.fingerprint == b.fingerprint
    assert len(read_labels(tmp_path / "a")) == 6


# ----------------------------------------------------------------------------- real data


@pytest.mark.shared_data
def test_fullres_sample(tmp_path):
    src = SHARED / "rsna-bone-age-fullres-sample"
    if not (src / "boneage-training-dataset.csv").is_file():
        pytest.skip(f"{src} not present")
    report = run(src, tmp_path / "raw")
    assert report.layout == "kaggle"
    assert (report.n_labels, report.n_images, report.n_written) == (36, 36, 36)
    assert report.labels_without_images == [] == report.images_without_labels
    with zipfile.ZipFile(tmp_path / "raw" / "films.zip") as zf:
        names = zf.namelist()
        first = names[0]
        assert zf.read(first) == (src / "boneage-training-dataset" / first).read_bytes()
    assert len(names) == 36 and len(read_labels(tmp_path / "raw")) == 36


def test_a_folder_source_does_not_follow_links_that_leave_it(tmp_path, caplog):
    """Issue 22: a film (or a folder) linked from outside the source is not read; a link
    that stays inside is."""
    src = kaggle(tmp_path / "src")
    outside = tmp_path / "elsewhere"
    write_images(outside, (77,))
    images = src / "boneage-training-dataset"
    (images / "77.png").symlink_to(outside / "77.png")  # a film from another study
    (images / "more").symlink_to(outside, target_is_directory=True)
    (images / "3b.png").symlink_to(images / "3.png")  # inside: fine
    labels = src / "boneage-training-dataset.csv"
    labels.write_bytes(labels.read_bytes() + b"77,100,True\r\n")
    with caplog.at_level(logging.WARNING, logger="boneage.data.sources"):
        report = run(src, tmp_path / "raw")
    assert "77" not in [row["id"] for row in read_labels(tmp_path / "raw")]
    assert report.n_written == 4
    assert "2 symbolic link(s)" in caplog.text and "not followed" in caplog.text
