"""Kill a Dask worker with SIGKILL in the middle of a shard: the rerun completes with nothing lost or duplicated
and results identical to an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
import yaml

from priorflow.datasets import write_digits_array
from priorflow.storage.outputs import OutputGroup

pytestmark = pytest.mark.pipeline


def config_file(tmp_path, output: str) -> str:
    config = {
        "input": str(tmp_path / "in.zarr"),
        "output": output,
        "mode": "benchmark",
        "operator": {"name": "inpainting", "params": {"fraction": 0.7}},
        "noise": {"name": "gaussian", "params": {"sigma": 0.05}},
        "solver": {"name": "dmplug", "max_iters": 60, "stopping": {"rule": "es_wmv", "window": 5, "patience": 10}},
        "shard_size": 3,
    }
    path = tmp_path / f"{os.path.basename(output)}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def restore(config: str, api_url: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "PREFECT_API_URL": api_url, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "priorflow.cli", "restore", "--config", config, "--workers", "2"]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def dask_workers(process: psutil.Process) -> list[psutil.Process]:
    workers = []
    for child in process.children(recursive=True):
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                workers.append(child)
        except psutil.Error:  # exited meanwhile
            continue
    return workers


def test_sigkill_a_worker_mid_shard_then_rerun(tmp_path, prefect_api_url):
    write_digits_array(str(tmp_path / "in.zarr"), "test", 12)
    killed_run = config_file(tmp_path, str(tmp_path / "killed.zarr"))
    clean_run = config_file(tmp_path, str(tmp_path / "clean.zarr"))

    first = restore(killed_run, prefect_api_url)
    parent = psutil.Process(first.pid)
    deadline = time.time() + 240
    victim = None
    while victim is None and time.time() < deadline and first.poll() is None:
        time.sleep(0.2)
        try:
            done = OutputGroup.open(str(tmp_path / "killed.zarr")).done()
        except Exception:  # noqa: BLE001 - the group does not exist yet
            continue
        workers = dask_workers(parent)
        if 1 <= done.sum() < len(done) and workers:  # one shard written, others in flight
            victim = workers[0]
            victim.send_signal(signal.SIGKILL)
    log, _ = first.communicate(timeout=300)
    assert victim is not None, f"never saw a shard in flight:\n{log[-3000:]}"

    rerun = restore(killed_run, prefect_api_url)
    out, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, out
    clean = restore(clean_run, prefect_api_url)
    out, _ = clean.communicate(timeout=300)
    assert clean.returncode == 0, out

    killed, reference = OutputGroup.open(str(tmp_path / "killed.zarr")), OutputGroup.open(str(tmp_path / "clean.zarr"))
    assert killed.done().all()
    for name in ("restored", "latents", "measurement", "metrics/psnr", "metrics/iterations", "metrics/stop_reason"):
        assert np.array_equal(killed.read(name), reference.read(name)), name
    assert killed.group.attrs["priorflow_summary"]["samples"] == 12
