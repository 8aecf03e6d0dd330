"""Bounded load test of `boneage serve`: 4 concurrent clients at a combined 2 films/s for
60 s on loopback, counting every error.

    python bench/load_test.py [--model models/boneage] [--url http://127.0.0.1:8000]
                              [--clients 4] [--rate 2] [--seconds 60]

Without --url it starts `boneage serve` itself (default format). Each client sends a film
every clients/rate seconds on a fixed schedule (open loop: a slow answer does not lower the
offered load), with the Grad-CAM heatmap as the page asks for it. Writes
bench/results/load-test.json; exits 1 if any request failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/boneage"))
    parser.add_argument("--url")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rate", type=float, default=2.0, help="films per second, all clients")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/load-test.json"))
    args = parser.parse_args()

    import httpx
    from serving import films as load_films
    from serving import start_server

    films, films_text = load_films(24)
    process = None
    url = args.url
    if url is None:
        process, url = start_server(args.model)
    served = httpx.get(f"{url}/healthz").json()
    interval = args.clients / args.rate
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = time.monotonic() + 1.0

    def client(index: int) -> None:
        with httpx.Client(timeout=30) as session:
            k = 0
            while True:
                due = start + index * interval / args.clients + k * interval
                if due - start >= args.seconds:
                    return
                time.sleep(max(0.0, due - time.monotonic()))
                name, data = films[(index + k * args.clients) % len(films)]
                began = time.monotonic()
                try:
                    response = session.post(f"{url}/api/predict", files={"file": (name, data)},
                                            data={"sex": "F" if k % 2 else "M"})
                    ok = response.status_code == 200 and "boneage_months" in response.json()
                    problem = None if ok else f"{response.status_code}: {response.text[:200]}"
                except httpx.HTTPError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                with lock:
                    latencies.append(time.monotonic() - began)
                    if problem:
                        errors.append(problem)
                k += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - start
    if process is not None:
        process.terminate()
        process.wait(timeout=30)
    ms = np.asarray(latencies) * 1000
    result = {
        "url": url, "format": served["format"], "films": films_text,
        "clients": args.clients, "offered_films_per_s": args.rate, "seconds": args.seconds,
        "requests": len(latencies), "errors": len(errors), "error_samples": errors[:5],
        "achieved_films_per_s": round(len(latencies) / wall, 2),
        "latency_ms": {"p50": round(float(np.percentile(ms, 50)), 1),
                       "p95": round(float(np.percentile(ms, 95)), 1),
                       "max": round(float(ms.max()), 1)},
        "machine": f"{os.cpu_count()} cores, 1-min load average {os.getloadavg()[0]:.2f} at the end",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.clients} clients, {args.rate:g} films/s offered for {args.seconds:g} s "
          f"against {url} ({served['format']}, heatmap on); {films_text}")
    print(f"{'requests':>9}{'errors':>8}{'films/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}")
    lat = result["latency_ms"]
    print(f"{result['requests']:>9}{result['errors']:>8}{result['achieved_films_per_s']:>9}"
          f"{lat['p50']:>9}{lat['p95']:>9}{lat['max']:>9}")
    print(f"wrote {args.out}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
