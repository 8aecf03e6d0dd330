"""The hospital path under load and faults, against a real PACS (Debian's Orthanc with its
DICOMweb plugin), each process as a hospital runs it (issue 24, part 6):

1. **Load**: ``boneage dicom-node`` (the shipped release) takes 4 concurrent associations x
   50 films by C-STORE (the 36 full-res RSNA sample films, wrapped as DX with new UIDs);
   every film must be answered once: one success status, one reading in the node's log, and
   one SR and one capture in its study in Orthanc.
2. **Speed**: the node's throughput (first C-STORE to the last result in Orthanc) against
   ``boneage predict`` over the same DICOM files, as a ratio in the same run. predict's rate
   is taken without its start-up (a 200-film run minus a 1-film run) and also with it.
3. **Restart**: ``boneage dicomweb`` is killed (SIGKILL) mid-batch and started again on its
   state file; nothing may be lost (every film one SR and one capture in the PACS) and the
   re-reads are counted.
4. **Memory**: the peak RSS (VmHWM) of the node (with its reader processes, summed) and of
   each DICOMweb worker process.
5. **Privacy**: neither log holds the patient's name or ID.

    python bench/hospital.py                      # ~10 minutes on 2 cores (--workers 2)
    python bench/hospital.py --films 5 --associations 2 --worker-films 6   # a quick check

Writes bench/results/hospital.json. Needs ``orthanc`` and ``orthanc-dicomweb`` (Debian) and
../shared/datasets/rsna-bone-age-fullres-sample.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import cv2
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
FULLRES = ROOT.parent / "shared" / "datasets" / "rsna-bone-age-fullres-sample"
sys.path.insert(0, str(ROOT / "tests"))  # the Orthanc runner and DX wrapper the tests use

import orthanc_server  # noqa: E402
from factories import dx_film, free_ports, to_bytes  # noqa: E402

NODE_AE, SCU_AE = "BONEAGE", "BENCHSCU"
SR_MODALITY, CAPTURE_MODALITY = "SR", "OT"
SECRETS = ("Doe^Jane", "PID-SECRET-4711")  # what dx_film writes as the patient's name and ID
BONEAGE = Path(sys.executable).with_name("boneage")


def sample_films() -> list[tuple[object, str]]:
    """The full-res sample: (pixels, sex) per film."""
    labels = pd.read_csv(FULLRES / "boneage-training-dataset.csv")
    films = []
    for film_id, male in zip(labels["id"], labels["male"]):
        pixels = cv2.imread(str(FULLRES / "boneage-training-dataset" / f"{film_id}.png"),
                            cv2.IMREAD_GRAYSCALE)
        films.append((pixels, "M" if bool(male) else "F"))
    return films


def wrap(films, count: int) -> list:
    """``count`` DX data sets cycling through the films, each with its own study and UIDs."""
    return [dx_film(films[i % len(films)][0], sex=films[i % len(films)][1])
            for i in range(count)]


def peak_rss_mb(pid: int) -> float | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"VmHWM:\s+(\d+) kB", text)
    return int(match.group(1)) / 1024 if match else None


def process_tree(pid: int) -> list[int]:
    """The process and its descendants (the node's reader processes under ``--workers``)."""
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                stack.extend(int(child) for child in (task / "children").read_text().split())
            except OSError:
                pass
    return found


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU seconds of a process and its live descendants."""
    seconds = [cpu_seconds(member) for member in process_tree(pid)]
    return sum(s for s in seconds if s is not None) if seconds[0] is not None else None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used (/proc/PID/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for_line(log: Path, pattern: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and re.search(pattern, log.read_text(errors="replace")):
            return
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[1]} exited ({process.returncode}): "
                               + log.read_text(errors="replace")[-3000:])
        time.sleep(0.2)
    raise RuntimeError(f"no {pattern!r} in {log} within {timeout:g} s")


def start(arguments: list[str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen([str(BONEAGE), *arguments, "-v"], stdout=out,
                                stderr=subprocess.STDOUT)


def results_by_study(orthanc) -> dict[str, Counter]:
    """StudyInstanceUID -> how many instances of each modality Orthanc holds in it."""
    studies = {item["ID"]: item["MainDicomTags"]["StudyInstanceUID"]
               for item in orthanc.get("/studies?expand")}
    found: dict[str, Counter] = {}
    for series in orthanc.get("/series?expand"):
        study = studies[series["ParentStudy"]]
        found.setdefault(study, Counter())[series["MainDicomTags"].get("Modality", "")] += \
            len(series["Instances"])
    return found


def count_instances(orthanc) -> int:
    return int(orthanc.get("/statistics")["CountInstances"])


def answered_once(datasets, holdings: dict[str, Counter]) -> dict:
    """How many films have exactly one SR and one capture in their study, and the others."""
    once, missing, doubled = 0, [], []
    for ds in datasets:
        held = holdings.get(str(ds.StudyInstanceUID), Counter())
        if held[SR_MODALITY] == 1 and held[CAPTURE_MODALITY] == 1:
            once += 1
        elif held[SR_MODALITY] == 0:
            missing.append(str(ds.SOPInstanceUID))
        else:
            doubled.append(str(ds.SOPInstanceUID))
    return {"films": len(datasets), "one_sr_and_capture": once, "missing": missing,
            "doubled": doubled}


def send_association(port: int, datasets, statuses: dict, lock: threading.Lock) -> None:
    from pydicom.uid import ExplicitVRLittleEndian
    from pynetdicom import AE

    ae = AE(SCU_AE)
    ae.add_requested_context(datasets[0].SOPClassUID, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 600
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AE)
    # the modality's network threads poll as the node's do (5 ms when idle, not 1): their
    # polling is this script's CPU, which the node would otherwise lose on 2 cores
    from boneage.interfaces.dicom_node import _poll_less

    _poll_less(assoc)
    if not assoc.is_established:
        with lock:
            for ds in datasets:
                statuses[str(ds.SOPInstanceUID)] = "association refused"
        return
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            with lock:
                statuses[str(ds.SOPInstanceUID)] = getattr(status, "Status", None)
    finally:
        assoc.release()


def log_counts(log: Path, pattern: str) -> Counter:
    """SOP Instance UID -> how many log lines match ``SOP <uid>...pattern``."""
    text = log.read_text(errors="replace")
    return Counter(re.findall(r"SOP ([0-9.]+)" + pattern, text))


def node_phase(films, args, work: Path, workers: int) -> dict:
    """4 associations x 50 films into the node; the node's results into Orthanc."""
    node_port = free_ports(1)[0]
    work = work / f"node-{workers}"
    work.mkdir(parents=True, exist_ok=True)
    orthanc = orthanc_server.Orthanc(work / "orthanc-node",
                                     {"boneage": (NODE_AE, "127.0.0.1", node_port)})
    orthanc.start()
    log = work / "node.log"
    node = start(["dicom-node", "--workers", str(workers),
                  "--port", str(node_port), "--allow", SCU_AE,
                  "--destination", f"{orthanc_server.AE_TITLE}@127.0.0.1:{orthanc.dicom_port}",
                  "--spool", str(work / "spool")], log)
    try:
        wait_for_line(log, r"listening on", node, 180)
        statuses: dict = {}
        lock = threading.Lock()
        warm = wrap(films, 1)
        send_association(node_port, warm, statuses, lock)  # the model's first call: not timed
        while count_instances(orthanc) < 2:
            time.sleep(0.1)
        batches = [wrap(films, args.films) for _ in range(args.associations)]
        datasets = [ds for batch in batches for ds in batch]
        expected = 2 + 2 * len(datasets)
        # node: its process and its reader processes; node_process: the one that receives
        # and sends (one interpreter lock: what caps the node on a machine with more cores)
        cpu_before = {"node": tree_cpu_seconds(node.pid), "node_process": cpu_seconds(node.pid),
                      "orthanc": cpu_seconds(orthanc.process.pid),
                      "sender_bench": time.process_time()}
        started = time.perf_counter()
        threads = [threading.Thread(target=send_association,
                                    args=(node_port, batch, statuses, lock))
                   for batch in batches]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        answered = time.perf_counter() - started
        deadline = time.monotonic() + 600
        while count_instances(orthanc) < expected and time.monotonic() < deadline:
            time.sleep(0.1)
        stored = time.perf_counter() - started
        cpu_after = {"node": tree_cpu_seconds(node.pid), "node_process": cpu_seconds(node.pid),
                     "orthanc": cpu_seconds(orthanc.process.pid),
                     "sender_bench": time.process_time()}
        peak = peak_rss_mb(node.pid)
        reader_peaks = [peak_rss_mb(pid) for pid in process_tree(node.pid)[1:]]
        node.send_signal(signal.SIGTERM)
        node.wait(120)
        holdings = results_by_study(orthanc)
    finally:
        if node.poll() is None:
            node.kill()
        orthanc.stop()
    readings = log_counts(log, r" from " + SCU_AE + r": ")
    stores = log_counts(log, r": \d+ result\(s\) stored")
    uids = [str(ds.SOPInstanceUID) for ds in datasets]
    text = log.read_text(errors="replace")
    return {
        "associations": args.associations, "films_per_association": args.films,
        "films": len(datasets),
        "success_statuses": sum(statuses.get(uid) == 0 for uid in uids),
        "read_once_in_log": sum(readings[uid] == 1 for uid in uids),
        "stored_once_in_log": sum(stores[uid] == 1 for uid in uids),
        "pacs": answered_once(datasets, holdings),
        "seconds_all_answered": round(answered, 2),
        "seconds_all_results_in_pacs": round(stored, 2),
        "films_per_second": round(len(datasets) / stored, 3),
        # where the 2 cores went, in CPU ms a film: the node, the PACS storing its results,
        # and this script sending the films (the modality)
        "cpu_ms_per_film": {key: round(1000 * (cpu_after[key] - cpu_before[key]) / len(datasets),
                                       1) for key in cpu_before
                            if cpu_before[key] is not None and cpu_after[key] is not None},
        "workers": workers,
        "peak_rss_mb": round(peak, 1) if peak else None,
        # the reader processes (and multiprocessing's resource tracker) under --workers > 1
        "child_peak_rss_mb": [round(p, 1) for p in reader_peaks if p],
        "total_peak_rss_mb": round((peak or 0) + sum(p for p in reader_peaks if p), 1),
        "patient_name_or_id_in_log": any(secret in text for secret in SECRETS),
        "node_months": node_months(text, uids),
        "_datasets": datasets,
    }


def node_months(text: str, uids: list[str]) -> dict[str, float]:
    found = dict(re.findall(r"SOP ([0-9.]+) from " + SCU_AE + r": bone age ([0-9.]+) months",
                            text))
    return {uid: float(found[uid]) for uid in uids if uid in found}


def predict_phase(datasets, node_months: dict, work: Path) -> dict:
    """``boneage predict`` over the same films written as DICOM files (a folder run, and a
    one-film run for its start-up)."""
    folder = work / "films"
    folder.mkdir()
    for ds in datasets:
        (folder / f"{ds.SOPInstanceUID}.dcm").write_bytes(to_bytes(ds))
    single = work / "single"
    single.mkdir()
    (single / "one.dcm").write_bytes((folder / f"{datasets[0].SOPInstanceUID}.dcm").read_bytes())

    def run(path: Path) -> tuple[float, list]:
        started = time.perf_counter()
        children = os.times()
        done = subprocess.run([str(BONEAGE), "predict", str(path), "--json"],
                              capture_output=True, text=True)
        seconds = time.perf_counter() - started
        after = os.times()
        cpu[path.name] = (after.children_user + after.children_system
                          - children.children_user - children.children_system)
        if done.returncode != 0:
            raise RuntimeError(f"boneage predict failed ({done.returncode}): {done.stderr[-2000:]}")
        return seconds, json.loads(done.stdout)

    cpu: dict[str, float] = {}
    run(single)  # the first start-up reads the libraries from disk: not counted
    all_seconds, rows = run(folder)
    one_seconds, _ = run(single)
    months = {Path(row["path"]).stem: row.get("boneage_months") for row in rows}
    differences = [abs(months[uid] - value) for uid, value in node_months.items()
                   if months.get(uid) is not None]
    films = len(datasets)
    return {
        "films": films, "seconds_folder": round(all_seconds, 2),
        "seconds_one_film": round(one_seconds, 2),
        "films_per_second_with_startup": round(films / all_seconds, 3),
        "films_per_second_without_startup": round((films - 1) / (all_seconds - one_seconds), 3),
        "cpu_ms_per_film_without_startup": round(
            1000 * (cpu["films"] - cpu["single"]) / (films - 1), 1),
        "node_vs_predict_max_abs_months": round(max(differences), 2) if differences else None,
        "compared": len(differences),
    }


def state_count(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM answered").fetchone()[0]
    except sqlite3.Error:
        return 0


def worker_phase(films, args, work: Path) -> dict:
    """Films in Orthanc; the DICOMweb worker killed mid-batch and started again."""
    orthanc = orthanc_server.Orthanc(work / "orthanc-worker", {})
    orthanc.start()
    datasets = wrap(films, args.worker_films)
    for ds in datasets:
        orthanc.upload(to_bytes(ds))
    state = work / "worker.sqlite"
    arguments = ["dicomweb", "--url", orthanc.dicomweb, "--state", str(state),
                 "--interval", "1"]
    logs = [work / "worker-1.log", work / "worker-2.log"]
    peaks, killed_at, processes = [], None, []
    try:
        first = start(arguments, logs[0])
        processes.append(first)
        kill_after = max(1, args.worker_films // 3)
        deadline = time.monotonic() + 900
        while state_count(state) < kill_after and time.monotonic() < deadline:
            if first.poll() is not None:
                raise RuntimeError("the worker exited: " + logs[0].read_text()[-3000:])
            time.sleep(0.05)
        time.sleep(0.3)  # into the next film: killed while it reads or stores
        peaks.append(peak_rss_mb(first.pid))
        first.kill()
        first.wait(30)
        killed_at = state_count(state)
        second = start(arguments, logs[1])
        processes.append(second)
        while state_count(state) < len(datasets) and time.monotonic() < deadline:
            if second.poll() is not None:
                raise RuntimeError("the worker exited: " + logs[1].read_text()[-3000:])
            time.sleep(0.2)
        time.sleep(2.0)  # results of a last STOW settle
        peaks.append(peak_rss_mb(second.pid))
        second.send_signal(signal.SIGTERM)
        second.wait(120)
        holdings = results_by_study(orthanc)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
        orthanc.stop()
    uids = [str(ds.SOPInstanceUID) for ds in datasets]
    reads = Counter()
    text = ""
    for log in logs:
        reads.update(log_counts(log, r": bone age"))
        text += log.read_text(errors="replace")
    return {
        "films": len(datasets), "answered_when_killed": killed_at,
        "answered_after_restart": state_count(state),
        "pacs": answered_once(datasets, holdings),
        "reads_total": sum(reads[uid] for uid in uids),
        "films_read_twice": sum(reads[uid] > 1 for uid in uids),
        "peak_rss_mb": [round(p, 1) if p else None for p in peaks],
        "patient_name_or_id_in_log": any(secret in text for secret in SECRETS),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--associations", type=int, default=4)
    parser.add_argument("--films", type=int, default=50, help="films per association")
    parser.add_argument("--worker-films", type=int, default=40)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="the node's reader processes (default: one per core)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "hospital.json")
    args = parser.parse_args()
    why = orthanc_server.missing()
    if why:
        print(f"hospital bench: {why}", file=sys.stderr)
        return 2
    if not FULLRES.is_dir():
        print(f"hospital bench: {FULLRES} is absent", file=sys.stderr)
        return 2
    films = sample_films()
    with tempfile.TemporaryDirectory(prefix="boneage-hospital-") as tmp:
        work = Path(tmp)
        # the node in its own process first (--workers 1): the baseline of the same run
        in_process = node_phase(films, args, work, 1) if args.workers > 1 else None
        if in_process:
            in_process.pop("_datasets"), in_process.pop("node_months")
            print("node --workers 1:", json.dumps(in_process), flush=True)
        node = node_phase(films, args, work, args.workers)
        datasets = node.pop("_datasets")
        months = node.pop("node_months")
        print("node:", json.dumps(node), flush=True)
        predict = predict_phase(datasets, months, work)
        print("predict:", json.dumps(predict), flush=True)
        worker = worker_phase(films, args, work)
        print("worker:", json.dumps(worker), flush=True)
    node_ratio = node["films_per_second"] / predict["films_per_second_without_startup"]
    peaks = [node["total_peak_rss_mb"], *worker["peak_rss_mb"]]
    result = {
        "machine": f"{os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "model": "the shipped release (default)",
        "films": "36 RSNA full-res sample films (2080x1600 8-bit and the like), wrapped as DX",
        "node": node, "node_in_process": in_process, "predict": predict, "worker": worker,
        "node_workers_vs_in_process": round(
            node["films_per_second"] / in_process["films_per_second"], 3) if in_process else None,
        "node_vs_predict_throughput": round(node_ratio, 3),
        "node_vs_predict_throughput_with_startup": round(
            node["films_per_second"] / predict["films_per_second_with_startup"], 3),
        "targets": {
            "every_film_answered_once": node["pacs"]["one_sr_and_capture"] == node["films"]
            and node["read_once_in_log"] == node["films"]
            and node["success_statuses"] == node["films"],
            "restart_loses_nothing": worker["pacs"]["one_sr_and_capture"] == worker["films"],
            "node_throughput_at_least_0.8x_predict": node_ratio >= 0.8,
            "peak_rss_below_1.5_gb": all(p is not None and p < 1536 for p in peaks),
            "no_patient_identity_in_logs": not node["patient_name_or_id_in_log"]
            and not worker["patient_name_or_id_in_log"],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["targets"], indent=2))
    return 0 if all(result["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
