"""``boneage predict``/``serve`` refuse wrong input with one clear line, before any model (or
TensorFlow) loads."""

import json
import os
import subprocess
import sys

import pytest

from boneage.interfaces.cli import build_parser

CHECK = """
import contextlib, io, json, sys
from boneage.interfaces.cli import main
runs = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        runs.append([main(argv), err.getvalue()])
loaded = [m for m in ("tensorflow", "keras") if m in sys.modules]
print(json.dumps({"runs": runs, "loaded": loaded}))
"""


def test_wrong_predict_input_fails_at_once_without_tensorflow(tmp_path):
    film = tmp_path / "film.png"
    film.write_bytes(b"\x89PNG\r\n\x1a\n")  # never read: the flags are refused first
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no films here")
    cases = {
        "sex must be M or F, got 'X'": ["--sex", "X"],
        "chronological age '300' is 300.0 months (25 years 0 months); bone age is assessed "
        "from 1 month to 20 years (1 to 240 months)": ["--sex", "F", "--chronological-age", "300"],
        "chronological age '0' is 0.0 months": ["--sex", "F", "--chronological-age", "0"],
        "months must be 0-11 when years are given": ["--sex", "F", "--chronological-age", "10y15m"],
        f"--explain {film}: is a file, not a folder": ["--sex", "F", "--explain", str(film)],
    }
    argvs = [["predict", str(film), *flags] for flags in cases.values()]
    other = tmp_path / "other.png"
    other.write_bytes(b"\x89PNG\r\n\x1a\n")
    argvs += [["predict", str(tmp_path / "empty"), "--sex", "F"],
              ["predict", str(tmp_path / "notes"), "--sex", "F"],
              ["predict", str(tmp_path / "missing.png"), "--sex", "F"],
              ["predict", str(film)],  # a PNG cannot say its sex: before the model loads
              ["predict", str(film), str(other), "--sex", "F", "--chronological-age", "10y"],
              ["predict", str(film), str(other), "--sex", "F", "--chronological-age",
               "nope.png=10y"]]
    messages = [*cases, f"{tmp_path / 'empty'}: folder holds no films",
                f"{tmp_path / 'notes'}: folder holds no films", "missing.png: no such file",
                f"{film}: sex unknown: pass --sex M or F",
                "--chronological-age 10y: one age for 2 films; an age is one child's, so give "
                "one per film as --chronological-age FILM=AGE",
                "--chronological-age nope.png=10y: 'nope.png' matches none of the films"]
    result = subprocess.run([sys.executable, "-c", CHECK, json.dumps(argvs)], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    for (code, err), message in zip(out["runs"], messages):
        assert code == 2 and err.startswith("error: ") and message in err, (message, err)
        assert "Traceback" not in err and err.count("\n") == 1
    assert out["loaded"] == []  # nothing above needed TensorFlow


@pytest.mark.parametrize("value", ["-5", "0", "inf", "nan", "1e9", "lots"])
def test_max_upload_mb_is_checked_when_parsing(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["serve", "--max-upload-mb", value])
    assert exit_info.value.code == 2
    assert "--max-upload-mb" in capsys.readouterr().err


def test_max_upload_mb_accepts_sizes():
    assert build_parser().parse_args(["serve", "--max-upload-mb", "0.5"]).max_upload_mb == 0.5
    assert build_parser().parse_args(["serve"]).max_upload_mb == 20.0


def test_ages_per_film_are_matched_by_path_or_name(tmp_path):
    from boneage.kernel.errors import UsageError
    from boneage.reading.inputs import chronological_ages

    one, two = tmp_path / "a" / "hand.png", tmp_path / "b" / "hand.png"
    three = tmp_path / "b" / "other.png"
    assert chronological_ages(["10y2m"], [one]) == 122
    assert chronological_ages(None, [one, two]) is None
    assert chronological_ages([f"{one}=10y", "other.png=84"], [one, two, three]) == {
        str(one): 120, str(three): 84}
    with pytest.raises(UsageError, match="matches 2 films"):
        chronological_ages(["hand.png=10y"], [one, two])
    with pytest.raises(UsageError, match="from 1 month to 20 years"):
        chronological_ages(["other.png=21y"], [three])


def test_a_device_or_an_oversized_file_is_reported_not_read(tmp_path, monkeypatch):
    from boneage.reading import inputs
    from boneage.kernel.errors import ImageError

    if os.path.exists("/dev/zero"):
        with pytest.raises(ImageError, match="/dev/zero: not a regular file"):
            inputs.read_film_bytes("/dev/zero")  # would never end
    big = tmp_path / "big.png"
    big.write_bytes(bytes(2048))
    monkeypatch.setattr(inputs, "MAX_FILE_BYTES", 1024)
    with pytest.raises(ImageError, match=r"big\.png: file is over 1,024 bytes"):
        inputs.read_film_bytes(big)
    monkeypatch.setattr(inputs, "MAX_FILE_BYTES", 4096)
    assert inputs.read_film_bytes(big) == bytes(2048)


def test_crossval_from_a_missing_or_broken_json_is_one_line(tmp_path, capsys):
    from boneage.interfaces.cli import main

    broken = tmp_path / "shown.json"
    broken.write_text("{not json")
    for path, message in ((tmp_path / "absent.json", "cannot read it"),
                          (broken, "not `dvc exp show --json` output")):
        assert main(["crossval", "--from-json", str(path), "--out", str(tmp_path / "o.json")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --from-json {path}: {message}") and err.count("\n") == 1
