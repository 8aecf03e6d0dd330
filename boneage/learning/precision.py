"""Training precision: where bf16 can pay, the ``train.precision: auto`` probe, and
:func:`policy_scope`, the one place Keras' global mixed-precision policy is set.

Keras layers take the global dtype policy when they are built, so every model built under a
policy other than the process default (training, the probe, export's float32 copy, the
accelerator sweep) is built inside :func:`policy_scope`, which puts the previous policy
back afterwards. Keras only at import, no TensorFlow (it is imported only to look for a GPU
in :func:`bf16_may_be_faster`), so the sweep can use the same scope under
``KERAS_BACKEND=jax``, and export can take it without the training recipe.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import keras

log = logging.getLogger(__name__)

BF16_MIN_SPEEDUP = 1.10  # auto takes bf16 only this much faster: a tie keeps float32's precision
PROBE_POLICIES = ("float32", "mixed_bfloat16")


@contextmanager
def policy_scope(policy: str) -> Iterator[None]:
    """Keras' global dtype policy set to ``policy`` (``float32``, ``mixed_bfloat16``) for the
    models built inside, the previous policy set again on leaving, errors included."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def cpu_flags() -> set[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def bf16_may_be_faster() -> bool:
    """Whether bf16 can run natively here: AVX512-BF16 or AMX on the CPU, or a GPU. Elsewhere
    TensorFlow emulates bf16, always slower than float32, so there is nothing to measure."""
    import tensorflow as tf  # here only: the module stays importable without TensorFlow

    native = {"avx512_bf16", "amx_bf16"} & cpu_flags()
    return bool(native or tf.config.list_physical_devices("GPU"))


def probe_precision(make_step: Callable[[str], Callable[[], object]], batch_size: int, *,
                    warmup: int = 3, steps: int = 5, budget_seconds: float = 20.0,
                    clock: Callable[[], float] = time.perf_counter) -> dict:
    """Films per second of a training step under float32 and under mixed_bfloat16, and the
    policy ``auto`` takes: bf16 only when at least ``BF16_MIN_SPEEDUP`` times as fast.

    Native bf16 is not always faster: a small model, or one whose time goes to ops without a
    bf16 kernel, can run slower in bf16 than in float32, so the flags alone cannot decide.
    ``make_step(policy)`` returns a function running one training step of the model built
    under ``policy``. The policies alternate step by step, in turn first, so noise (another
    process, the CPU's clock) hits both alike. The first ``warmup`` steps of each (tracing and
    first-touch allocations) are not timed, and the timed steps are cut so the whole probe
    stays near ``budget_seconds``; ``clock`` is injectable for tests.
    """
    if batch_size < 1 or warmup < 1 or steps < 1:
        raise ValueError(f"the precision probe needs batch_size, warmup and steps >= 1, got "
                         f"{batch_size}, {warmup} and {steps}")
    started = clock()
    run = {policy: make_step(policy) for policy in PROBE_POLICIES}
    last = {}
    for index in range(warmup):
        for policy in PROBE_POLICIES:
            before = clock()
            run[policy]()
            last[policy] = clock() - before
        if index and clock() - started > budget_seconds / 2:
            break  # a slow model: its warm-up has had half the budget
    per_round = max(sum(last.values()), 1e-9)
    rounds = int(max(1, min(steps, (budget_seconds - (clock() - started)) // per_round)))
    elapsed = dict.fromkeys(PROBE_POLICIES, 0.0)
    for index in range(rounds):
        for policy in PROBE_POLICIES if index % 2 == 0 else PROBE_POLICIES[::-1]:
            before = clock()
            run[policy]()
            elapsed[policy] += clock() - before
    rates = {policy: batch_size * rounds / max(seconds, 1e-9)
             for policy, seconds in elapsed.items()}
    chosen = ("mixed_bfloat16"
              if rates["mixed_bfloat16"] >= BF16_MIN_SPEEDUP * rates["float32"] else "float32")
    log.info("precision probe (%d timed steps each): float32 %.1f films/s, mixed_bfloat16 "
             "%.1f films/s -> %s", rounds, rates["float32"], rates["mixed_bfloat16"], chosen)
    return {"float32_films_per_s": round(rates["float32"], 1),
            "mixed_bfloat16_films_per_s": round(rates["mixed_bfloat16"], 1),
            "chosen": chosen, "timed_steps": rounds,
            "probe_seconds": round(clock() - started, 1)}


def choose_precision(precision: str,
                     make_step: Callable[[str], Callable[[], object]] | None = None, *,
                     batch_size: int = 1, replicas: int = 1, **probe_options) -> dict:
    """``train.precision`` as a Keras policy, with how it was chosen: ``{"chosen": policy,
    "reason": ...}``, or the probe's films/s of each policy (:func:`probe_precision`).

    ``auto`` takes float32 without measuring where bf16 would be emulated, and where several
    replicas train (each worker would measure its own machine, and replicas must agree) takes
    bf16 where it is native; otherwise it times ``make_step`` under each policy.
    """
    if precision not in ("auto", *PROBE_POLICIES):
        raise ValueError(f"train.precision must be auto, float32 or mixed_bfloat16, got "
                         f"{precision!r}")
    if precision != "auto":
        return {"chosen": precision, "reason": "set in train.precision"}
    if not bf16_may_be_faster():
        return {"chosen": "float32", "reason": "no native bf16 here (no AVX512-BF16 or AMX, "
                "no GPU): TensorFlow would emulate it, slower than float32"}
    if replicas > 1:
        return {"chosen": "mixed_bfloat16", "reason": f"{replicas} replicas must agree, so no "
                "per-machine probe: bf16 as it runs natively"}
    if make_step is None:
        raise ValueError("train.precision auto on a machine with native bf16 needs a probe: "
                         "pass make_step, one training step of the model under a policy")
    return probe_precision(make_step, batch_size, **probe_options)
