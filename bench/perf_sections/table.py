"""The markdown table bench/perf.py prints: one row per ratio or figure of the sections run."""

from __future__ import annotations


def table(results: dict) -> str:
    lines = ["| measurement | ratio | figures |", "| --- | --- | --- |"]

    def add(name, ratio, figures):
        lines.append(f"| {name} | {ratio} | {figures} |")

    s = results["sections"]
    if "preprocess" in s and "skipped" not in s["preprocess"]:
        p = s["preprocess"]
        add(f"preprocess, {p['workers_all']} workers vs cv2 decode-only 1 core (target >= 1.8x)",
            f"{p['ratio_all_cores_vs_decode_1core']}x",
            f"{p['preprocess_all_cores_films_per_s']} vs {p['decode_only_1core_films_per_s']} films/s")
        add("preprocess, 1 worker vs decode-only 1 core", f"{p['ratio_1worker_vs_decode']}x",
            f"{p['preprocess_1worker_films_per_s']} films/s")
        if "decode_only_all_cores_films_per_s" in p:
            add(f"cv2 decode-only, {p['workers_all']} processes vs 1 core (the machine's ceiling)",
                f"{p['ratio_decode_all_cores_vs_1core']}x",
                f"{p['decode_only_all_cores_films_per_s']} films/s")
            add(f"preprocess, {p['workers_all']} workers vs cv2 decode-only on as many processes",
                f"{p['ratio_all_cores_vs_decode_all_cores']}x",
                f"{p['preprocess_all_cores_films_per_s']} vs {p['decode_only_all_cores_films_per_s']} films/s")
            add("pipeline decoder (decoding.decode_raw) vs cv2 decode, 1 core",
                f"{p['ratio_pipeline_decode_vs_cv2']}x",
                f"{p['pipeline_decode_1core_films_per_s']} films/s")
        m = p["memory"]
        add(f"preprocess peak RSS, {m['films'][0]} -> {m['films'][1]} films (main / tree)",
            f"{m['main_process_peak_rss_mb'][1] / m['main_process_peak_rss_mb'][0]:.2f}x",
            f"{m['main_process_peak_rss_mb']} / {m['tree_peak_rss_mb']} MB; store {m['store_mb']} MB")
    if "input" in s:
        i = s["input"]
        if "ratio_input_vs_model" in i:
            add("input pipeline vs model consumption (target >= 20x)",
                f"{i['ratio_input_vs_model']}x",
                f"{i['packed_store_batches_per_s']} vs {i['model_batches_per_s']} batches/s")
        if "ratio_vs_image_dataset_from_directory" in i:
            add("input pipeline vs image_dataset_from_directory (PNG decode every epoch)",
                f"{i['ratio_vs_image_dataset_from_directory']}x",
                f"{i['naive_image_dataset_from_directory_batches_per_s']} batches/s")
            add("input pipeline vs PyDataset reading files", f"{i['ratio_vs_pydataset']}x",
                f"{i['naive_pydataset_batches_per_s']} batches/s")
    if "train" in s:
        t = s["train"]
        add("train step, mixed_bfloat16 vs float32", f"{t['ratio_bf16_vs_float32']}x",
            ", ".join(f"{k}: {v}" for k, v in t["films_per_s"].items()) + " films/s")
    if "epochs" in s:
        e = s["epochs"]
        t = e["median_epoch_s_after_first"]
        add("epoch wall time, model.fit over AUTOTUNE datasets vs the train stage's fit",
            f"{e['ratio_epoch_time_autotune_vs_fit_epochs']}x",
            f"{t['keras-autotune']} vs {t['fit_epochs']} s an epoch ({e['films']} films, "
            f"{e['size']} px)")
    if "dvc" in s and "skipped" not in s["dvc"]:
        d = s["dvc"]
        for label, block in (("", d), ("fresh clone + dvc pull, ", d.get("clone", {}))):
            for key, name in (("status", "dvc status"), ("noop_repro", "no-op dvc repro")):
                if key in block:
                    add(f"{label}{name} vs empty DVC project (target <= 1.5x)",
                        f"{block[key]['ratio']}x",
                        f"{block[key]['project_s']} vs {block[key]['empty_project_s']} s")
        c = d.get("train_param_change")
        if c:
            add("dvc repro after a train.* change: DVC time before the first stage vs no-op repro",
                f"{c['before_first_stage_s'] / c['noop_repro_s']:.2f}x",
                f"ran {c['ran']}, skipped {c['skipped']}; stages {c['stage_s']} s; fit "
                f"{c['train_fit_s']} s; total {c['total_s']} s")
    if "memory" in s and "growth" in s["memory"]:
        m = s["memory"]
        for name, growth in m["growth"].items():
            runs = m["stages"][name]
            add(f"{name} peak RSS growth {m['films'][0]} -> {m['films'][-1]} films vs store growth "
                f"({m['store_growth_mb']} MB)", f"{growth['vs_store_growth']}x",
                f"{runs[0]['max_single_rss_mb']} -> {runs[-1]['max_single_rss_mb']} MB "
                f"(tree {runs[0]['tree_peak_rss_mb']} -> {runs[-1]['tree_peak_rss_mb']} MB)")
    if "scaling" in s and "rows" in s["scaling"]:
        for row in s["scaling"]["rows"]:
            add(f"RSNA {row['films']} films at {row['size']} px (estimate)", "",
                ", ".join(f"{k}: {v}" for k, v in row.items() if k not in ("films", "size")))
    if "precision-accuracy" in s:
        a = s["precision-accuracy"]
        add("test MAE bf16 - float32 (must be <= 0.2 months)", f"{a['mae_difference_bf16_minus_fp32']}",
            f"float32 {a['float32']}, bf16 {a['mixed_bfloat16']}")
    return "\n".join(lines)
