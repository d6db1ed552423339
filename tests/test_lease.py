"""The writer lease: refused while a live run renews it, taken over once a dead run's lease goes stale, and of
runs starting at the same moment exactly one wins (atomic create locally, conditional PUT on S3)."""

from __future__ import annotations

import multiprocessing
import time
import uuid

import fsspec
import pytest

from priorflow.storage.lease import LeaseConflict, acquire, break_lease, held


@pytest.fixture(params=["local", "s3"])
def output(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "out.zarr")
    request.getfixturevalue("local_s3")
    fs = fsspec.filesystem("s3")
    if not fs.exists("priorflow-lease"):
        fs.mkdir("priorflow-lease")
    return f"s3://priorflow-lease/{uuid.uuid4().hex[:8]}/out.zarr"


def test_a_live_run_is_refused_and_a_dead_one_taken_over(output, monkeypatch):
    monkeypatch.setenv("PRIORFLOW_LEASE_TTL", "3")
    with held(output, owner="first"):
        start = time.monotonic()
        with pytest.raises(LeaseConflict, match=r"being written by another run \(first"):
            acquire(output, owner="second")
        assert time.monotonic() - start < 2  # refused within about one renewal interval (0.5 s), not after the ttl

    dead = acquire(output, owner="killed")  # a run that is then killed: its lease is never renewed again
    start = time.monotonic()
    taker = acquire(output, owner="next")  # waits the stale lease out, then takes over: no manual unlock
    assert 2.0 < time.monotonic() - start < 6 and taker.generation == dead.generation + 1
    dead.renew()
    assert dead.lost.is_set()  # the dead run, were it only paused, learns it lost the output
    taker.release()
    assert acquire(output, owner="after release").generation == taker.generation + 1  # released: free at once


def test_unlock_frees_a_dead_runs_lease_at_once(output, monkeypatch):
    monkeypatch.setenv("PRIORFLOW_LEASE_TTL", "60")
    acquire(output, owner="killed")
    assert break_lease(output) and not break_lease(output)
    start = time.monotonic()
    acquire(output, owner="next")
    assert time.monotonic() - start < 1


def _contend(output: str, barrier, results) -> None:
    import os

    os.environ["PRIORFLOW_LEASE_TTL"] = "3"
    barrier.wait()
    try:
        with held(output, owner=f"pid {os.getpid()}"):
            results.put("won")
            time.sleep(2.0)  # hold (and renew) while the others look
    except LeaseConflict:
        results.put("refused")


def test_of_runs_starting_together_exactly_one_wins(output):
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(4), context.Queue()
    runs = [context.Process(target=_contend, args=(output, barrier, results)) for _ in range(4)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(60)
    outcomes = sorted(results.get(timeout=5) for _ in runs)
    assert outcomes == ["refused"] * 3 + ["won"]
