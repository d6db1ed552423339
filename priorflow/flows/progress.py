"""A run's progress in samples, for whoever shows it in this process (the command line's bar): shards tell how far
they are as they solve (priorflow.tasks.progress), and the flow adds their counts up."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

Sink = Callable[[float, int], None]
"""sink(samples solved, samples to solve) of the current run."""

_SINKS: list[Sink] = []


@contextlib.contextmanager
def shown_by(sink: Sink) -> Iterator[None]:
    """Tell `sink` the progress of the runs of this process while the context lasts."""
    _SINKS.append(sink)
    try:
        yield
    finally:
        _SINKS.remove(sink)


class Tally:
    """The samples solved of one run: the latest count of each shard (from its messages, or its end)."""

    def __init__(self, run: str, total: int) -> None:
        self.run, self.total = run, total
        self._done: dict[int, float] = {}
        self._lock = threading.Lock()
        self._show()

    def event(self, event: tuple[float, dict[str, Any]]) -> None:
        """A Dask event (time, message) of priorflow.tasks.progress.TOPIC; other runs' messages are ignored."""
        message = event[1]
        if isinstance(message, dict) and message.get("run") == self.run:
            self.shard(int(message["shard"]), float(message["samples"]))

    def shard(self, index: int, samples: float) -> None:
        with self._lock:
            self._done[index] = max(samples, self._done.get(index, 0.0))
        self._show()

    @property
    def solved(self) -> float:
        with self._lock:
            return sum(self._done.values())

    def _show(self) -> None:
        for sink in list(_SINKS):
            sink(self.solved, self.total)
