"""The restore flow: plan shards, fan them out to Dask workers that run the solver, reduce the metrics.

Prefect flows fan out dataset shards to (GPU) workers that run the chosen solver with DMPlug's running-variance
early stopping, write restored volumes and intermediate latents to Zarr on object storage, and aggregate
metrics in a final reduce task.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

import dask
import torch
from prefect import flow, get_run_logger, unmapped
from prefect.futures import wait
from prefect_dask import DaskTaskRunner
from pydantic import BaseModel, ConfigDict, Field

from priorflow.config import RunConfig
from priorflow.errors import PriorflowError
from priorflow.flows.prefect_api import prefect_api
from priorflow.storage.outputs import OutputGroup
from priorflow.tasks.plan import check_run, plan_shards
from priorflow.tasks.reduce import reduce_metrics
from priorflow.tasks.solve import solve_shard


class ClusterConfig(BaseModel):
    """Where the shards run: a new LocalCluster (default) or an existing Dask scheduler."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    address: str | None = Field(None, description="tcp://host:port of a running scheduler; None starts a LocalCluster.")
    workers: int | None = Field(None, ge=1, description="LocalCluster workers (default: one per GPU, else 2).")
    gpu: bool | None = Field(None, description="Ask for one GPU per task (default: when CUDA is available).")


def task_runner(cluster: ClusterConfig) -> DaskTaskRunner:
    if cluster.address:
        return DaskTaskRunner(address=cluster.address)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by the worker processes: one torch thread each
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # the cluster's own chatter stays out of run logs
    logging.getLogger("distributed").setLevel(logging.WARNING)
    gpus = torch.cuda.device_count()
    workers = cluster.workers or gpus or 2
    kwargs: dict[str, Any] = {"n_workers": workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None}
    if gpus:
        try:
            import dask_cuda  # noqa: F401
        except ImportError:
            if gpus > 1:
                raise PriorflowError("several GPUs need dask-cuda (pip install dask-cuda) for one worker per GPU") from None
        else:
            return DaskTaskRunner(cluster_class="dask_cuda.LocalCUDACluster", cluster_kwargs={**kwargs, "resources": {"GPU": 1}})
        kwargs["resources"] = {"GPU": 1}
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=kwargs)


@flow(name="restore")
def restore(config: RunConfig, gpu: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Plan the shards, solve the pending ones on the workers (one GPU each when `gpu`), reduce the metrics."""
    plan = plan_shards(config, overwrite)
    try:
        annotate = dask.annotate(resources={"GPU": 1}) if gpu else contextlib.nullcontext()
        with annotate:
            futures = solve_shard.map(unmapped(config), plan.pending)
        wait(futures)
        failed = [f for f in futures if not f.state.is_completed()]
        if failed:
            first = failed[0].state.result(raise_on_failure=False)
            raise PriorflowError(f"{len(failed)} of {len(futures)} shards failed; rerun to resume. First error: {first}")
        get_run_logger().info("%d shards solved, %d already done", len(plan.pending), len(plan.shards) - len(plan.pending))
        return reduce_metrics(config)
    finally:
        OutputGroup.open(config.output, read_only=False).release(plan.lock_id)


def run_restore(config: RunConfig, cluster: ClusterConfig | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Run the restore flow on a Dask cluster, against PREFECT_API_URL or one shared temporary Prefect server."""
    cluster = cluster or ClusterConfig()
    gpu = cluster.gpu if cluster.gpu is not None else torch.cuda.is_available()
    check_run(config)  # bad input fails here, before a server or a cluster starts
    with prefect_api():
        return restore.with_options(task_runner=task_runner(cluster))(config, gpu=gpu, overwrite=overwrite)
