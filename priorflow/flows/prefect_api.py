"""A Prefect API for one run: the configured server (PREFECT_API_URL), or one temporary local server that the
flow and every Dask worker process share (without it, each worker would start a temporary server of its own), and
the plugin that points long-lived workers at the current one."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, temporary_settings


@contextlib.contextmanager
def _exported(url: str) -> Iterator[None]:
    """PREFECT_API_URL in the environment, inherited by worker processes started meanwhile; restored after."""
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous


_REAPER = """
import os, signal, sys, time
parent, targets = int(sys.argv[1]), [int(p) for p in sys.argv[2:]]
def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
while os.getppid() == parent and any(map(alive, targets)):
    time.sleep(0.5)
for sig in (signal.SIGTERM, signal.SIGKILL):
    for pid in filter(alive, targets):
        os.kill(pid, sig)
    deadline = time.monotonic() + 3
    while any(map(alive, targets)) and time.monotonic() < deadline:
        time.sleep(0.1)
"""


def reap_with_this_process(*pids: int) -> None:
    """Start a small watcher that ends `pids` once this process is gone, however it ended (SIGKILL included).

    Prefect's temporary server is a child process that outlives a killed parent and keeps listening for minutes;
    the watcher, also a child, notices its own re-parenting and ends the server. It exits with the server.
    """
    subprocess.Popen([sys.executable, "-c", _REAPER, str(os.getpid()), *map(str, pids)],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def prefect_api(startup_timeout: int = 90) -> Iterator[str]:
    configured = PREFECT_API_URL.value()
    if configured:
        with _exported(configured):
            yield configured
        return
    from prefect.server.api.server import SubprocessASGIServer

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    server = SubprocessASGIServer(_free_port())  # a server of its own: Prefect's default one may be another's
    server.start(timeout=startup_timeout)
    reap_with_this_process(server.server_process.pid)
    try:
        with _exported(server.api_url), temporary_settings({PREFECT_API_URL: server.api_url}):
            try:
                yield server.api_url
            finally:
                APILogWorker.drain_all(timeout=5)  # send the run's last logs (a failure's too) while the server is up
    finally:
        server.stop()


class CurrentAPI(WorkerPlugin):
    """Points a Dask worker's Prefect services at the API of the run that registers it (`client.register_plugin`).

    Prefect keeps per-process services (the log and event workers, the clients that take concurrency slots) and
    binds each to the API it first talked to. A long-lived worker of an external cluster that served a run under a
    temporary server therefore kept talking to it after it stopped: every shard of every later run failed after
    ~90 s, unable to acquire its concurrency slots. Registered by every run, this drains those services when the
    API changed, so that they are made again for the current one. Runs that share workers at the same time must
    share a Prefect server (PREFECT_API_URL), as Prefect's services are one per process.
    """

    name = "priorflow-prefect-api"

    def __init__(self, url: str) -> None:
        self.url = url

    async def setup(self, worker: Any) -> None:
        await rebind_services(self.url)


_BOUND: list[str] = []  # the API this process's Prefect services were last pointed at


async def rebind_services(url: str) -> None:
    """Drain this process's Prefect services unless they already belong to `url` (they restart on next use).

    Called on the worker's event loop, where Prefect's `drain_all` returns an awaitable rather than blocking."""
    if _BOUND == [url]:
        return
    from prefect._internal.concurrency.services import _QueueServiceBase

    await _QueueServiceBase.drain_all(timeout=5, at_exit=False)
    _BOUND[:] = [url]
