"""Section 1, preprocess: films/s of the preprocess stage against cv2 decode-only, and its
peak memory, on the full-resolution films replicated into a films.zip."""

from __future__ import annotations

import csv
import json
import statistics
import zipfile
from pathlib import Path

from perf_sections.common import FULLRES, cores, imaging_settings, run_child


def replicated_raw(out: Path, count: int) -> Path:
    """films.zip + labels.csv as the fetch stage writes them: the 36 full-res films, repeated."""
    films = sorted((FULLRES / "boneage-training-dataset").glob("*.png"))
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out / "films.zip", "w", zipfile.ZIP_STORED) as archive, \
            open(out / "labels.csv", "w", newline="") as labels:
        writer = csv.writer(labels)
        writer.writerow(["id", "boneage", "male"])
        for index in range(count):
            archive.write(films[index % len(films)], f"{index:05d}.png")
            writer.writerow([f"{index:05d}", 100 + index % 100, index % 2])
    return out


def bench_preprocess(work: Path, films: int, rounds: int = 3) -> dict:
    """Films/s of the preprocess against decode alone. The five measurements alternate for
    ``rounds`` rounds and the medians are kept: a shared VM's speed drifts by 10-20% over
    minutes, and alternating spreads that drift over all of them alike."""
    if not FULLRES.is_dir():
        return {"skipped": f"{FULLRES} not found"}
    settings = json.dumps(imaging_settings())
    quarter, full = replicated_raw(work / "raw-quarter", max(8, films // 4)), \
        replicated_raw(work / "raw", films)
    runs: dict[str, list[dict]] = {"decode": [], "decode_all_cores": [], "pipeline_decode": [],
                                   "one_worker": [], "all_cores": []}
    for _ in range(rounds):
        runs["decode"].append(run_child("decode_only", full / "films.zip"))
        runs["decode_all_cores"].append(run_child("decode_all_cores", full / "films.zip"))
        runs["pipeline_decode"].append(run_child("decode_only", full / "films.zip", "pipeline"))
        runs["one_worker"].append(run_child("build_store", full, work / "store-1", 1, settings, 1))
        runs["all_cores"].append(run_child("build_store", full, work / "store-n", 0, settings, 0))
    rate = {name: statistics.median(run["films_per_s"] for run in values)
            for name, values in runs.items()}
    small = run_child("build_store", quarter, work / "store-q", 0, settings, 0)
    every = runs["all_cores"][-1]
    store_mb = (work / "store-n" / "films.npy").stat().st_size / 2**20
    return {
        "films": films, "rounds": rounds, "workers_all": cores(), "settings": json.loads(settings),
        "decode_only_1core_films_per_s": round(rate["decode"], 1),
        "preprocess_1worker_films_per_s": round(rate["one_worker"], 1),
        "preprocess_all_cores_films_per_s": round(rate["all_cores"], 1),
        "ratio_1worker_vs_decode": round(rate["one_worker"] / rate["decode"], 2),
        "ratio_all_cores_vs_decode_1core": round(rate["all_cores"] / rate["decode"], 2),
        # What the machine allows: cv2 decode alone in one process per core.
        "decode_only_all_cores_films_per_s": round(rate["decode_all_cores"], 1),
        "ratio_decode_all_cores_vs_1core": round(rate["decode_all_cores"] / rate["decode"], 2),
        "ratio_all_cores_vs_decode_all_cores": round(rate["all_cores"] / rate["decode_all_cores"], 2),
        # The pipeline's own decoder (decoding.decode_raw: imagecodecs for grey PNGs).
        "pipeline_decode_1core_films_per_s": round(rate["pipeline_decode"], 1),
        "ratio_pipeline_decode_vs_cv2": round(rate["pipeline_decode"] / rate["decode"], 2),
        "memory": {
            "films": [quarter_count(quarter), films],
            "main_process_peak_rss_mb": [round(small["main_rss_mb"], 1),
                                         round(every["main_rss_mb"], 1)],
            "tree_peak_rss_mb": [small["tree_peak_rss_mb"], every["tree_peak_rss_mb"]],
            "store_mb": round(store_mb, 1),
        },
        "runs": {**{name: [round(run["films_per_s"], 1) for run in values]
                    for name, values in runs.items()}, "quarter": small},
    }


def quarter_count(raw: Path) -> int:
    with zipfile.ZipFile(raw / "films.zip") as archive:
        return len(archive.namelist())
