"""Where a run's shards execute: a Dask task runner for the configured cluster, and how much GPU a task asks for.

Three kinds of cluster (`ClusterConfig`): a LocalCluster started for the run, an existing Dask scheduler, or
SLURM jobs started for the run by dask-jobqueue. GPU tasks ask for a share of a Dask `GPU` resource that each
GPU worker advertises as 1, so a worker runs at most `tasks_per_gpu` solver tasks on its GPU at a time.
"""

from __future__ import annotations

import logging
import os
from importlib.util import find_spec
from typing import Any

from distributed import LocalCluster, SpecCluster
from distributed.core import Status
from prefect_dask import DaskTaskRunner

from priorflow.config import ClusterConfig, SlurmSpec
from priorflow.errors import PriorflowError

START_ATTEMPTS = 3  # tries to start each worker process of a LocalCluster
WORKER_SETUP = "priorflow.flows.worker_setup"  # preloaded by the workers priorflow starts
QUIET_CONSOLE = "PRIORFLOW_QUIET_CONSOLE"  # set: worker_setup keeps a worker's Prefect console to warnings


def task_runner(cluster: ClusterConfig, scheduler: str | None = None) -> DaskTaskRunner:
    """The Dask task runner for `cluster` (no connection is made until the flow starts it): the running scheduler
    at `scheduler` (a LocalCluster started for the run ahead of the flow) or `cluster.address`, SLURM jobs, or a new
    LocalCluster."""
    if scheduler or cluster.address:
        return DaskTaskRunner(address=scheduler or cluster.address)
    _quiet_cluster_logs()
    if cluster.slurm:
        kwargs = slurm_cluster_kwargs(cluster.slurm, cluster.tasks_per_gpu)
        return DaskTaskRunner(cluster_class="dask_jobqueue.SLURMCluster",
                              cluster_kwargs={**kwargs, "n_workers": cluster.slurm.jobs * kwargs["processes"]})
    import torch

    cluster_class, kwargs, _ = local_cluster(cluster, torch.cuda.device_count(), find_spec("dask_cuda") is not None)
    return DaskTaskRunner(cluster_class=cluster_class, cluster_kwargs=kwargs)


def local_cluster_now(cluster: ClusterConfig) -> SpecCluster:
    """Start the LocalCluster that `cluster` describes (it must describe one: no address, no slurm) and return it
    running, its workers having imported the solvers; the caller closes it."""
    import torch
    from distributed.utils import import_term

    cluster_class, kwargs, _ = local_cluster(cluster, torch.cuda.device_count(), find_spec("dask_cuda") is not None)
    _quiet_cluster_logs()
    return import_term(cluster_class)(**kwargs)


def _quiet_cluster_logs() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by the worker processes: one torch thread each
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # the cluster's own chatter stays out of run logs
    os.environ.setdefault(QUIET_CONSOLE, "1")  # local workers share the terminal: the driver logs for them
    logging.getLogger("distributed").setLevel(logging.WARNING)


def gpu_share(cluster: ClusterConfig, uses_gpus: bool) -> float | None:
    """The `GPU` resource one solver task asks for: 1 / tasks_per_gpu on GPUs, none at all on CPU."""
    return 1 / cluster.tasks_per_gpu if uses_gpus else None


def local_cluster(cluster: ClusterConfig, gpus: int, has_dask_cuda: bool) -> tuple[str, dict[str, Any], float | None]:
    """The cluster class, its arguments and the GPU share of a task for a LocalCluster on a machine with `gpus`
    CUDA devices: one worker per GPU, each pinned to its own GPU (dask-cuda) and running tasks_per_gpu tasks at
    once; without GPUs, single-threaded CPU workers."""
    gpu = cluster.gpu if cluster.gpu is not None else gpus > 0
    if not gpu:
        return "priorflow.flows.clusters.ResilientLocalCluster", {"n_workers": cluster.workers or 2, "threads_per_worker": 1,
                                            "processes": True, "dashboard_address": ":0", "preload": [WORKER_SETUP]}, None
    if not gpus:
        raise PriorflowError("gpu is set but CUDA is not available here: set gpu: false, or run on a machine with a GPU")
    workers = cluster.workers or gpus
    if workers > gpus:
        raise PriorflowError(f"{workers} workers for {gpus} GPUs: there is one worker per GPU; "
                             "let workers share a GPU with tasks_per_gpu instead")
    kwargs = {"n_workers": workers, "threads_per_worker": cluster.tasks_per_gpu, "resources": {"GPU": 1},
              "dashboard_address": ":0", "preload": [WORKER_SETUP]}
    if has_dask_cuda:  # LocalCUDACluster sets CUDA_VISIBLE_DEVICES per worker (and always uses processes)
        return "dask_cuda.LocalCUDACluster", kwargs, gpu_share(cluster, True)
    if workers > 1:
        raise PriorflowError(f"{workers} GPU workers need dask-cuda to give each its own GPU: "
                             "pip install 'priorflow[cuda]', or set workers: 1")
    return "priorflow.flows.clusters.ResilientLocalCluster", {**kwargs, "processes": True}, gpu_share(cluster, True)


