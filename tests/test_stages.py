"""Stage scripts fail on bad input with one clear line naming the file, never a traceback."""

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _stage(name, tmp_path, params, *args):
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(params))
    return subprocess.run([sys.executable, str(ROOT / "stages" / f"{name}.py"), "--params",
                           str(params_path), *map(str, args)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)


def test_fetch_of_a_folder_with_a_bad_age_names_file_row_and_field(tmp_path):
    source = tmp_path / "films"
    source.mkdir()
    (source / "labels.csv").write_text("id,boneage,male\n1,12,True\n2,twelve,False\n")
    for i in (1, 2):
        (source / f"{i}.png").write_bytes(b"not decoded by fetch")
    result = _stage("fetch", tmp_path, {"fetch": {"source": str(source)}}, "--out",
                    tmp_path / "raw")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "labels.csv" in result.stderr and "boneage" in result.stderr
    assert "twelve" in result.stderr or "line 3" in result.stderr or "row 2" in result.stderr


def test_preprocess_without_fetch_output_says_what_to_run(tmp_path):
    result = _stage("preprocess", tmp_path, {"preprocess": {"size": 32}}, "--raw",
                    tmp_path / "nothing", "--out", tmp_path / "prepared")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "run the fetch stage first" in result.stderr


def test_preprocess_with_on_error_fail_names_the_unreadable_film(tmp_path):
    from factories import write_raw

    import zipfile

    write_raw(tmp_path / "raw", count=6)
    with zipfile.ZipFile(tmp_path / "raw" / "films.zip", "a") as archive:
        archive.writestr("f9999.png", b"\x89PNG\r\n\x1a\nbroken")
    labels = (tmp_path / "raw" / "labels.csv").read_text() + "f9999,100,1\n"
    (tmp_path / "raw" / "labels.csv").write_text(labels)
    result = _stage("preprocess", tmp_path, {"preprocess": {"size": 32, "on_error": "fail"}},
                    "--raw", tmp_path / "raw", "--out", tmp_path / "prepared")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "f9999" in result.stderr and "on_error=fail" in result.stderr
    skipped = _stage("preprocess", tmp_path, {"preprocess": {"size": 32, "on_error": "skip"}},
                     "--raw", tmp_path / "raw", "--out", tmp_path / "prepared2")
    assert skipped.returncode == 0
    assert "f9999" in (tmp_path / "prepared2" / "store.json").read_text()
