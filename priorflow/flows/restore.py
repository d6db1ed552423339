"""The restore flow: plan shards, fan them out to Dask workers that run the solver, reduce the metrics.

Prefect flows fan out dataset shards to (GPU) workers that run the chosen solver with DMPlug's running-variance
early stopping, write restored volumes and intermediate latents to Zarr on object storage, and aggregate
metrics in a final reduce task. Only what the output does not hold yet is solved, so a scheduled run over a
growing dataset restores its new samples, and a rerun after a failure resumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import dask
from distributed import SpecCluster
from prefect import flow, get_run_logger, runtime, tags, unmapped
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.context import FlowRunContext
from prefect.futures import as_completed
from prefect.settings import PREFECT_API_URL

from priorflow.config import RunConfig
from priorflow.errors import PriorflowError
from priorflow.flows.clusters import check_cluster, local_cluster_now, task_runner
from priorflow.flows.prefect_api import CurrentAPI, prefect_api
from priorflow.flows.progress import Tally
from priorflow.storage.lease import held
from priorflow.tasks.output import prepare_output
from priorflow.tasks.plan import RunPlan, make_plan
from priorflow.tasks.progress import TOPIC
from priorflow.tasks.reduce import reduce_metrics
from priorflow.tasks.shard import ShardReport
from priorflow.tasks.solve import solve_shard

GPU_TAG = "priorflow-gpu"  # `prefect concurrency-limit create priorflow-gpu N` caps GPU tasks across all runs


def plan_run(config: RunConfig, overwrite: bool = False) -> RunPlan:
    """The run checked whole before a server, a cluster or an output exists: its cluster (GPUs, packages, the
    scheduler), then everything tasks.plan.make_plan checks. Shards solve on the CPU when the cluster has no GPU for
    them (a CPU-only run never touches a GPU)."""
    gpu_share = check_cluster(config.cluster)
    device = "cpu" if gpu_share is None and config.device == "auto" else config.device
    return make_plan(config, overwrite, device=device, gpu_share=gpu_share)


@flow(name="solve-shards")
def solve_shards(plan: RunPlan) -> list[ShardReport]:
    """Solve the plan's pending shards on the Dask workers (each task holding `gpu_share` of a GPU), counting the
    samples solved as the shards report them."""
    logger = get_run_logger()
    client = FlowRunContext.get().task_runner.client  # type: ignore[union-attr]
    client.register_plugin(CurrentAPI(PREFECT_API_URL.value()))  # workers of another run's server, pointed here
    tally = Tally(plan.output, plan.pending_samples)
    client.subscribe_topic(TOPIC, tally.event)
    progress = create_progress_artifact(0.0, key="priorflow-progress", description="samples solved in this run")
    start, reports, failures = time.perf_counter(), [], []
    on_gpu = dask.annotate(resources={"GPU": plan.gpu_share}) if plan.gpu_share else contextlib.nullcontext()
    try:
        with on_gpu, tags(*([GPU_TAG] if plan.gpu_share else [])):
            futures = solve_shard.map(unmapped(plan), list(plan.pending or ()))
        for future in as_completed(futures):
            try:
                report = future.result()
            except Exception as exc:  # noqa: BLE001 - every shard's failure is reported, after the others finish
                failures.append(exc)
                continue
            reports.append(report)
            tally.shard(report.shard, report.samples)
            update_progress_artifact(progress, 100.0 * tally.solved / tally.total)
            logger.info("%.0f/%d samples solved (%.2f samples/s overall); shard %d by %s: %d samples in %.1f s (read "
                        "%.2f s, solve %.1f s, write %.2f s)", tally.solved, tally.total,
                        tally.solved / (time.perf_counter() - start), report.shard, report.worker, report.samples,
                        report.total_s, report.read_s, report.solve_s, report.write_s)
    finally:
        client.unsubscribe_topic(TOPIC)
    if failures:
        raise PriorflowError(f"{len(failures)} of {len(futures)} shards failed; rerun to resume. First error: {failures[0]}")
    return sorted(reports, key=lambda r: r.shard)


@flow(name="restore")
def restore(config: RunConfig, overwrite: bool = False, plan: RunPlan | None = None,
            scheduler: str | None = None) -> dict[str, Any]:
    """Restore what `config.output` does not hold yet, on `config.cluster` (or on the running Dask `scheduler`
    that `run_restore` started for it); summarize the whole output. `plan` is the configuration's plan when the
    caller made it already (`run_restore` does, before any server exists); a deployment gives the config alone.

    The run holds the output's writer lease throughout (priorflow.storage.lease): a second run waits for a dead
    one's lease to go stale and takes over, and is refused while a live one renews it.
    """
    logger = get_run_logger()
    if plan is None:
        plan = plan_run(config, overwrite)
    elif plan.config != config.located():
        raise PriorflowError("the plan given to the restore flow is not the plan of its configuration")
    with held(plan.output, owner=f"flow run {runtime.flow_run.id}") as lease:
        plan = prepare_output(plan, overwrite)
        logger.info("%d of %d samples to solve, in %d shards", plan.pending_samples, plan.layout.num_samples,
                    len(plan.pending or ()))
        reports: list[ShardReport] = []
        if plan.pending:  # an up-to-date output starts no cluster at all
            reports = solve_shards.with_options(task_runner=task_runner(config.cluster, scheduler))(plan)
        if lease.lost.is_set():
            raise PriorflowError(f"another run took {plan.output} over while this one was not renewing its lease "
                                 "(was the process paused?); its results stand, rerun to summarize")
        return {"summary": reduce_metrics(plan), "shards": [dataclasses.asdict(r) for r in reports],
                "flow_run": str(runtime.flow_run.id)}


def run_restore(config: RunConfig, overwrite: bool = False, plan: RunPlan | None = None) -> dict[str, Any]:
    """Run the restore flow against PREFECT_API_URL, or one temporary Prefect server shared with the workers.

    Bad input fails first (`plan_run`, unless the caller gives its plan), before a server, a cluster or an output
    group exists. Then, when there is work and the run's cluster is a LocalCluster, the cluster starts (its workers
    importing the solvers) while the server does, instead of after it: seconds that dominate a small run. The
    cluster is closed before the server stops, so that its workers' last logs still reach it.
    """
    plan = plan or plan_run(config, overwrite)
    local = plan.has_work and not (config.cluster.address or config.cluster.slurm)
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(_started(config)) if local else None  # starts now, in the background
        stack.enter_context(prefect_api())
        if cluster is not None:
            stack.callback(_close, cluster)  # exits before prefect_api: the workers' logs reach the server
        scheduler = cluster.result().scheduler_address if cluster is not None else None
        return restore(config, overwrite=overwrite, plan=plan, scheduler=scheduler)


@contextlib.contextmanager
def _started(config: RunConfig) -> Iterator[Future[SpecCluster]]:
    """The run's LocalCluster, starting in a thread; closed at exit if nobody closed it (a failed start)."""
    with ThreadPoolExecutor(1, thread_name_prefix="priorflow-cluster") as pool:
        starting = pool.submit(local_cluster_now, config.cluster)
        try:
            yield starting
        finally:
            _close(starting)


def _close(starting: Future[SpecCluster]) -> None:
    """Close the cluster once it has started (waiting for its start, if it is still starting)."""
    if starting.exception() is None:
        starting.result().close()
