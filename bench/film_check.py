"""The film check (issue 14, "Confident nonsense") measured on hand films and on non-films.

    python bench/film_check.py [--quick] [--phantoms 300] [--out bench/results/film-check.json]

Runs :func:`boneage.imaging.film_check.check_film` (with :func:`boneage.imaging.film_check.colour_fraction`
of each file) on

* positives: every RSNA film of ../shared/datasets/rsna-bone-age-100px (11,611, 100x100 px,
  squashed), the 36 full-resolution films of ../shared/datasets/rsna-bone-age-fullres-sample,
  and synthetic films of :mod:`boneage.data.phantom` (the default pipeline's data) at 200 px (as
  params.yaml draws them), 320 px and 97 px;
* the same positives inverted (bone dark, background bright), which must be accepted and
  flagged inverted;
* negatives, built here from what ships in installed packages or is drawn honestly: colour
  photographs (scikit-image, scikit-learn sample images), grey photographs and their
  quarter crops, scikit-image's faces, pydicom's test DICOMs (CT, MR, ultrasound, secondary
  captures; unique images of at least 48 px), a Shepp-Logan head phantom and drawn chest
  films, blank frames, noise, gradients, text pages, drawn shapes (flat silhouettes, one of
  a hand), and crops of the full-resolution films that show no hand (a corner, the
  forearm), enlarged. Crops showing part of a hand (fingers, metacarpals) are not in the
  set: whether a partial hand should be read is a different question.

Every file is encoded (PNG, JPEG or DICOM bytes) and decoded by
:func:`boneage.imaging.decoding.read_film` as `boneage predict` would. The thresholds were tuned on
the RSNA 100 px films whose id ends in 0 ("dev"); acceptance is reported on those and on
the others ("held-out") separately. The negative categories were looked at while the
features were designed, so their refusal rate is not a held-out figure.

Targets (issue 14): >= 99 % of the 11,611 RSNA films and all 36 full-resolution films
accepted; >= 95 % of the negatives refused; >= 95 % of inverted films flagged inverted.
Writes bench/results/film-check.json (confusion table per category, per-check figures,
reasons histogram, the misjudged samples, timing) and prints a markdown table. The film sets
are built in bench/film_check_sets/; this script judges them and writes the report.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import boneage  # noqa: E402,F401  (sets OpenCV's size limits before cv2 loads)

from boneage.imaging.film_check import (  # noqa: E402
    MAX_BACKGROUND_EDGES,
    MAX_BLOBS,
    MAX_COLOUR_FRACTION,
    MAX_NOISE,
    MAX_SOLIDITY,
    MIN_BACKGROUND_SMOOTH,
    MIN_EDGES,
    MIN_GAPS,
    MIN_LOCAL_CONTRAST,
    MIN_SPREAD,
    MIN_TEXT_LINES,
    MIN_TEXTURE,
    check_decoded,
    check_film,
)
from boneage.imaging.decoding import read_film  # noqa: E402
from film_check_sets.negatives import NEGATIVES  # noqa: E402
from film_check_sets.positives import phantoms, rsna_fullres, rsna_small  # noqa: E402
from film_check_sets.samples import FULLRES, SMALL, Sample  # noqa: E402

TARGETS = {"positive": 0.99, "fullres": 1.0, "negative": 0.95, "inverted": 0.95}


def judge(sample: Sample):
    """(check, seconds of the check alone, the film as float grey in [0, 1])."""
    if sample.image is not None:
        image = sample.image
        start = time.perf_counter()
        check = check_film(image, colour=0.0)
        return check, time.perf_counter() - start, image
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # force: the pixel check's own verdict; a DICOM's header (Modality, BodyPart-
        # Examined) would refuse most medical negatives before this check sees them
        film = read_film(sample.data, sample.name, force=True)
    start = time.perf_counter()
    check = check_decoded(film)  # what predict, serve and the preprocess report judge
    seconds = time.perf_counter() - start
    return check, seconds, film.image  # float [0, 1]: what the inverted twin is made from


def run(quick: bool, phantom_count: int):
    rows = []  # (sample meta, check)
    timings = defaultdict(list)
    have_rsna = SMALL.is_dir()
    sources = []
    if have_rsna:
        sources.append(rsna_small(quick))
    if FULLRES.is_dir():
        sources.append(rsna_fullres())
    sources.append(phantoms(phantom_count // 3 if quick else phantom_count))
    for source in sources:
        for sample in source:
            check, seconds, image = judge(sample)
            rows.append((sample, check))
            timings[sample.category].append(seconds)
            inverted = Sample("inverted", f"{sample.category}, inverted", sample.name,
                              image=(1.0 - image).astype(np.float32), dev=sample.dev)
            check, seconds, _ = judge(inverted)
            rows.append((inverted, check))
    for name, build in NEGATIVES.items():
        if name == "crops" and not FULLRES.is_dir():
            continue
        for sample in build():
            try:
                check, seconds, _ = judge(sample)
            except Exception as exc:  # noqa: BLE001 - the decoder refused it: also a refusal
                print(f"  {sample.name}: not decoded ({exc})")
                continue
            rows.append((sample, check))
            timings[sample.category].append(seconds)
    return rows, timings


def summarise(rows, timings) -> dict:
    table = defaultdict(lambda: Counter())
    reasons = defaultdict(Counter)
    misjudged = []
    for sample, check in rows:
        cell = table[(sample.group, sample.category)]
        cell["n"] += 1
        cell["accepted"] += check.accepted
        cell["refused"] += not check.accepted
        cell["flagged inverted"] += check.inverted
        if sample.category in ("RSNA 100 px", "RSNA 100 px, inverted"):
            part = "dev" if sample.dev else "held-out"
            cell[f"{part} n"] += 1
            cell[f"{part} ok"] += check.accepted and check.inverted == (sample.group == "inverted")
        for code in check.failed:
            reasons[sample.group][code] += 1
        wrong = (not check.accepted if sample.group != "negative" else check.accepted) \
            or (sample.group == "inverted" and not check.inverted) \
            or (sample.group == "positive" and check.inverted)
        if wrong:
            misjudged.append({"group": sample.group, "category": sample.category,
                              "name": sample.name, "accepted": check.accepted,
                              "inverted": check.inverted, "failed": list(check.failed),
                              "scores": {k: round(v, 4) for k, v in check.scores.items()}})

    def rate(group, pred, categories=None):
        chosen = [(s, c) for s, c in rows if s.group == group
                  and (categories is None or s.category in categories)]
        return (sum(pred(c) for _, c in chosen) / len(chosen) if chosen else None), len(chosen)

    headline = {}
    headline["RSNA 100 px accepted"] = rate("positive", lambda c: c.accepted, {"RSNA 100 px"})
    headline["RSNA full resolution accepted"] = rate("positive", lambda c: c.accepted,
                                                     {"RSNA full resolution"})
    headline["phantom films accepted"] = rate(
        "positive", lambda c: c.accepted,
        {s.category for s, _ in rows if s.category.startswith("phantom")})
    headline["positives read upright (accepted, not flagged)"] = rate(
        "positive", lambda c: c.accepted and not c.inverted)
    headline["negatives refused"] = rate("negative", lambda c: not c.accepted)
    headline["inverted films accepted and flagged inverted"] = rate(
        "inverted", lambda c: c.accepted and c.inverted)
    for part in ("dev", "held-out"):
        for group in ("positive", "inverted"):
            chosen = [(s, c) for s, c in rows if s.group == group and s.category.startswith(
                "RSNA 100 px") and (s.dev == (part == "dev"))]
            if chosen:
                ok = sum(c.accepted and c.inverted == (group == "inverted") for _, c in chosen)
                headline[f"RSNA 100 px {group}, {part} (ids ending in 0 are dev)"] = (
                    ok / len(chosen), len(chosen))

    per_check = per_check_figures(rows)
    timing = {category: {"n": len(v), "median_ms": round(1000 * float(np.median(v)), 2),
                         "p95_ms": round(1000 * float(np.percentile(v, 95)), 2)}
              for category, v in timings.items() if v}
    return {
        "targets": TARGETS,
        "headline": {k: {"rate": None if r is None else round(r, 4), "n": n}
                     for k, (r, n) in headline.items()},
        "confusion": [{"group": g, "category": c, **{k: int(v) for k, v in cell.items()}}
                      for (g, c), cell in table.items()],
        "reasons": {g: dict(counter.most_common()) for g, counter in reasons.items()},
        "per_check": per_check,
        "timing": timing,
        "misjudged": misjudged[:400],
        "misjudged_total": len(misjudged),
    }


CHECKS = {  # score, threshold, which side fails (the no_hand figures: the best region found)
    "colour": ("colour", MAX_COLOUR_FRACTION, "above"),
    "blank": ("spread", MIN_SPREAD, "below"),
    "noise": ("noise", MAX_NOISE, "above"),
    "smooth": ("edges", MIN_EDGES, "below"),
    "text: lines": ("text_lines", MIN_TEXT_LINES, "at least"),
    "text: blobs": ("blobs", MAX_BLOBS, "above"),
    "no_hand: finger gaps": ("gaps", MIN_GAPS, "below"),
    "no_hand: solidity": ("solidity", MAX_SOLIDITY, "above"),
    "no_hand: |local contrast|": ("local_contrast", MIN_LOCAL_CONTRAST, "below"),
    "no_hand: texture": ("texture", MIN_TEXTURE, "below"),
    "no_hand: background smooth": ("background_smooth", MIN_BACKGROUND_SMOOTH, "below"),
    "no_hand: background edges": ("background_edges", MAX_BACKGROUND_EDGES, "above"),
}


def per_check_figures(rows) -> dict:
    """For each threshold: the feature's spread on positives and negatives, and how many of
    each that one check alone refuses. The hand's features are those of the most hand-like
    region found (the one accepted, or the best of those refused), so they say how close each
    film came, not what the check would do with that threshold moved."""
    out = {}
    for name, (key, threshold, side) in CHECKS.items():
        figures = {"score": key, "threshold": threshold, "refuses when": side}
        for group in ("positive", "inverted", "negative"):
            values = np.array([abs(c.scores[key]) if key == "local_contrast" else c.scores[key]
                               for s, c in rows if s.group == group and key in c.scores])
            if values.size == 0:
                continue
            fails = (values > threshold if side == "above" else values >= threshold
                     if side == "at least" else values < threshold)
            figures[group] = {
                "n": int(values.size),
                "refused by this check alone": int(fails.sum()),
                "quantiles (0, 1, 5, 50, 95, 99, 100 %)":
                    [round(float(v), 4) for v in np.percentile(values, [0, 1, 5, 50, 95, 99, 100])],
            }
        out[name] = figures
    return out


def markdown(summary: dict) -> str:
    lines = ["| group | category | n | accepted | refused | flagged inverted |",
             "| --- | --- | --- | --- | --- | --- |"]
    order = {"positive": 0, "inverted": 1, "negative": 2}
    for row in sorted(summary["confusion"], key=lambda r: (order[r["group"]], r["category"])):
        lines.append(f"| {row['group']} | {row['category']} | {row['n']} | {row['accepted']} | "
                     f"{row['refused']} | {row['flagged inverted']} |")
    lines += ["", "| figure | rate | n |", "| --- | --- | --- |"]
    for name, value in summary["headline"].items():
        rate = "-" if value["rate"] is None else f"{100 * value['rate']:.2f} %"
        lines.append(f"| {name} | {rate} | {value['n']} |")
    lines += ["", "| check | refused positives | refused inverted | refused negatives |",
              "| --- | --- | --- | --- |"]
    for name, figures in summary["per_check"].items():
        cells = []
        for group in ("positive", "inverted", "negative"):
            g = figures.get(group)
            cells.append(f"{g['refused by this check alone']}/{g['n']}" if g else "-")
        lines.append(f"| {name} ({figures['refuses when']} {figures['threshold']}) | "
                     + " | ".join(cells) + " |")
    lines += ["", "| category | median ms | p95 ms |", "| --- | --- | --- |"]
    for category, t in summary["timing"].items():
        lines.append(f"| {category} | {t['median_ms']} | {t['p95_ms']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="every 10th RSNA 100 px film and a third of the phantoms")
    parser.add_argument("--phantoms", type=int, default=300)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "film-check.json")
    parser.add_argument("--dump", type=Path, help="also write every film's scores (JSON lines)")
    args = parser.parse_args()
    if not SMALL.is_dir():
        print(f"note: {SMALL} not found; RSNA positives skipped")
    start = time.perf_counter()
    rows, timings = run(args.quick, args.phantoms)
    summary = summarise(rows, timings)
    if args.dump:
        with open(args.dump, "w") as out:
            for sample, check in rows:
                out.write(json.dumps({"group": sample.group, "category": sample.category,
                                      "name": sample.name, "dev": sample.dev,
                                      **check.to_dict()}) + "\n")
    summary["seconds"] = round(time.perf_counter() - start, 1)
    summary["quick"] = args.quick
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(markdown(summary))
    print(f"\n{len(rows)} films in {summary['seconds']} s; wrote {args.out}")


if __name__ == "__main__":
    main()
