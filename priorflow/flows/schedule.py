"""Scheduled restoration from one long-lived process, with no work pool or worker to run: `priorflow serve`.

Each scheduled run restores what the output does not hold yet, so a growing dataset is kept restored; runs of
the deployment never overlap (a run that finds the previous one still going is cancelled, not queued).
"""

from __future__ import annotations

from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments.runner import EntrypointType
from prefect.schedules import Cron, Interval, Schedule
from pydantic import ValidationError

from priorflow.config import RunConfig
from priorflow.errors import PriorflowError
from priorflow.flows.prefect_api import prefect_api
from priorflow.flows.restore import restore

ONE_AT_A_TIME = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)


def schedule_for(cron: str | None, interval: float | None, timezone: str) -> Schedule:
    """The schedule the user asked for, checked now: a bad cron or time zone fails at start, not at the first tick."""
    if (cron is None) == (interval is None):
        raise PriorflowError("give exactly one of --cron (e.g. '0 2 * * *') and --interval (seconds)")
    if cron is not None:
        try:
            CronSchedule(cron=cron, timezone=timezone)  # Prefect's own check, with a message naming the value
        except ValidationError as exc:
            raise PriorflowError(f"--cron/--timezone: {exc.errors()[0]['msg']}") from exc
        return Cron(cron, timezone=timezone)
    if interval <= 0:
        raise PriorflowError(f"--interval must be positive, got {interval}")
    return Interval(interval, timezone=timezone)


def serve_restore(config: RunConfig, schedule: Schedule, name: str = "scheduled") -> None:
    """Register the deployment `restore/<name>` with `schedule` and run its flow runs until interrupted."""
    deployment = restore.to_deployment(
        name, schedules=[schedule], parameters={"config": config.model_dump(mode="json")},
        concurrency_limit=ONE_AT_A_TIME, entrypoint_type=EntrypointType.MODULE_PATH,
        description=f"restore what {config.output} lacks of {config.input}",
    )
    with prefect_api():
        serve(deployment)
