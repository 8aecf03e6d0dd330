"""Films read in worker processes (``boneage dicom-node --workers``): the pool gives the
answers the reader gives in the node's own process, says at start-up why a worker cannot
load its models, and outlives a worker that dies."""

from __future__ import annotations

import os
import signal
import time

import pytest

pytest.importorskip("pydicom")
pytest.importorskip("highdicom")

from factories import dx_film, hand_radiograph, make_export, to_bytes  # noqa: E402

from boneage.kernel.errors import BoneAgeError  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    # TFLite: a worker reads through LiteRT and starts without TensorFlow (seconds, not tens)
    return make_export(tmp_path_factory.mktemp("model"), count=40, size=32,
                       formats=("keras", "tflite"))


@pytest.fixture(scope="module")
def films():
    return [to_bytes(dx_film(hand_radiograph(age, 1, seed=age), sex="M"))
            for age in (60, 120, 170)]


def test_the_pool_answers_as_the_reader_in_this_process(model_dir, films, tmp_path):
    from boneage.reading.reader_pool import ReaderPool, ReaderSpec

    spec = ReaderSpec(model_dirs=(model_dir,), model_format="tflite")
    here = spec.build()
    pool = ReaderPool(spec, workers=2)
    try:
        assert len(set(pool.start())) == 2 and os.getpid() not in pool.start()
        for data in films:
            ours, theirs = here.answer(data), pool.answer(data)
            assert theirs.status == ours.status == "read"
            assert theirs.reading.months == pytest.approx(ours.reading.months, abs=1e-4)
            assert [r.Modality for r in theirs.results] == ["SR", "OT"]
            assert theirs.results[0].SOPInstanceUID == ours.results[0].SOPInstanceUID
        received = tmp_path / "received.dcm"  # as the node receives a film: into a file
        received.write_bytes(films[1])
        assert pool.answer(received).reading.months == pytest.approx(
            here.answer(films[1]).reading.months, abs=1e-4)
        bad = pool.answer(b"not a DICOM at all", "SOP 1.2.3")
        assert bad.status == "unreadable" and "SOP 1.2.3" in bad.reason
    finally:
        pool.close()


def test_a_worker_that_cannot_load_its_models_says_why_at_start(tmp_path):
    from boneage.reading.reader_pool import ReaderPool, ReaderSpec

    pool = ReaderPool(ReaderSpec(model_dirs=(tmp_path / "nowhere",), model_format="tflite"), 1)
    try:
        with pytest.raises(BoneAgeError, match="nowhere"):
            pool.start()
    finally:
        pool.close()


def test_a_worker_killed_costs_no_film_and_the_pool_starts_again(model_dir, films):
    from boneage.reading.reader_pool import ReaderPool, ReaderSpec

    pool = ReaderPool(ReaderSpec(model_dirs=(model_dir,), model_format="tflite"), workers=2)
    try:
        pids = pool.start()
        os.kill(pids[0], signal.SIGKILL)  # as the OOM killer or a decoder's crash would
        time.sleep(0.5)
        answer = pool.answer(films[0], "SOP 1.2.3.4")
        assert answer.status == "read", answer.reason
        assert pool.restarts == 1
        assert pids[0] not in pool.start()
    finally:
        pool.close()


def test_workers_must_be_at_least_one_and_a_spec_names_its_models(model_dir):
    from boneage.reading.reader_pool import ReaderPool, ReaderSpec

    with pytest.raises(ValueError, match="at least 1"):
        ReaderPool(ReaderSpec(model_dirs=(model_dir,)), workers=0)
    with pytest.raises(ValueError, match="either"):
        ReaderSpec()
