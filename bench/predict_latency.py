"""Single-film latency (decode, preprocess, model) and batch throughput on CPU, for every
exported format in one run, plus the latency of the running web API.

    python bench/predict_latency.py [--model models/boneage] [--repeats 3] [--batch-films 128]

Formats are measured round-robin (one film through keras, savedmodel, tflite, then the next
film), so machine noise hits them alike; figures are also given as ratios to keras. The
CLI's warm path is `Ensemble.predict_bytes` after a warm-up, exactly what `boneage predict`
and the web app call per film. The API figure is a POST /api/predict round trip on loopback
(with and without the Grad-CAM heatmap) to a `boneage serve` started by this script.
Writes bench/results/predict-latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

FORMATS = ("keras", "savedmodel", "tflite")


def percentiles(values: list[float]) -> dict:
    ms = np.asarray(values) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1), "n": len(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/boneage"))
    parser.add_argument("--repeats", type=int, default=3, help="passes over the films")
    parser.add_argument("--films", type=int, default=24)
    parser.add_argument("--batch-films", type=int, default=128)
    parser.add_argument("--api-requests", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path("bench/results/predict-latency.json"))
    args = parser.parse_args()

    import httpx
    from serving import films as load_films
    from serving import start_server

    from boneage.reading.predictor import Ensemble

    films, films_text = load_films(args.films)
    models = {fmt: Ensemble([args.model], model_format=fmt) for fmt in FORMATS}
    for ensemble in models.values():  # warm-up: graph building, first allocations
        for name, data in films[:2]:
            ensemble.predict_bytes(data, name, sex="M")
    single = {fmt: [] for fmt in FORMATS}
    stages = {"decode_prepare": []}
    for _ in range(args.repeats):
        for name, data in films:
            started = time.perf_counter()
            film = models["tflite"].read(data, name)
            models["tflite"].prepare(film)
            stages["decode_prepare"].append(time.perf_counter() - started)
            for fmt in FORMATS:
                started = time.perf_counter()
                models[fmt].predict_bytes(data, name, sex="M")
                single[fmt].append(time.perf_counter() - started)

    # Batch throughput: predict_paths over files on disk, batches of 32, as `boneage predict DIR`.
    import tempfile

    throughput = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(args.batch_films):
            name, data = films[i % len(films)]
            path = Path(tmp) / f"{i:05d}-{name}"
            path.write_bytes(data)
            paths.append(path)
        for fmt in FORMATS:
            started = time.perf_counter()
            readings = models[fmt].predict_paths(paths, sex="M", batch_size=32)
            elapsed = time.perf_counter() - started
            assert all(r.error is None for r in readings)
            throughput[fmt] = round(len(paths) / elapsed, 2)

    # The web API, served with the format `boneage serve` picks by default.
    process, url = start_server(args.model)
    try:
        fmt_served = httpx.get(f"{url}/healthz").json()["format"]
        api = {}
        with httpx.Client(timeout=60) as client:
            for explain in (False, True):
                times = []
                for i in range(args.api_requests + 2):
                    name, data = films[i % len(films)]
                    started = time.perf_counter()
                    response = client.post(f"{url}/api/predict", files={"file": (name, data)},
                                           data={"sex": "M", "explain": str(explain).lower()})
                    elapsed = time.perf_counter() - started
                    response.raise_for_status()
                    if i >= 2:  # the first two warm the server's paths
                        times.append(elapsed)
                api["with_heatmap" if explain else "without_heatmap"] = percentiles(times)
    finally:
        process.terminate()
        process.wait(timeout=30)

    base = np.percentile(single["keras"], 50)
    result = {
        "model": str(args.model),
        "films": films_text,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, 1-min load average "
                   f"{os.getloadavg()[0]:.2f} at the end",
        "single_film": {fmt: {**percentiles(v),
                              "p50_vs_keras": round(float(np.percentile(v, 50) / base), 2)}
                        for fmt, v in single.items()},
        "decode_and_prepare_only": percentiles(stages["decode_prepare"]),
        "batch_films_per_s": throughput,
        "batch_vs_keras": {fmt: round(v / throughput["keras"], 2) for fmt, v in throughput.items()},
        "api_format": fmt_served,
        "api": api,
    }
    fastest = min(FORMATS, key=lambda f: result["single_film"][f]["p50_ms"])
    result["fastest_single_film"] = fastest
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"model {args.model}; {films_text}")
    print(f"{'path':<34}{'p50 ms':>9}{'p95 ms':>9}{'vs keras':>10}{'batch films/s':>15}")
    for fmt in FORMATS:
        s = result["single_film"][fmt]
        print(f"{'CLI warm, ' + fmt:<34}{s['p50_ms']:>9}{s['p95_ms']:>9}{s['p50_vs_keras']:>10}"
              f"{throughput[fmt]:>15}")
    d = result["decode_and_prepare_only"]
    print(f"{'decode + prepare only':<34}{d['p50_ms']:>9}{d['p95_ms']:>9}")
    for key, s in api.items():
        print(f"{'API (' + fmt_served + ', ' + key.replace('_', ' ') + ')':<34}"
              f"{s['p50_ms']:>9}{s['p95_ms']:>9}")
    print(f"fastest single-film format: {fastest}; wrote {args.out}")


if __name__ == "__main__":
    main()
