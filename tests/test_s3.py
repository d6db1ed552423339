"""The restore flow against a real S3 server (Ceph radosgw on 127.0.0.1), and what users see when S3 is wrong."""

import numpy as np
import pytest
import s3fs
import zarr

from priorflow.config import validate_config
from priorflow.datasets import write_digits_array
from priorflow.errors import PriorflowError
from priorflow.flows.restore import run_restore
from priorflow.storage.inputs import open_input
from priorflow.storage.outputs import OutputGroup
from priorflow.storage.urls import open_store

pytestmark = pytest.mark.pipeline


@pytest.fixture(scope="module")
def bucket(local_s3):
    fs = s3fs.S3FileSystem()
    fs.mkdir("priorflow-test")
    return "s3://priorflow-test"


def test_restore_flow_on_s3(bucket, prefect_server):
    config = validate_config({
        "input": write_digits_array(f"{bucket}/digits.zarr", "test", 10),
        "output": f"{bucket}/restored.zarr",
        "mode": "benchmark",
        "operator": {"name": "inpainting", "params": {"fraction": 0.7}},
        "noise": {"name": "gaussian", "params": {"sigma": 0.05}},
        "solver": {"name": "mpgd", "steps": 50, "scale": 4.0},
        "shard_size": 4,
    })
    summary = run_restore(config)["summary"]
    assert summary["shards_done"] == 3 and summary["psnr"]["count"] == 10
    # read back with plain zarr + s3fs, as a user would
    group = zarr.open_group(store=open_store(config.output, read_only=True), mode="r")
    restored = np.asarray(group["restored"][:])
    truth = np.asarray(group["ground_truth"][:])
    assert restored.shape == (10, 1, 16, 16) and np.isfinite(restored).all()
    assert np.mean((restored - truth) ** 2) < np.mean((np.asarray(group["measurement"][:]) - truth) ** 2) / 4
    assert group.attrs["priorflow_summary"]["samples"] == 10
    fs = s3fs.S3FileSystem()
    assert fs.exists("priorflow-test/restored.summary.json") and not fs.exists("priorflow-test/restored.zarr/summary.json")
    chunks = fs.ls("priorflow-test/restored.zarr/restored/c")
    assert len(chunks) == 3  # one object per shard
    assert OutputGroup.open(config.output).done().all()

    # two new images arrive in the S3 input: the next run restores them alone, in the half-full last shard
    from priorflow.datasets import load_digits

    zarr.open_array(store=open_store(config.input), mode="r+").append(load_digits("test", 16)[0][10:12].numpy())
    grown = run_restore(config)
    assert [(r["shard"], r["samples"]) for r in grown["shards"]] == [(2, 2)]
    group = zarr.open_group(store=open_store(config.output, read_only=True), mode="r")
    assert np.array_equal(np.asarray(group["restored"][:10]), restored) and group["restored"].shape[0] == 12
    assert grown["summary"]["samples_done"] == 12 and np.isfinite(np.asarray(group["metrics/psnr"][:])).all()


def test_s3_errors_are_clear(bucket, monkeypatch):
    with pytest.raises(PriorflowError, match="no Zarr array"):
        open_input(f"{bucket}/missing.zarr", 1)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    s3fs.S3FileSystem.clear_instance_cache()
    with pytest.raises(PriorflowError, match="access denied|credentials"):
        open_input(f"{bucket}/digits.zarr", 1)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    s3fs.S3FileSystem.clear_instance_cache()
    with pytest.raises(PriorflowError, match="unreachable"):
        open_input(f"{bucket}/digits.zarr", 1)
    s3fs.S3FileSystem.clear_instance_cache()


def test_missing_credentials_are_named(bucket, monkeypatch, tmp_path):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask a metadata service off this machine
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        with pytest.raises(PriorflowError, match="no S3 credentials"):
            open_input(f"{bucket}/digits.zarr", 1)
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
