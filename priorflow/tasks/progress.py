"""How far a shard is, told to the driver while it solves: through the Dask scheduler's event log (topic TOPIC), at
most one message a second, so that a progress bar counts samples as they are solved, not shards as they end."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from priorflow.storage.layout import Shard
from priorflow.tasks.plan import RunPlan

TOPIC = "priorflow-progress"
EVERY_S = 1.0


class ShardProgress:
    """A progress sink for priorflow.solvers.algorithms.base.reporting: the fraction of the shard's rows done,
    sent as {"run": output URL, "shard": index, "samples": samples done}."""

    def __init__(self, run: str, shard: Shard, send: Callable[[dict[str, Any]], None]) -> None:
        self.run, self.shard, self.send = run, shard, send
        self._sent = 0.0

    @classmethod
    def on_this_worker(cls, plan: RunPlan, shard: Shard) -> ShardProgress | None:
        """The shard's progress sent from this Dask worker; None outside one (nobody to tell)."""
        try:
            from distributed import get_worker

            worker = get_worker()
        except (ImportError, ValueError):
            return None
        return cls(plan.output, shard, lambda message: worker.log_event(TOPIC, message))

    def __call__(self, fraction: float) -> None:
        now = time.monotonic()
        if now - self._sent < EVERY_S and fraction < 1.0:
            return
        self._sent = now
        self.send({"run": self.run, "shard": self.shard.index, "samples": fraction * self.shard.size})
