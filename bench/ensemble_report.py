"""Ensemble MAE of several exported models on one pipeline run's test split, read the way
`boneage predict --model A --model B ...` reads films (boneage.reading.predictor.Ensemble: decode,
the one imaging path with each model card's settings, mean of the models).

    python bench/ensemble_report.py --split-dir data/split --labels data/raw/labels.csv \
        --films ../shared/datasets/rsna-bone-age-100px/boneage-training-dataset \
        --model runA/models/boneage --model runB/models/boneage \
        --into bench/results/accuracy-rsna100px.json

The models must have been trained on the same split (same split params and seed), so the
test films are unseen by every member; the script checks each card's data fingerprint.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split-dir", type=Path, required=True)
    parser.add_argument("--labels", type=Path, required=True, help="id,boneage,male CSV")
    parser.add_argument("--films", type=Path, required=True, help="folder of <id>.png")
    parser.add_argument("--model", type=Path, action="append", required=True)
    parser.add_argument("--into", type=Path, help="add the figures to this results JSON")
    args = parser.parse_args()

    from boneage.reading.predictor import Ensemble

    cards = [json.loads((m / "model_card.json").read_text()) for m in args.model]
    fingerprints = {c["data"].get("fingerprint") for c in cards}
    if len(fingerprints) != 1:
        raise SystemExit(f"the models were trained on different data: {fingerprints}")
    test_ids = (args.split_dir / "test.txt").read_text().split()
    labels = pd.read_csv(args.labels, dtype={"id": str}).set_index("id").loc[test_ids]
    ensemble = Ensemble(args.model)
    truth, per_model = [], []
    for male, sex in ((0, "F"), (1, "M")):
        subset = labels[labels["male"].astype(int) == male]
        readings = ensemble.predict_paths([args.films / f"{i}.png" for i in subset.index], sex,
                                          progress=True)
        failed = [r.path for r in readings if r.error]
        if failed:
            raise SystemExit(f"could not read {len(failed)} test films, e.g. {failed[:3]}")
        truth += list(subset["boneage"])
        per_model += [r.per_model for r in readings]
    truth, per_model = np.asarray(truth, float), np.asarray(per_model, float)
    members = [float(np.mean(np.abs(per_model[:, k] - truth))) for k in range(len(args.model))]
    mean = per_model.mean(axis=1)
    result = {
        "ensemble_mae_months": float(np.mean(np.abs(mean - truth))),
        "ensemble_rmse_months": float(np.sqrt(np.mean((mean - truth) ** 2))),
        "ensemble_within_12_months": float(np.mean(np.abs(mean - truth) <= 12)),
        "ensemble_members": [
            {"model": str(m), "mae_months": mae, "params": c.get("training", {}).get("params")}
            for m, mae, c in zip(args.model, members, cards)],
        "ensemble_n_test": int(len(truth)),
        "ensemble_note": "mean of the members' predictions on the same test split, read "
                         "through boneage.reading.predictor.Ensemble (as `boneage predict --model "
                         "A --model B`); members trained by separate pipeline runs",
    }
    print(json.dumps({k: v for k, v in result.items() if k != "ensemble_members"}, indent=2))
    for member in result["ensemble_members"]:
        print(f"  {member['model']}: {member['mae_months']:.2f} months")
    if args.into:
        data = json.loads(args.into.read_text()) if args.into.exists() else {}
        data.update(result)
        args.into.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
