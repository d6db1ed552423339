"""The Prefect task that solves one shard on a worker: retried on storage hiccups, logged with its rate."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task

from priorflow.errors import PriorflowError
from priorflow.storage.layout import Shard
from priorflow.storage.urls import StorageError
from priorflow.tasks.plan import RunPlan
from priorflow.tasks.progress import ShardProgress
from priorflow.tasks.shard import ShardReport, restore_shard

SOLVE_TAG = "priorflow-solve"  # `prefect concurrency-limit create priorflow-solve N` caps solver tasks across runs


def transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry storage hiccups, not bad input or bad configuration (those fail the same way every time)."""
    exc = state.result(raise_on_failure=False)
    return isinstance(exc, (StorageError, OSError, TimeoutError)) or not isinstance(exc, (PriorflowError, ValueError))


@task(name="solve-shard", retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=transient, tags=[SOLVE_TAG])
def solve_shard(plan: RunPlan, shard: Shard) -> ShardReport:
    report = restore_shard(plan, shard, ShardProgress.on_this_worker(plan, shard))
    if report.skipped:
        get_run_logger().info("shard %d: already written (its worker was lost before reporting), not solved again",
                              report.shard)
        return report
    get_run_logger().info(
        "shard %d: %d samples on %s in %.1f s (%.2f samples/s; read %.2f s, solve %.1f s, write %.2f s)",
        report.shard, report.samples, report.worker, report.total_s, report.samples / report.total_s,
        report.read_s, report.solve_s, report.write_s,
    )
    return report
