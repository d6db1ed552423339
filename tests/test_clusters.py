"""Where shards run: SLURM job scripts (dask-jobqueue), LocalCluster GPU layouts, and a scheduler started from the CLI."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_cluster, digits_run, free_port

from priorflow.config import ClusterConfig, SlurmSpec, load_cluster, validate_config
from priorflow.errors import PriorflowError
from priorflow.flows.clusters import check_cluster, local_cluster, slurm_cluster_kwargs, task_runner

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def job_script(spec: SlurmSpec, tasks_per_gpu: int = 1) -> str:
    """The job script dask-jobqueue would submit (building the cluster submits nothing until it is scaled)."""
    from dask_jobqueue import SLURMCluster

    kwargs = slurm_cluster_kwargs(spec, tasks_per_gpu)
    with SLURMCluster(**kwargs, scheduler_options={"dashboard_address": ":0"}) as cluster:
        return cluster.job_script()


def test_the_deployed_slurm_spec_gives_one_pinned_gpu_worker_per_gpu():
    cluster = load_cluster(ROOT / "deployments" / "slurm.yaml")
    spec = cluster.slurm
    assert spec is not None and spec.gpus_per_job == 4 and spec.jobs == 2
    script = job_script(spec)
    header = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert {"#SBATCH -p gpu", "#SBATCH --gres=gpu:4", "#SBATCH -t 04:00:00", "#SBATCH --cpus-per-task=16",
            "#SBATCH --mem=120G"} <= set(header)  # 128GB booked as SLURM's GiB, rounded up
    worker = script.splitlines()[-1]
    assert "source $HOME/priorflow/.venv/bin/activate" in script.split(worker)[0]
    # dask-cuda starts one worker per GPU of the job, each with its own CUDA_VISIBLE_DEVICES
    assert "-m dask_cuda.cli " in worker and "--nworkers" not in worker
    assert "--resources GPU=1" in worker and "--nthreads 1 " in worker and "--memory-limit 29.80GiB" in worker
    assert "OMP_NUM_THREADS" not in script


def test_slurm_jobs_ask_each_task_for_its_gpu_share():
    spec = SlurmSpec(partition="gpu", gpus_per_job=1, jobs=3)
    cluster = ClusterConfig(slurm=spec, tasks_per_gpu=2)
    runner = task_runner(cluster)
    assert check_cluster(cluster) == 0.5 and runner.cluster_class == "dask_jobqueue.SLURMCluster"
    assert runner.cluster_kwargs["n_workers"] == 3 and runner.cluster_kwargs["cores"] == 2
    assert "--nthreads 2 " in job_script(spec, tasks_per_gpu=2)  # two tasks at a time on the worker's GPU
    assert check_cluster(ClusterConfig(slurm=spec, gpu=False)) is None
    with pytest.raises(PriorflowError, match="dask-cuda"):  # not installed here: 4 workers would share GPU 0
        check_cluster(ClusterConfig(slurm=spec.model_copy(update={"gpus_per_job": 4})))
    with pytest.raises(PriorflowError, match="gpus_per_job is 0"):
        check_cluster(ClusterConfig(slurm=spec.model_copy(update={"gpus_per_job": 0}), gpu=True))


def test_cpu_only_slurm_jobs_run_a_single_threaded_worker_per_core():
    spec = SlurmSpec(partition="cpu", account="proj", gpus_per_job=0, cores_per_job=4, memory="16GB",
                     directives=["--qos=low"], prologue=["module load python"])
    script = job_script(spec)
    assert "gres" not in script and "GPU" not in script and "cuda" not in script
    assert "#SBATCH -A proj" in script and "#SBATCH --qos=low" in script and "#SBATCH --cpus-per-task=4" in script
    assert "module load python\nexport OMP_NUM_THREADS=1\n" in script
    assert "--nthreads 1 " in script and "--nworkers 4 " in script
    assert check_cluster(ClusterConfig(slurm=spec)) is None


def test_a_bad_cluster_spec_names_the_file_and_field(tmp_path):
    bad = tmp_path / "cluster.yaml"
    bad.write_text((ROOT / "deployments" / "slurm.yaml").read_text().replace("jobs: 2", "jobs: 0"))
    with pytest.raises(PriorflowError, match=r"cluster\.yaml: slurm\.jobs: Input should be greater than or equal to 1"):
        load_cluster(bad)
    (tmp_path / "c.toml").write_text('address = "tcp://h:8786"\n[slurm]\npartition = "gpu"\n')
    with pytest.raises(PriorflowError, match=r"c\.toml: .*not both"):
        load_cluster(tmp_path / "c.toml")
    with pytest.raises(PriorflowError, match="cannot read cluster spec"):
        load_cluster(tmp_path / "missing.yaml")


def test_local_cluster_layouts():
    assert local_cluster(ClusterConfig(), gpus=0, has_dask_cuda=False) == (
        "priorflow.flows.clusters.ResilientLocalCluster",
        {"n_workers": 2, "threads_per_worker": 1, "processes": True, "dashboard_address": ":0",
         "preload": ["priorflow.flows.worker_setup"]},
        None)
    with pytest.raises(PriorflowError, match="CUDA is not available"):
        local_cluster(ClusterConfig(gpu=True), gpus=0, has_dask_cuda=False)

    name, kwargs, share = local_cluster(ClusterConfig(), gpus=1, has_dask_cuda=False)
    assert name == "priorflow.flows.clusters.ResilientLocalCluster" and share == 1
    assert kwargs["n_workers"] == 1 and kwargs["threads_per_worker"] == 1 and kwargs["resources"] == {"GPU": 1}

    name, kwargs, share = local_cluster(ClusterConfig(), gpus=2, has_dask_cuda=True)
    assert name == "dask_cuda.LocalCUDACluster" and share == 1
    assert kwargs["n_workers"] == 2 and kwargs["threads_per_worker"] == 1 and kwargs["resources"] == {"GPU": 1}
    assert "processes" not in kwargs  # LocalCUDACluster passes processes=True itself; a second one is a TypeError
    with pytest.raises(PriorflowError, match="2 GPU workers need dask-cuda"):
        local_cluster(ClusterConfig(), gpus=2, has_dask_cuda=False)
    assert local_cluster(ClusterConfig(workers=1), gpus=2, has_dask_cuda=False)[1]["n_workers"] == 1
    with pytest.raises(PriorflowError, match="3 workers for 2 GPUs"):
        local_cluster(ClusterConfig(workers=3), gpus=2, has_dask_cuda=True)

    name, kwargs, share = local_cluster(ClusterConfig(tasks_per_gpu=2), gpus=2, has_dask_cuda=True)
    assert share == 0.5 and kwargs["threads_per_worker"] == 2  # two tasks at a time on each worker's GPU
    assert local_cluster(ClusterConfig(gpu=False), gpus=2, has_dask_cuda=True)[2] is None


@pytest.mark.pipeline
def test_restore_on_a_scheduler_started_from_the_command_line(tmp_path, dask_address, prefect_server):
    """A site's long-lived cluster (`dask scheduler`, `dask worker`): placement is checked against it, and runs one
    after the other each complete on its workers, a later one under another temporary Prefect server than the
    earlier (whose address the workers' Prefect services once kept: every shard then failed after ~90 s, unable to
    acquire its concurrency slots)."""
    from distributed import Client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from priorflow.flows.restore import run_restore
    from priorflow.storage.outputs import OutputGroup

    with Client(dask_address, timeout=30) as client:
        workers = set(client.scheduler_info(n_workers=-1)["workers"])
    assert check_cluster(ClusterConfig(address=dask_address)) is None  # CPU workers: tasks ask for no GPU
    with pytest.raises(PriorflowError, match=r"none of the 2 workers .* advertises a GPU.*--resources GPU=1"):
        check_cluster(ClusterConfig(address=dask_address, gpu=True))
    nowhere = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(PriorflowError, match=f"cannot reach the Dask scheduler at {nowhere}"):
        check_cluster(ClusterConfig(address=nowhere), connect_timeout=1)

    config = validate_config(digits_run(tmp_path, cluster={"address": dask_address}))
    result = run_restore(config)  # under the session's Prefect server
    summary = result["summary"]
    assert summary["shards_done"] == summary["shards"] == 3 and summary["samples"] == 12
    assert len(result["shards"]) == 3 and {r["worker"] for r in result["shards"]} <= workers
    assert len({r["worker"] for r in result["shards"]}) == 2  # both CLI-started workers took shards
    restored = OutputGroup.open(config.output).read("restored")
    assert restored.shape == (12, 1, 16, 16) and np.isfinite(restored).all()
    with temporary_settings({PREFECT_API_URL: ""}):  # then runs under temporary servers of their own, one each
        for name in ("first", "second"):  # 4 shards on 2 workers: each run reuses a worker of the one before
            config = validate_config(digits_run(tmp_path / name, 8, shard_size=2, solver={"name": "mpgd", "steps": 10},
                                                cluster={"address": dask_address}))
            assert run_restore(config)["summary"]["shards_done"] == 4


@pytest.mark.pipeline
def test_gpu_tasks_never_share_a_worker_gpu(tmp_path, prefect_server):
    """A worker advertising one GPU with two threads runs one solver task at a time (Dask's abstract resources
    work the same without a real GPU); with tasks_per_gpu 2 it runs two at once."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
        TaskRunFilter,
        TaskRunFilterFlowRunId,
    )

    from priorflow.flows.restore import run_restore

    def solve_spans(result: dict) -> list[tuple]:
        with get_client(sync_client=True) as client:
            children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[result["flow_run"]])))
            tasks = client.read_task_runs(task_run_filter=TaskRunFilter(
                flow_run_id=TaskRunFilterFlowRunId(any_=[c.id for c in children])))
        return sorted((t.start_time, t.end_time, t.tags) for t in tasks if t.name.startswith("solve-shard"))

    def overlapping(spans: list[tuple]) -> bool:
        return any(nxt[0] < prev[1] for prev, nxt in itertools.pairwise(spans))

    with cli_cluster("--nworkers", "1", "--nthreads", "2", "--resources", "GPU=1") as (address, _):
        assert check_cluster(ClusterConfig(address=address)) == 1  # the worker advertises a GPU
        one = run_restore(validate_config(digits_run(tmp_path / "one", shard_size=3, cluster={"address": address})))
        two = run_restore(validate_config(digits_run(tmp_path / "two", shard_size=3,
                                                     cluster={"address": address, "tasks_per_gpu": 2})))
    spans = solve_spans(one)
    assert len(spans) == 4 and all("priorflow-gpu" in tags for *_, tags in spans)
    assert not overlapping(spans), spans
    assert overlapping(solve_spans(two))  # the check can fail: sharing allowed, the two threads overlap

