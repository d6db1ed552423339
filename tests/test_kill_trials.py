"""Kill trials: SIGKILL the main process, or one Dask worker, at a random moment of a run (seeded); the rerun, with
no manual step, completes and its outputs are identical to an uninterrupted run's.

PRIORFLOW_KILL_TRIALS sets the trials per kind: 1 in `make test`, to keep the suite short; benchmarks/kill_trials.py
runs 10 of each and records the figures (PRIORFLOW_KILL_REPORT, a JSON file) in RESULTS.md.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml

from priorflow.datasets import write_digits_array
from priorflow.storage.outputs import OutputGroup

pytestmark = [pytest.mark.pipeline, pytest.mark.slow]

TRIALS = int(os.environ.get("PRIORFLOW_KILL_TRIALS", "1"))
COMPARED = ("restored", "latents", "measurement", "ground_truth", "metrics/psnr", "metrics/iterations",
            "metrics/stop_reason", "metrics/nfe")
LEASE_TTL = "3"  # seconds: a killed main process's lease is stale this long after its last renewal


def write_config(folder: Path, output: str) -> Path:
    config = {
        "input": str(folder / "in.zarr"), "output": output, "mode": "benchmark",
        "operator": {"name": "inpainting", "params": {"fraction": 0.7}},
        "noise": {"name": "gaussian", "params": {"sigma": 0.05}},
        "solver": {"name": "dmplug", "max_iters": 40, "stopping": {"rule": "es_wmv", "window": 5, "patience": 10}},
        "shard_size": 2, "cluster": {"workers": 2},
    }
    path = folder / f"{Path(output).stem}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start(config: Path, api_url: str) -> subprocess.Popen:
    env = {**os.environ, "PREFECT_API_URL": api_url, "OMP_NUM_THREADS": "1", "PRIORFLOW_LEASE_TTL": LEASE_TTL}
    return subprocess.Popen([sys.executable, "-m", "priorflow.cli", "restore", "--config", str(config)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def dask_workers(process: psutil.Process) -> list[psutil.Process]:
    workers = []
    for child in process.children(recursive=True):
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                workers.append(child)
        except psutil.Error:  # exited meanwhile
            continue
    return workers


def kill_at(run: subprocess.Popen, kind: str, delay: float) -> str:
    """SIGKILL the main process, or a random Dask worker, `delay` seconds into the run; say what was hit."""
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.05)
    if run.poll() is not None:
        return "finished before the kill"
    if kind == "main":
        run.send_signal(signal.SIGKILL)
        return "main"
    parent = psutil.Process(run.pid)
    while run.poll() is None:  # before the cluster is up: the first worker as soon as it exists
        workers = dask_workers(parent)
        if workers:
            victim = random.Random(delay).choice(workers)
            try:
                victim.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                continue
            return "worker"
        time.sleep(0.05)
    return "finished before the kill"


def test_kill_trials(tmp_path, prefect_api_url):
    write_digits_array(str(tmp_path / "in.zarr"), "test", 6)
    began = time.monotonic()
    clean = start(write_config(tmp_path, str(tmp_path / "clean.zarr")), prefect_api_url)
    log, _ = clean.communicate(timeout=300)
    assert clean.returncode == 0, log
    run_seconds = time.monotonic() - began
    reference = OutputGroup.open(str(tmp_path / "clean.zarr"))

    rng = random.Random(20261126)
    figures: dict[str, list[dict]] = {"main": [], "worker": []}
    for kind in ("main", "worker"):
        for trial in range(TRIALS):
            output = str(tmp_path / f"{kind}-{trial}.zarr")
            config = write_config(tmp_path, output)
            delay = rng.uniform(0.0, run_seconds)
            killed = start(config, prefect_api_url)
            hit = kill_at(killed, kind, delay)
            killed_log, _ = killed.communicate(timeout=300)
            began = time.monotonic()
            rerun = start(config, prefect_api_url)
            log, _ = rerun.communicate(timeout=300)
            assert rerun.returncode == 0, f"{kind} trial {trial} (killed at {delay:.1f} s: {hit}):\n{killed_log[-2000:]}\n{log[-3000:]}"
            assert "Traceback" not in log, log
            out = OutputGroup.open(output)
            assert out.done().all()
            identical = all(np.array_equal(out.read(n), reference.read(n), equal_nan=True) for n in COMPARED)
            figures[kind].append({"delay_s": round(delay, 2), "hit": hit, "killed_run_exit": killed.returncode,
                                  "rerun_s": round(time.monotonic() - began, 1), "identical": identical})
            assert identical, (kind, trial, delay, hit)
    if report := os.environ.get("PRIORFLOW_KILL_REPORT"):
        Path(report).write_text(json.dumps({"trials_per_kind": TRIALS, "clean_run_s": round(run_seconds, 1),
                                            "seed": 20261126, "figures": figures}, indent=1))
