"""A pretrained unconditional diffusion prior: an epsilon network plus its DDPM schedule.

Priors are diffusers `UNet2DModel` folders (config.json + diffusion_pytorch_model.safetensors), optionally
inside a diffusers pipeline folder (unet/ + scheduler/). Weights are read with safetensors only: a checkpoint
is never unpickled.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from priorflow.errors import PriorLoadError
from priorflow.solvers.device import resolve_device
from priorflow.solvers.diffusion import NoiseSchedule, predict_eps, predict_x0

WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
CONFIG_FILE = "config.json"
METADATA_FILE = "priorflow.json"


@dataclass
class DiffusionPrior:
    """Epsilon-prediction network over images in [-1, 1] of shape (channels, size, size).

    A network with learned variance (2C output channels) contributes its first C channels as epsilon.
    """

    network: nn.Module
    schedule: NoiseSchedule
    channels: int
    image_size: int
    identity: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    def to(self, device: torch.device | str) -> DiffusionPrior:
        self.network.to(device)
        return self

    def eps(self, x_t: Tensor, t: int) -> Tensor:
        timesteps = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
        out = self.network(x_t, timesteps)
        out = getattr(out, "sample", out)
        return out[:, : self.channels]

    def denoise(self, x_t: Tensor, t: int) -> tuple[Tensor, Tensor]:
        """(x0, eps) at timestep t with x0 clamped to [-1, 1] and eps re-derived from it, as DMPlug/MPGD/DPS do."""
        alpha_bar = self.schedule.alpha_bar(t)
        x0 = predict_x0(x_t, self.eps(x_t, t), alpha_bar).clamp(-1.0, 1.0)
        return x0, predict_eps(x_t, x0, alpha_bar)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _unet_folder(path: Path) -> Path:
    if (path / CONFIG_FILE).is_file():
        return path
    if (path / "unet" / CONFIG_FILE).is_file():
        return path / "unet"
    raise PriorLoadError(
        f"no diffusion prior at {path}: expected a diffusers UNet2DModel folder with {CONFIG_FILE} and "
        f"{WEIGHTS_FILE} (or a pipeline folder with unet/ inside)"
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PriorLoadError(f"cannot read {path}: {exc}") from exc


def _schedule(root: Path) -> NoiseSchedule:
    """The training schedule: the pipeline's scheduler config if there is one, else linear 1e-4..0.02 over 1000."""
    config_path = root / "scheduler" / "scheduler_config.json"
    if not config_path.is_file():
        return NoiseSchedule.linear()
    from diffusers import DDPMScheduler

    config = _read_json(config_path)
    if config.get("prediction_type", "epsilon") != "epsilon":
        raise PriorLoadError(f"{config_path}: only epsilon-prediction priors are supported, got {config['prediction_type']!r}")
    try:
        scheduler = DDPMScheduler.from_config(config)
    except (ValueError, NotImplementedError) as exc:
        raise PriorLoadError(f"{config_path}: {exc}") from exc
    return NoiseSchedule.from_alphas_cumprod(scheduler.alphas_cumprod, config.get("beta_schedule", "linear"))


def load_prior(path: str | Path, device: torch.device | str = "auto") -> DiffusionPrior:
    """Load a diffusers UNet2DModel folder as a prior, in eval mode with frozen weights, on `device` (auto: CUDA if any)."""
    from diffusers.models.unets.unet_2d import UNet2DModel
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    root = Path(path)
    if not root.is_dir():
        raise PriorLoadError(f"prior folder {root} does not exist")
    folder = _unet_folder(root)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise PriorLoadError(f"{weights} is missing (priorflow reads safetensors weights only, never pickles)")
    config = _read_json(folder / CONFIG_FILE)
    try:
        network = UNet2DModel.from_config(config)
    except (TypeError, ValueError) as exc:
        raise PriorLoadError(f"{folder / CONFIG_FILE} is not a UNet2DModel config: {exc}") from exc
    try:
        state = load_file(weights)
        network.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise PriorLoadError(f"{weights} is corrupt or does not match {CONFIG_FILE}: {exc}") from exc

    channels = int(config["in_channels"])
    if int(config["out_channels"]) not in (channels, 2 * channels):
        raise PriorLoadError(f"{folder}: out_channels must be in_channels or twice it (learned variance)")
    metadata = _read_json(root / METADATA_FILE) if (root / METADATA_FILE).is_file() else {}
    network.eval().requires_grad_(False).to(resolve_device(device))
    identity = {
        "path": str(root.resolve()),
        "name": metadata.get("name", root.name),
        "sha256": sha256_file(weights),
        "metadata": metadata,
    }
    sample_size = config["sample_size"]
    size = sample_size if isinstance(sample_size, int) else sample_size[0]
    return DiffusionPrior(network, _schedule(root), channels, int(size), identity)
