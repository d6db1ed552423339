"""A Prefect API for one run: the configured server (PREFECT_API_URL), or one temporary local server that the
flow and every Dask worker process share (without it, each worker would start a temporary server of its own)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

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


@contextlib.contextmanager
def prefect_api(startup_timeout: int = 90) -> Iterator[str]:
    configured = PREFECT_API_URL.value()
    if configured:
        with _exported(configured):
            yield configured
        return
    from prefect.server.api.server import SubprocessASGIServer

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    server = SubprocessASGIServer()
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
