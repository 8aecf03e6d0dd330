"""Section 6, scaling: hours for the full RSNA set at larger sizes, from per-film costs
measured here."""

from __future__ import annotations

import json

from perf_sections.common import FULLRES, default_params, imaging_settings, run_child
from perf_sections.training import train_rate


def bench_scaling(preprocess: dict, sizes: list[int], train_films: int) -> dict:
    """Hours for the full RSNA set from per-film costs measured here."""
    if not FULLRES.is_dir():
        return {"skipped": f"{FULLRES} not found"}
    base = imaging_settings()
    sizes_arg = ",".join(map(str, [base["size"], *sizes]))
    cost = run_child("prepare_cost", FULLRES / "boneage-training-dataset", json.dumps(base),
                     sizes_arg)
    train = default_params()["train"]
    rates = {size: train_rate(size, train["width"], train_films, "mixed_bfloat16", train["head"])
             for size in sizes}
    speedup = None
    if preprocess.get("preprocess_all_cores_films_per_s"):
        speedup = preprocess["preprocess_all_cores_films_per_s"] / \
            preprocess["preprocess_1worker_films_per_s"]
    epochs = train["epochs"]
    rows = []
    for films in (12_611, 14_236):
        for size in sizes:
            one = cost[str(size)] * films
            rows.append({
                "films": films, "size": size,
                "preprocess_1worker_min": round(one / 60, 1),
                "preprocess_all_cores_min": round(one / speedup / 60, 1) if speedup else None,
                "store_gb": round(films * size * size / 2**30, 2),
                "train_epoch_min": round(films / rates[size] / 60, 1),
                f"train_{epochs}_epochs_h": round(films * epochs / rates[size] / 3600, 1),
            })
    return {"prepare_ms_per_film_1core": {k: round(v * 1000, 1) for k, v in cost.items()},
            "train_films_per_s_bf16": {str(k): round(v, 2) for k, v in rates.items()},
            "preprocess_worker_speedup": round(speedup, 2) if speedup else None,
            "note": "train epoch over all films (no split); bf16; default compact model",
            "rows": rows}
