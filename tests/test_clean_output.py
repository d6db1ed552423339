"""What users read: an error priorflow understood is one line with a non-zero exit, never a traceback; outputs
open with xarray; `show` says what it was given."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import zarr
from conftest import digits_run
from typer.testing import CliRunner

from priorflow.cli import app
from priorflow.config import validate_config
from priorflow.errors import PriorflowError
from priorflow.flows.restore import run_restore
from priorflow.storage.outputs import RunConflict

pytestmark = pytest.mark.pipeline


def cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    return subprocess.run([sys.executable, "-m", "priorflow.cli", *args], env=environment, capture_output=True,
                          text=True, timeout=300)


def test_failing_commands_print_one_line_and_no_traceback(tmp_path):
    from priorflow.datasets import write_digits_array

    source = write_digits_array(str(tmp_path / "in.zarr"), "test", 4)
    zarr.open_group(str(tmp_path / "x.zarr"), mode="w").create_array("important", data=np.arange(10))
    common = ["--mode", "benchmark", "--operator", "super_resolution", "-o", "factor=4", "--solver", "mpgd"]
    runs = {
        "a Zarr group that priorflow did not write": cli("restore", source, str(tmp_path / "x.zarr"), *common),
        "the S3 endpoint is unreachable": cli("restore", "s3://nowhere/in.zarr", str(tmp_path / "o.zarr"), *common,
                                              AWS_ENDPOINT_URL="http://127.0.0.1:9", AWS_ACCESS_KEY_ID="x",
                                              AWS_SECRET_ACCESS_KEY="y"),
        "sigma must be non-negative": cli("restore", source, str(tmp_path / "o.zarr"), *common, "--noise", "gaussian",
                                          "-n", "sigma=-0.1"),
    }
    for message, run in runs.items():
        assert run.returncode == 2, run.stderr
        assert message in run.stderr.replace("\n", " ") and "Traceback" not in run.stderr, run.stderr
        assert "Exception ignored" not in run.stderr, run.stderr
    assert not (tmp_path / "o.zarr").exists()  # refused before anything was written


def test_a_shard_that_fails_in_a_worker_is_reported_without_traceback(tmp_path, prefect_server, capfd, monkeypatch):
    """Values past what is checked up front (here: only the first and last chunks) fail in the worker that reads
    them; the worker and the flow log one line each, and the run fails with the reason."""
    from priorflow.flows.console import quiet_console

    monkeypatch.setattr("priorflow.storage.inputs.SCAN_ELEMENTS", 0)
    config = validate_config(digits_run(tmp_path, count=12, cluster={"workers": 1}))
    array = zarr.open_array(config.input, mode="r+")
    images = np.asarray(array[:], dtype=np.float32) / 255
    images[7, 0, 3, 3] = np.nan
    zarr.create_array(str(tmp_path / "nan.zarr"), data=images, chunks=(5, 1, 16, 16))
    quiet_console()  # as the CLI does
    with pytest.raises(PriorflowError, match="NaN or infinite"):
        run_restore(config.model_copy(update={"input": str(tmp_path / "nan.zarr")}))
    logs = capfd.readouterr()
    assert "NaN or infinite values" in logs.err and "Traceback" not in logs.err + logs.out
    # the run wrote two of three shards; the corrected input is another configuration, whose results they are not
    with pytest.raises(RunConflict, match="another configuration"):
        run_restore(config)
    assert run_restore(config, overwrite=True)["summary"]["samples_done"] == 12


def test_outputs_open_with_xarray_and_hold_only_zarr(tmp_path, prefect_server, dask_address):
    import xarray as xr

    config = validate_config(digits_run(tmp_path, count=6, cluster={"address": dask_address}))
    run_restore(config)
    data = xr.open_zarr(config.output, consolidated=False)
    assert data["restored"].dims == ("sample", "channel", "y", "x")
    assert data["measurement"].dims == ("sample", "measurement_channel", "measurement_y", "measurement_x")
    assert data["trace"].dims[:2] == ("sample", "snapshot")
    groups = xr.open_groups(config.output, engine="zarr", consolidated=False)  # not open_datatree: see storage.ngff
    assert groups["/metrics"]["psnr"].dims == ("sample",) and np.isfinite(groups["/metrics"]["psnr"].values).all()
    inside = [p for p in (tmp_path / "out.zarr").rglob("*") if p.is_file()]
    assert all(p.name == "zarr.json" or "c" in p.relative_to(tmp_path / "out.zarr").parts for p in inside)
    assert {p.name for p in tmp_path.iterdir()} >= {"out.summary.json", "out.grid.png", "out.lease"}


def test_show_says_what_it_was_given(tmp_path):
    runner = CliRunner()
    zarr.create_array(str(tmp_path / "a.zarr"), data=np.zeros((2, 1, 4, 4), dtype="f4"))
    zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    assert "is a Zarr array, not a priorflow output group" in runner.invoke(app, ["show", str(tmp_path / "a.zarr")]).output
    assert "priorflow did not write" in runner.invoke(app, ["show", str(tmp_path / "g.zarr")]).output
