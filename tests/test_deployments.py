"""Scheduled restoration as users run it: a Prefect server started from the command line, the deployments of
deployments/prefect.yaml on a process work pool and worker, and `priorflow serve` on a schedule."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr
from conftest import digits_run, free_port, stop

from priorflow.datasets import load_digits
from priorflow.storage.outputs import OutputGroup
from priorflow.tasks.reduce import ARTIFACT_KEYS

pytestmark = pytest.mark.pipeline

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def wait_for(condition: Callable[[], bool], timeout: float, what: str, every: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """A background process in its own session, so that it and its children can be stopped together."""
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="module")
def server_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """`prefect server start` on a free port with its own PREFECT_HOME; the environment that points at it."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "OMP_NUM_THREADS": "1", "PREFECT_WORKER_QUERY_SECONDS": "2"}
    server = start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, home / "server.log")
    try:
        import httpx

        def healthy() -> bool:
            assert server.poll() is None, (home / "server.log").read_text()[-2000:]
            try:
                return httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 120, "the Prefect server")
        yield env
    finally:
        stop(server)


@contextlib.contextmanager
def client_for(env: dict[str, str]) -> Iterator:
    """A Prefect client of the server `env` points at (this process's own settings point elsewhere)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        yield client


def run_cli(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def small_config(tmp_path: Path, count: int) -> dict:
    return digits_run(tmp_path, count, solver={"name": "mpgd", "steps": 20, "scale": 4.0}, shard_size=4,
                      cluster={"workers": 1})


def test_deploy_prefect_yaml_and_run_it_on_a_process_worker(tmp_path, server_env):
    run_cli([str(BIN / "prefect"), "work-pool", "create", "priorflow", "--type", "process"], server_env)
    run_cli([str(BIN / "prefect"), "--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml"], server_env)
    with client_for(server_env) as client:
        nightly = client.read_deployment_by_name("restore/nightly")
        assert nightly.schedules[0].schedule.cron == "0 2 * * *" and nightly.schedules[0].active
        assert nightly.work_pool_name == "priorflow" and nightly.global_concurrency_limit.limit == 1
        slurm = client.read_deployment_by_name("restore/nightly-slurm")
        assert slurm.parameters["config"]["cluster"]["slurm"]["gpus_per_job"] == 4 and not slurm.schedules[0].active

    worker = start([str(BIN / "prefect"), "worker", "start", "--pool", "priorflow", "--limit", "1"], server_env,
                   tmp_path / "worker.log")
    try:
        params = json.dumps({"config": small_config(tmp_path, 6)})
        ran = run_cli([str(BIN / "prefect"), "deployment", "run", "restore/nightly", "--watch", "--params", params],
                      server_env, timeout=300)
        assert "Completed" in ran.stdout
    finally:
        stop(worker)
    out = OutputGroup.open(str(tmp_path / "out.zarr"))
    assert out.done().all() and out.group.attrs["priorflow_summary"]["samples_done"] == 6
    with client_for(server_env) as client:
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[nightly.id])))
        completed = [r for r in runs if r.state_name == "Completed"]
        upcoming = [r for r in runs if r.state_name == "Scheduled"]  # the server's scheduler made the cron's next runs
        assert len(completed) == 1 and len(upcoming) + 1 == len(runs)
        assert upcoming and all((t := r.expected_start_time).hour == 2 and t.minute == 0 for r in upcoming)
        keys = {a.key for a in client.read_artifacts() if a.flow_run_id == completed[0].id}
    assert set(ARTIFACT_KEYS.values()) <= keys


def test_served_schedule_restores_only_new_samples(tmp_path, server_env):
    """`priorflow serve` every 5 s: the first run restores the 6 samples; 4 appended samples are restored by a
    later run, and the first 6 are left exactly as they were."""
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(small_config(tmp_path, 6)))
    out_url = str(tmp_path / "out.zarr")

    def restored(count: int) -> Callable[[], bool]:
        def check() -> bool:
            assert serving.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                return OutputGroup.open(out_url).group.attrs.get("priorflow_summary", {}).get("samples_done") == count
            except Exception:  # noqa: BLE001 - not written yet
                return False

        return check

    serving = start([str(BIN / "priorflow"), "serve", "--config", str(config), "--interval", "5", "--name", "every-5s"],
                    server_env, tmp_path / "serve.log")
    try:
        wait_for(restored(6), 240, "the first scheduled run")
        before = {name: OutputGroup.open(out_url).read(name) for name in ("restored", "latents", "metrics/seconds")}
        zarr.open_array(str(tmp_path / "in.zarr"), mode="r+").append(load_digits("test", 16)[0][6:10].numpy())
        wait_for(restored(10), 240, "a scheduled run to restore the new samples")
    finally:
        stop(serving)
    out = OutputGroup.open(out_url)
    for name, old in before.items():
        assert np.array_equal(out.read(name)[:6], old), name
    assert out.done().all() and np.isfinite(out.read("metrics/psnr")).all()
    log = (tmp_path / "serve.log").read_text()
    assert "6 of 6 samples to solve" in log and "4 of 10 samples to solve" in log
