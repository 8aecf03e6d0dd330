"""The DICOM node's MicroBatcher: films from several associations read by the models in one
call, each film getting its own row back, and an error reaching every film of its call."""

import threading

import numpy as np
import pytest

from boneage.reading.dicom_reading import MicroBatcher


class CountingEnsemble:
    """predict_prepared's stand-in: months = 10 x the film's number + sex, one column per
    'model'; it records each call's batch size."""

    def __init__(self, fail: bool = False):
        self.sizes, self.fail = [], fail
        self.lock = threading.Lock()

    def predict_prepared(self, prepared, males):
        with self.lock:
            self.sizes.append(len(prepared))
        if self.fail:
            raise RuntimeError("the model broke")
        months = np.array([10.0 * p + m for p, m in zip(prepared, males)])
        return np.stack([months, months + 1], axis=1)


def read_together(batcher, films: int) -> dict:
    results, start = {}, threading.Barrier(films)

    def one(number):
        start.wait()
        try:
            results[number] = batcher.predict(number, number % 2)
        except RuntimeError as exc:
            results[number] = exc

    threads = [threading.Thread(target=one, args=(n,)) for n in range(films)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return results


def test_films_arriving_together_share_model_calls_and_each_gets_its_own_row():
    ensemble = CountingEnsemble()
    batcher = MicroBatcher(ensemble, max_batch=4, wait_seconds=0.05)
    results = read_together(batcher, 12)
    assert sorted(results) == list(range(12))
    for number, months in results.items():
        np.testing.assert_array_equal(months, [10.0 * number + number % 2,
                                               10.0 * number + number % 2 + 1])
    assert sum(ensemble.sizes) == 12 and max(ensemble.sizes) <= 4
    assert batcher.calls == len(ensemble.sizes) < 12  # batched, never one call a film


def test_one_film_alone_is_read_at_once_and_the_batcher_can_lead_again():
    ensemble = CountingEnsemble()
    batcher = MicroBatcher(ensemble, max_batch=8, wait_seconds=0.0)
    np.testing.assert_array_equal(batcher.predict(3, 1), [31.0, 32.0])
    np.testing.assert_array_equal(batcher.predict(4, 0), [40.0, 41.0])
    assert ensemble.sizes == [1, 1]


def test_a_model_error_reaches_every_film_of_its_call_and_the_next_films_still_read():
    ensemble = CountingEnsemble(fail=True)
    batcher = MicroBatcher(ensemble, max_batch=8, wait_seconds=0.05)
    results = read_together(batcher, 5)
    assert all(isinstance(r, RuntimeError) for r in results.values()) and len(results) == 5
    ensemble.fail = False
    np.testing.assert_array_equal(batcher.predict(2, 0), [20.0, 21.0])
    with pytest.raises(ValueError, match="at least 1"):
        MicroBatcher(ensemble, max_batch=0)
