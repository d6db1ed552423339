"""The restore flow: plan shards, fan them out to Dask workers that run the solver, reduce the metrics.

Prefect flows fan out dataset shards to (GPU) workers that run the chosen solver with DMPlug's running-variance
early stopping, write restored volumes and intermediate latents to Zarr on object storage, and aggregate
metrics in a final reduce task. Only what the output does not hold yet is solved, so a scheduled run over a
growing dataset restores its new samples, and a rerun after a failure resumes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dask
from prefect import flow, get_run_logger, runtime, tags, unmapped
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import as_completed

from priorflow.config import RunConfig
from priorflow.errors import PriorflowError
from priorflow.flows.clusters import local_cluster_now, placement
from priorflow.flows.prefect_api import prefect_api
from priorflow.storage.layout import Shard
from priorflow.storage.lease import held
from priorflow.tasks.plan import check_run, plan_shards
from priorflow.tasks.reduce import reduce_metrics
from priorflow.tasks.solve import solve_shard

GPU_TAG = "priorflow-gpu"  # `prefect concurrency-limit create priorflow-gpu N` caps GPU tasks across all runs


@flow(name="solve-shards")
def solve_shards(config: RunConfig, shards: list[Shard], gpu_per_task: float | None = None) -> list[dict[str, Any]]:
    """Solve `shards` on the Dask workers (each task holding `gpu_per_task` of a GPU); per-shard progress."""
    logger = get_run_logger()
    total = sum(s.size for s in shards)
    progress = create_progress_artifact(0.0, key="priorflow-progress", description="samples solved in this run")
    start, solved, reports, failures = time.perf_counter(), 0, [], []
    on_gpu = dask.annotate(resources={"GPU": gpu_per_task}) if gpu_per_task else contextlib.nullcontext()
    with on_gpu, tags(*([GPU_TAG] if gpu_per_task else [])):
        futures = solve_shard.map(unmapped(config), shards)
    for future in as_completed(futures):
        try:
            report = future.result()
        except Exception as exc:  # noqa: BLE001 - every shard's failure is reported, after the others finish
            failures.append(exc)
            continue
        reports.append(report)
        solved += report["samples"]
        update_progress_artifact(progress, 100.0 * solved / total)
        logger.info("%d/%d samples solved (%.2f samples/s overall); shard %d by %s", solved, total,
                    solved / (time.perf_counter() - start), report["shard"], report["worker"])
    if failures:
        raise PriorflowError(f"{len(failures)} of {len(shards)} shards failed; rerun to resume. First error: {failures[0]}")
    return sorted(reports, key=lambda r: r["shard"])


@flow(name="restore")
def restore(config: RunConfig, overwrite: bool = False, scheduler: str | None = None) -> dict[str, Any]:
    """Restore what `config.output` does not hold yet, on `config.cluster` (or on the running Dask `scheduler`
    that `run_restore` started for it); summarize the whole output.

    The run holds the output's writer lease throughout (priorflow.storage.lease): a second run waits for a dead
    one's lease to go stale and takes over, and is refused while a live one renews it.
    """
    logger = get_run_logger()
    with held(config.output, owner=f"flow run {runtime.flow_run.id}") as lease:
        plan = plan_shards(config, overwrite)
        reports: list[dict[str, Any]] = []
        pending = sum(s.size for s in plan.pending)
        logger.info("%d of %d samples to solve, in %d shards", pending, plan.layout.num_samples, len(plan.pending))
        if plan.pending:  # an up-to-date output starts no cluster at all
            cluster = config.cluster if scheduler is None else config.cluster.model_copy(
                update={"address": scheduler, "workers": None})
            where = placement(cluster)
            if where.gpu_per_task is None and config.device == "auto":  # a CPU-only run never touches a GPU
                config = config.model_copy(update={"device": "cpu"})
            reports = solve_shards.with_options(task_runner=where.runner)(config, plan.pending, where.gpu_per_task)
        if lease.lost.is_set():
            raise PriorflowError(f"another run took {config.output} over while this one was not renewing its lease "
                                 "(was the process paused?); its results stand, rerun to summarize")
        return {"summary": reduce_metrics(config), "shards": reports, "flow_run": str(runtime.flow_run.id)}


def run_restore(config: RunConfig, overwrite: bool = False) -> dict[str, Any]:
    """Run the restore flow against PREFECT_API_URL, or one temporary Prefect server shared with the workers.

    Bad input fails first, before a server, a cluster or an output group exists. Then, when there is work and the
    run's cluster is a LocalCluster, the cluster starts (its workers importing the solvers) while the server does,
    instead of after it: seconds that dominate a small run.
    """
    checked = check_run(config, overwrite)
    early = checked.has_work and not (config.cluster.address or config.cluster.slurm)
    with contextlib.ExitStack() as stack:
        scheduler = stack.enter_context(_cluster_in_background(config)) if early else None
        stack.enter_context(prefect_api())
        return restore(config, overwrite=overwrite, scheduler=scheduler() if scheduler else None)


@contextlib.contextmanager
def _cluster_in_background(config: RunConfig) -> Iterator[Callable[[], str]]:
    """Start the run's LocalCluster in a thread; yield a function that waits for it and gives its scheduler's
    address. The cluster is closed at exit (after waiting for its start, if it is still starting)."""
    with ThreadPoolExecutor(1, thread_name_prefix="priorflow-cluster") as pool:
        starting = pool.submit(local_cluster_now, config.cluster)
        try:
            yield lambda: starting.result().scheduler_address
        finally:
            if starting.exception() is None:
                starting.result().close()
