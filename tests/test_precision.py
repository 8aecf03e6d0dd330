"""train.precision auto: bf16 only where it is native and measured faster than float32."""

import json

import pytest
import tensorflow as tf
from factories import make_store

from boneage.learning import precision
from boneage.learning import training
from boneage.kernel.config import TrainParams
from boneage.kernel.artifacts import TRAINING_SUMMARY


class FakeMachine:
    """A clock and step functions: each step of a policy advances the clock by its cost."""

    def __init__(self, seconds_per_step: dict[str, float]):
        self.now = 0.0
        self.seconds_per_step = seconds_per_step
        self.calls: list[str] = []
        self.built: list[str] = []

    def clock(self) -> float:
        return self.now

    def make_step(self, policy: str):
        self.built.append(policy)

        def step():
            self.calls.append(policy)
            self.now += self.seconds_per_step[policy]

        return step


def test_probe_takes_bf16_when_it_is_clearly_faster_and_reports_films_per_second():
    machine = FakeMachine({"float32": 0.4, "mixed_bfloat16": 0.2})
    record = precision.probe_precision(machine.make_step, 32, clock=machine.clock)
    assert record["chosen"] == "mixed_bfloat16"
    assert record["float32_films_per_s"] == pytest.approx(80.0)
    assert record["mixed_bfloat16_films_per_s"] == pytest.approx(160.0)
    assert record["timed_steps"] == 5
    assert sorted(machine.built) == ["float32", "mixed_bfloat16"]
    # 3 warm-up and 5 timed steps each, alternating, each policy first in turn when timed
    assert machine.calls.count("float32") == machine.calls.count("mixed_bfloat16") == 8
    timed = machine.calls[6:]
    assert timed[:4] == ["float32", "mixed_bfloat16", "mixed_bfloat16", "float32"]


@pytest.mark.parametrize("bf16_seconds", [0.38, 0.4, 0.6])
def test_probe_keeps_float32_unless_bf16_is_at_least_ten_percent_faster(bf16_seconds):
    machine = FakeMachine({"float32": 0.4, "mixed_bfloat16": bf16_seconds})
    record = precision.probe_precision(machine.make_step, 8, clock=machine.clock)
    assert record["chosen"] == "float32"
    assert record["mixed_bfloat16_films_per_s"] == pytest.approx(8 / bf16_seconds, abs=0.05)


def test_probe_cuts_its_steps_to_stay_within_its_budget():
    machine = FakeMachine({"float32": 4.0, "mixed_bfloat16": 2.0})
    record = precision.probe_precision(machine.make_step, 16, budget_seconds=20.0,
                                       clock=machine.clock)
    # two warm-up rounds take 12 s (> half the budget): the third is skipped, and one timed
    # round of 6 s is all that fits before 20 s
    assert len(machine.calls) == 6 and record["timed_steps"] == 1
    assert record["probe_seconds"] == pytest.approx(18.0)
    assert record["chosen"] == "mixed_bfloat16"
    with pytest.raises(ValueError, match="batch_size, warmup and steps >= 1"):
        precision.probe_precision(machine.make_step, 0, clock=machine.clock)


def test_policy_scope_builds_under_the_policy_and_restores_the_previous_one():
    keras = pytest.importorskip("keras")
    before = keras.mixed_precision.global_policy().name
    with precision.policy_scope("mixed_bfloat16"):
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
        layer = keras.layers.Dense(1)
    assert layer.dtype_policy.name == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().name == before
    with pytest.raises(RuntimeError), precision.policy_scope("mixed_bfloat16"):
        raise RuntimeError("a build that fails")
    assert keras.mixed_precision.global_policy().name == before


def never(policy):
    raise AssertionError(f"the probe ran ({policy}) where it must not")


def test_explicit_precision_skips_the_probe(monkeypatch):
    monkeypatch.setattr(precision, "bf16_may_be_faster", lambda: True)
    for policy in ("float32", "mixed_bfloat16"):
        record = precision.choose_precision(policy, never, batch_size=8)
        assert record == {"chosen": policy, "reason": "set in train.precision"}
    with pytest.raises(ValueError, match="auto, float32 or mixed_bfloat16"):
        precision.choose_precision("float16", never)


def test_auto_takes_float32_without_a_probe_where_bf16_would_be_emulated(monkeypatch):
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"sse2", "avx2", "avx512f"})
    record = precision.choose_precision("auto", never, batch_size=8)
    assert record["chosen"] == "float32" and "emulate" in record["reason"]
    for flags in ({"avx2", "avx512_bf16"}, {"amx_bf16", "amx_tile"}):
        monkeypatch.setattr(precision, "cpu_flags", lambda flags=flags: flags)
        assert precision.bf16_may_be_faster()
    monkeypatch.setattr(precision, "cpu_flags", lambda: set())
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: ["/physical_device:GPU:0"] if kind == "GPU" else [])
    assert precision.bf16_may_be_faster()


def test_auto_probes_where_bf16_is_native_but_not_across_replicas(monkeypatch):
    monkeypatch.setattr(precision, "bf16_may_be_faster", lambda: True)
    machine = FakeMachine({"float32": 0.1, "mixed_bfloat16": 0.3})
    record = precision.choose_precision("auto", machine.make_step, batch_size=4,
                                        clock=machine.clock)
    assert record["chosen"] == "float32" and record["timed_steps"] == 5
    replicated = precision.choose_precision("auto", never, batch_size=4, replicas=2)
    assert replicated["chosen"] == "mixed_bfloat16" and "replicas" in replicated["reason"]
    with pytest.raises(ValueError, match="needs a probe"):
        precision.choose_precision("auto", batch_size=4)


@pytest.mark.slow
def test_probe_runs_in_the_stage_is_recorded_and_leaves_training_unchanged(tmp_path,
                                                                            monkeypatch):
    """The probe builds and steps real models (drawing from the seeds); training after it
    must equal training with the chosen policy set explicitly."""
    monkeypatch.setattr(precision, "bf16_may_be_faster", lambda: True)
    store_dir, split_dir = make_store(tmp_path, count=40, size=32)
    tiny = dict(width=4, epochs=2, batch_size=8, early_stopping_patience=0, warmup_epochs=0)
    probed = training.run_training(store_dir, split_dir, TrainParams(**tiny), tmp_path / "auto")
    summary = json.loads((tmp_path / "auto" / TRAINING_SUMMARY).read_text())
    probe = summary["precision_probe"]
    assert probe["float32_films_per_s"] > 0 and probe["mixed_bfloat16_films_per_s"] > 0
    assert summary["precision"] == probe["chosen"] == probed.precision
    assert probe["probe_seconds"] < 60
    explicit = training.run_training(store_dir, split_dir,
                                     TrainParams(**tiny, precision=probe["chosen"]),
                                     tmp_path / "explicit")
    assert explicit.history == probed.history
