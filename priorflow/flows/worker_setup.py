"""Dask preload of the workers priorflow starts (LocalCluster, SLURM jobs: `--preload priorflow.flows.worker_setup`).

Each worker process gets priorflow's console (errors it understood without tracebacks; only warnings and errors when
it shares the user's terminal, a LocalCluster's worker, whose shards the driver logs) and imports what solving a
shard needs (torch, diffusers, Prefect's task engine: seconds) while the cluster starts, not when its first shard
arrives. At exit it skips the interpreter's teardown of those modules: 2-4 s per worker on these machines, spent
after its results are written and its nanny has told it to close, which made the nanny wait, then kill it with
"Worker process still alive after 4.0 seconds, killing" at the end of every run.
"""

from __future__ import annotations

import atexit
import os
from typing import Any


def dask_setup(worker: Any) -> None:
    from priorflow.flows.clusters import QUIET_CONSOLE
    from priorflow.flows.console import quiet_console

    quiet_console(warnings_only=bool(os.environ.get(QUIET_CONSOLE)))
    import diffusers.models.unets.unet_2d  # noqa: F401 - what load_prior imports on first use

    import priorflow.tasks.solve  # noqa: F401

    atexit.register(os._exit, 0)  # registered now, so it runs after the exit handlers registered later (LIFO)
