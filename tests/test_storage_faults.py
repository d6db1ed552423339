"""Storage faults between priorflow and a real S3 server (Ceph radosgw), injected by tests/faultproxy.py: transient
faults are retried and change nothing; a persistent fault is a clear StorageError soon, and leaves nothing that a
rerun would trust."""

import time

import numpy as np
import pytest
import s3fs
import zarr
from conftest import run_fields
from faultproxy import FAILING, KINDS, FaultProxy, Schedule

from priorflow.config import validate_config
from priorflow.datasets import write_digits_array
from priorflow.flows.restore import run_restore
from priorflow.storage.urls import StorageError, open_store

DATA = np.random.default_rng(0).random((24, 1, 16, 16), dtype=np.float32)
CHUNKS = (4, 1, 16, 16)
FILL = -1.0  # never in DATA: a chunk read as missing would show it


@pytest.fixture(scope="module")
def bucket(local_s3):
    fs = s3fs.S3FileSystem()
    if not fs.exists("priorflow-faults"):
        fs.mkdir("priorflow-faults")
    return "s3://priorflow-faults"


@pytest.fixture
def proxy(local_s3, monkeypatch):
    """The proxy in front of the local S3 server, forwarding untouched until a test gives it a schedule; every
    S3 client made meanwhile goes through it."""
    with FaultProxy(local_s3["AWS_ENDPOINT_URL"], lifetime_s=300) as faults:
        monkeypatch.setenv("AWS_ENDPOINT_URL", faults.url)
        s3fs.S3FileSystem.clear_instance_cache()
        yield faults
    s3fs.S3FileSystem.clear_instance_cache()


def write(url: str) -> zarr.Array:
    array = zarr.create_array(open_store(url), shape=DATA.shape, chunks=CHUNKS, dtype="f4", fill_value=FILL, overwrite=True)
    array[...] = DATA
    return array


def objects(url: str) -> dict[str, bytes]:
    """Every object of a Zarr array, read without the proxy's faults."""
    fs = s3fs.S3FileSystem()
    root = url.removeprefix("s3://")
    return {path.removeprefix(root): fs.cat_file(path) for path in fs.find(root)}


def test_transient_faults_of_every_kind_are_retried_and_change_nothing(bucket, proxy):
    write(f"{bucket}/clean.zarr")
    proxy.schedule = Schedule(rate=0.4, seed=3)
    write(f"{bucket}/faulty.zarr")
    back = zarr.open_array(open_store(f"{bucket}/faulty.zarr", read_only=True))[...]
    counts = dict(proxy.counts)
    proxy.schedule = Schedule()
    assert np.array_equal(back, DATA)
    assert objects(f"{bucket}/faulty.zarr") == objects(f"{bucket}/clean.zarr")  # byte for byte, metadata included
    assert all(counts[kind] > 0 for kind in KINDS), counts
    assert counts["retried"] >= sum(counts[kind] for kind in FAILING) > 0, counts


def test_a_persistent_fault_is_a_clear_error_soon_and_the_rerun_is_identical(bucket, proxy):
    url = f"{bucket}/outage.zarr"
    array = write(url)
    reader = zarr.open_array(open_store(url, read_only=True))  # metadata read before the outage

    # writes: new data, the outage starting after a few chunks are stored
    proxy.schedule = Schedule(persistent=True, kinds=FAILING, after=2, seed=1)
    start = time.perf_counter()
    with pytest.raises(StorageError, match=rf"{url}/c/.*(failed after retries|unreachable \(after)"):
        array[...] = 1 - DATA
    assert time.perf_counter() - start < 30
    assert proxy.counts["retried"] > 0
    # reads: an error too, never a chunk taken for a missing one (fill values)
    start = time.perf_counter()
    with pytest.raises(StorageError, match=r"failed after retries|unreachable \(after"):
        reader[...]
    assert time.perf_counter() - start < 30

    proxy.schedule = Schedule()  # the storage is back
    # each chunk is old or new whole (S3 PUTs are atomic): nothing torn for a rerun to trust
    chunks = [slice(i, i + CHUNKS[0]) for i in range(0, len(DATA), CHUNKS[0])]
    torn = reader[...]
    new = [np.array_equal(torn[rows], 1 - DATA[rows]) for rows in chunks]
    assert all(is_new or np.array_equal(torn[rows], DATA[rows]) for rows, is_new in zip(chunks, new))
    assert sum(new) >= 2  # the two before the outage, and any whose answer alone was cut
    array[...] = 1 - DATA  # the rerun
    assert np.array_equal(reader[...], 1 - DATA)


@pytest.mark.pipeline
def test_restore_through_transient_faults_equals_a_fault_free_run(bucket, proxy, prefect_api_url, monkeypatch):
    from distributed import LocalCluster

    monkeypatch.setenv("PREFECT_API_URL", prefect_api_url)
    # one worker for both runs (it inherits the proxy's endpoint); the first run goes through the proxy untouched
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        fields = run_fields(write_digits_array(f"{bucket}/digits.zarr", "test", 8), f"{bucket}/clean.out.zarr",
                            solver={"name": "mpgd", "steps": 10, "scale": 4.0}, shard_size=4,
                            cluster={"address": cluster.scheduler_address})
        run_restore(validate_config(fields))
        assert proxy.faults() == 0
        proxy.schedule = Schedule(rate=0.05, seed=11)
        faulty = run_restore(validate_config(fields | {"output": f"{bucket}/faulty.out.zarr"}))
        counts = dict(proxy.counts)
        proxy.schedule = Schedule()
    assert faulty["summary"]["samples_done"] == 8
    assert sum(counts[kind] for kind in FAILING) > 0 and counts["retried"] > 0, counts
    clean = zarr.open_group(store=open_store(f"{bucket}/clean.out.zarr", read_only=True), mode="r")
    group = zarr.open_group(store=open_store(f"{bucket}/faulty.out.zarr", read_only=True), mode="r")
    names = [name for name, _ in clean.arrays()] + [f"metrics/{name}" for name, _ in clean["metrics"].arrays()]
    assert "restored" in names and "metrics/psnr" in names
    for name in names:
        if name != "metrics/seconds":  # wall time, the one thing that differs
            assert np.array_equal(np.asarray(group[name][...]), np.asarray(clean[name][...]), equal_nan=True), name
