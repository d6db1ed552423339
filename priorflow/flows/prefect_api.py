"""A Prefect API for one run: the configured server (PREFECT_API_URL), or one temporary local server that the
flow and every Dask worker process share (without it, each worker would start a temporary server of its own)."""

from __future__ import annotations

import contextlib
import os
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
    try:
        with _exported(server.api_url), temporary_settings({PREFECT_API_URL: server.api_url}):
            yield server.api_url
            APILogWorker.drain_all(timeout=5)  # send the run's last logs while the server is still there
    finally:
        server.stop()