class ResilientLocalCluster(LocalCluster):
    """A LocalCluster whose start survives a worker process that dies while starting (killed, or out of memory
    while importing torch): that worker is started again, up to START_ATTEMPTS times, where distributed's
    LocalCluster fails as a whole ("Nanny failed to start") and takes the run with it. Once started, a worker
    that dies is restarted by its nanny as usual."""

    async def _correct_state_internal(self) -> None:
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                return await super()._correct_state_internal()
            except Exception:
                failed = [name for name, worker in self.workers.items() if worker.status != Status.running]
                if attempt == START_ATTEMPTS or not failed:
                    raise
                for name in failed:
                    del self.workers[name]
                logging.getLogger(__name__).warning("%d worker(s) died while starting; starting them again", len(failed))


def slurm_cluster_kwargs(spec: SlurmSpec, tasks_per_gpu: int = 1) -> dict[str, Any]:
    """dask_jobqueue.SLURMCluster arguments for one job of `spec` (no jobs are submitted until it is scaled).

    GPU jobs run one worker per GPU, advertising GPU=1 and running tasks_per_gpu tasks at once; with several GPUs
    the workers are started by dask-cuda, which gives each its own GPU (plain `dask worker --nworkers` would put
    them all on the first one). CPU jobs run one single-threaded worker per core, like the LocalCluster.
    """
    gpus = spec.gpus_per_job
    workers, threads = (gpus, tasks_per_gpu) if gpus else (spec.cores_per_job, 1)
    return {
        "queue": spec.partition,
        "account": spec.account,
        "processes": workers,  # dask-cuda names its workers <name>-<i> too, as jobqueue expects of a job's workers
        "cores": workers * threads,  # Dask threads per job: jobqueue gives each worker cores / processes
        "job_cpu": spec.cores_per_job,  # the cores SLURM books (--cpus-per-task)
        "memory": spec.memory,  # booked with --mem; each worker's --memory-limit is memory / processes
        "walltime": spec.walltime,
        "worker_command": "dask_cuda.cli" if gpus > 1 else "distributed.cli.dask_worker",
        "worker_extra_args": ["--preload", WORKER_SETUP, *(["--resources", "GPU=1"] if gpus else [])],
        "job_script_prologue": [*spec.prologue, *([] if gpus else ["export OMP_NUM_THREADS=1"])],
        "job_extra_directives": [*([f"--gres=gpu:{gpus}"] if gpus else []), *spec.directives],
    }


def check_cluster(cluster: ClusterConfig, connect_timeout: float = 10.0) -> float | None:
    """What can be known about the cluster before a server, a cluster or an output exists, and the `GPU` resource
    one solver task asks for there (None: CPU only, never a GPU). Fails early, with what to do, for GPUs asked for
    but absent (the tasks would wait forever), missing packages, or an existing scheduler that cannot be reached."""
    if cluster.address:
        return gpu_share(cluster, _scheduler_uses_gpus(cluster, connect_timeout))
    if cluster.slurm:
        _check_slurm(cluster, cluster.slurm)
        return gpu_share(cluster, cluster.slurm.gpus_per_job > 0 and cluster.gpu is not False)
    import torch

    return local_cluster(cluster, torch.cuda.device_count(), find_spec("dask_cuda") is not None)[2]


def _check_slurm(cluster: ClusterConfig, spec: SlurmSpec) -> None:
    if find_spec("dask_jobqueue") is None:
        raise PriorflowError("slurm needs dask-jobqueue: pip install 'priorflow[slurm]'")
    if spec.gpus_per_job > 1 and find_spec("dask_cuda") is None:  # the jobs run this same Python environment
        raise PriorflowError(f"gpus_per_job: {spec.gpus_per_job} needs dask-cuda to give each worker its own GPU: "
                             "pip install 'priorflow[cuda]', or use gpus_per_job: 1 and more jobs")
    if cluster.gpu and not spec.gpus_per_job:
        raise PriorflowError("gpu is set but slurm.gpus_per_job is 0: ask for GPUs per job, or set gpu: false")


def _scheduler_uses_gpus(cluster: ClusterConfig, timeout: float) -> bool:
    """Whether tasks on the running scheduler should ask for GPUs: asked for (gpu), or any worker advertises one."""
    if cluster.gpu is False:
        return False
    from distributed import Client

    try:
        with Client(cluster.address, timeout=timeout) as client:
            workers = client.scheduler_info(n_workers=-1)["workers"]
    except (OSError, ValueError) as exc:
        raise PriorflowError(f"cannot reach the Dask scheduler at {cluster.address}: {exc}") from exc
    has_gpus = any(w.get("resources", {}).get("GPU", 0) > 0 for w in workers.values())
    if cluster.gpu and not has_gpus:
        raise PriorflowError(f"gpu is set but none of the {len(workers)} workers of {cluster.address} advertises a GPU, "
                             "so the tasks would wait forever: start one worker per GPU with "
                             f"`dask worker {cluster.address} --resources GPU=1 --nthreads {cluster.tasks_per_gpu}` "
                             "(`dask cuda worker` for several GPUs per machine), or set gpu: false")
    return has_gpus
