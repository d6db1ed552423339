"""Shared fixtures: a tiny random-weight prior for wiring tests, the bundled trained prior for quality tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from priorflow.solvers import DiffusionPrior, load_prior
from priorflow.solvers.prior import WEIGHTS_FILE

torch.set_num_threads(1)

BUNDLED_PRIOR = Path(__file__).resolve().parents[1] / "priorflow" / "assets" / "priors" / "digits16"


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


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())
