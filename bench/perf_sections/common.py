"""Plumbing every section shares: where the data and the child programs are, running a child
with its peak memory measured, the machine's facts and the default params."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHILDREN = Path(__file__).resolve().parents[1] / "perf_children"  # the programs timed
SHARED = ROOT.parent / "shared" / "datasets"
FULLRES = SHARED / "rsna-bone-age-fullres-sample"
SMALL = SHARED / "rsna-bone-age-100px"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT),
       "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def cores() -> int:
    from boneage.kernel.machine import usable_cores

    return usable_cores()


def child_program(name: str) -> str:
    return str(CHILDREN / f"{name}.py")


def run_child(name: str, *args, env: dict | None = None, cwd: Path | None = None) -> dict:
    """Run bench/perf_children/``name``.py in a fresh Python; its last stdout line is JSON.
    Adds the peak RSS of the child's whole process tree (sampled every 20 ms) and of its
    largest single process."""
    return run_measured([sys.executable, child_program(name), *map(str, args)], env=env,
                        cwd=cwd, json_out=True)


def run_measured(command: list[str], *, env=None, cwd=None, json_out=False) -> dict:
    import psutil

    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, child_program("rusage_wrapper"), *command],
                               cwd=cwd, env={**ENV, **(env or {})}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    peak = 0
    wrapper = psutil.Process(process.pid)
    while process.poll() is None:
        total = 0
        try:
            for proc in wrapper.children(recursive=True):
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        peak = max(peak, total)
        time.sleep(0.02)
    out, err = process.communicate()
    seconds = time.perf_counter() - started
    rss_line = [line for line in err.splitlines() if line.startswith("@@rss ")]
    info = json.loads(rss_line[-1][6:]) if rss_line else {"code": process.returncode}
    if info["code"] or process.returncode:
        raise RuntimeError(f"{command[:4]}... failed:\n{out[-3000:]}\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1]) if json_out else {}
    result.update(wall_s=round(seconds, 2), tree_peak_rss_mb=round(peak / 2**20, 1),
                  max_single_rss_mb=round(info["max_single_rss_mb"], 1))
    return result


def machine() -> dict:
    flags, model = set(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    versions = subprocess.run([sys.executable, child_program("library_versions")], env=ENV,
                              capture_output=True, text=True)
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    cwd=ROOT, capture_output=True, text=True).stdout.strip())
    except OSError:
        commit, dirty = None, None
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu_model": model, "cpu_count": os.cpu_count(), "usable_cores": cores(),
        "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags,
        "amx_tile": "amx_tile" in flags, "avx512f": "avx512f" in flags,
        "memory_gb": round(memory_gb, 1), "load_average_at_start": list(os.getloadavg()),
        "python": platform.python_version(), **json.loads(versions.stdout.strip() or "{}"),
        "git_commit": commit, "git_dirty": dirty,
    }


def default_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def imaging_settings(size: int | None = None) -> dict:
    from boneage.imaging.transforms import ImagingSettings

    params = default_params()["preprocess"]
    settings = ImagingSettings.from_params(type("P", (), params)).to_dict()
    if size:
        settings["size"] = size
    return settings
