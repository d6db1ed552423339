"""Shared fixtures: a tiny random-weight prior for wiring tests, the bundled trained prior for quality tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from priorflow.bundled import BUNDLED_PRIORS
from priorflow.solvers import DiffusionPrior, load_prior
from priorflow.solvers.prior import WEIGHTS_FILE

torch.set_num_threads(1)

BUNDLED_PRIOR = BUNDLED_PRIORS["digits16"]


def make_unet_folder(folder: Path, channels: int = 1, size: int = 8, out_channels: int | None = None) -> Path:
    """A random-weight diffusers UNet2DModel saved as a prior folder (config.json + safetensors)."""
    from diffusers.models.unets.unet_2d import UNet2DModel
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = UNet2DModel(
        sample_size=size,
        in_channels=channels,
        out_channels=out_channels or channels,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )
    folder.mkdir(parents=True, exist_ok=True)
    net.save_config(folder)
    save_file(net.state_dict(), folder / WEIGHTS_FILE)
    return folder


@pytest.fixture(scope="session")
def tiny_prior_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_unet_folder(tmp_path_factory.mktemp("tiny_prior"))


@pytest.fixture(scope="session")
def tiny_prior(tiny_prior_path: Path) -> DiffusionPrior:
    return load_prior(tiny_prior_path)


@pytest.fixture(scope="session")
def digits_prior() -> DiffusionPrior:
    return load_prior(BUNDLED_PRIOR)


def run_fields(input: str, output: str, **overrides) -> dict:
    """The fields of a small benchmark-mode run from `input` (clean digits) to `output`: SR x4 with noise, a fast
    MPGD, shards of 5 on two local workers; `overrides` replace fields."""
    return {
        "input": input,
        "output": output,
        "mode": "benchmark",
        "operator": {"name": "super_resolution", "params": {"factor": 4}},
        "noise": {"name": "gaussian", "params": {"sigma": 0.05}},
        "solver": {"name": "mpgd", "steps": 50, "scale": 4.0},
        "shard_size": 5,
        "seed": 7,
        "cluster": {"workers": 2},
    } | overrides


def digits_run(folder: Path, count: int = 12, **overrides) -> dict:
    """run_fields with `count` held-out digits written to FOLDER/in.zarr and the output FOLDER/out.zarr."""
    from priorflow.datasets import write_digits_array

    return run_fields(write_digits_array(str(folder / "in.zarr"), "test", count), str(folder / "out.zarr")) | overrides


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def prefect_server():
    """One Prefect test server for the whole session (starting one costs ~10 s)."""
    import os

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def prefect_api_url(prefect_server) -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def local_s3(tmp_path_factory: pytest.TempPathFactory):
    """A real S3 server (Ceph radosgw, scripts/local-s3.sh) for the session; its credentials in the environment."""
    import os
    import shutil
    import socket
    import subprocess

    if shutil.which("radosgw") is None:
        if os.environ.get("PRIORFLOW_REQUIRE_S3"):
            pytest.fail("radosgw is not installed: run scripts/local-s3.sh install (make test does)")
        pytest.skip("radosgw is not installed (scripts/local-s3.sh install)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = tmp_path_factory.mktemp("ceph")
    script = Path(__file__).resolve().parents[1] / "scripts" / "local-s3.sh"
    started = subprocess.run(["bash", str(script), "start", str(folder), str(port)], capture_output=True, text=True, timeout=300)
    if started.returncode != 0:
        pytest.fail(f"local S3 did not start: {started.stderr[-2000:]}")
    env = dict(line.removeprefix("export ").split("=", 1) for line in started.stdout.split("\n") if line.startswith("export "))
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        subprocess.run(["bash", str(script), "stop", str(folder)], timeout=60)
        # s3fs's aiohttp sessions are only reclaimed at interpreter exit, after their loop is gone: not an error
        import logging

        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
