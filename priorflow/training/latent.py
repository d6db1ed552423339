"""Latent diffusion training pieces: the frozen autoencoder whose scaled latents the prior models, and the export
of a diffusers-style latent pipeline folder (unet/, vae/ or vqvae/, scheduler/, priorflow.json).

The autoencoder is read here with diffusers directly, not through the solvers' loader, so that training depends on
nothing but the folder format.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from priorflow.errors import PriorflowError
from priorflow.solvers.priors.files import METADATA_FILE, WEIGHTS_FILE

AUTOENCODER_CLASSES = {"AutoencoderKL": "vae", "VQModel": "vqvae"}
AUTOENCODER_FILES = ("config.json", WEIGHTS_FILE, METADATA_FILE)
SCHEDULE = {"beta_start": 1e-4, "beta_end": 0.02, "num_train_timesteps": 1000}


def encoder_for(model: torch.nn.Module, scaling_factor: float) -> Callable[[Tensor], Tensor]:
    """images in [-1, 1] -> scaled latents, deterministic: the KL posterior mean, or VQ's latent before quantising
    (what the solvers' autoencoder returns, so the prior learns exactly the space they work in)."""

    @torch.no_grad()
    def encode(images: Tensor) -> Tensor:
        encoded = model.encode(images)
        latent = encoded.latents if hasattr(encoded, "latents") else encoded.latent_dist.mean
        return latent * scaling_factor

    return encode


def load_frozen_autoencoder(folder: Path) -> tuple[torch.nn.Module, float]:
    """The autoencoder of a train-autoencoder folder, frozen, with the scaling factor its config.json states."""
    from diffusers import AutoencoderKL, VQModel
    from safetensors.torch import load_file

    config_path = folder / "config.json"
    if not config_path.is_file():
        raise PriorflowError(f"no autoencoder at {folder}: {config_path.name} is missing (see train-autoencoder)")
    config = json.loads(config_path.read_text())
    name = config.get("_class_name")
    if name not in AUTOENCODER_CLASSES:
        raise PriorflowError(f"{config_path}: _class_name {name!r} is not one of {', '.join(AUTOENCODER_CLASSES)}")
    if not config.get("scaling_factor"):
        raise PriorflowError(f"{config_path} states no scaling_factor; a latent prior needs the autoencoder's own")
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise PriorflowError(f"{weights} is missing (safetensors weights only)")
    model = (AutoencoderKL if name == "AutoencoderKL" else VQModel).from_config(config)
    model.load_state_dict(load_file(weights), strict=True)
    return model.eval().requires_grad_(False), float(config["scaling_factor"])


def export_latent_prior(
    network: torch.nn.Module, autoencoder: Path, folder: Path, metadata: dict[str, Any]
) -> Path:
    """Write folder/unet (the UNet2DModel), folder/vae or vqvae (a copy of the autoencoder's files),
    folder/scheduler (a DDPMScheduler config of the training schedule) and folder/priorflow.json."""
    from diffusers import DDPMScheduler
    from safetensors.torch import save_file

    kind = AUTOENCODER_CLASSES[json.loads((autoencoder / "config.json").read_text())["_class_name"]]
    folder.mkdir(parents=True, exist_ok=True)
    unet = folder / "unet"
    unet.mkdir(exist_ok=True)
    network.save_config(unet)
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, unet / WEIGHTS_FILE)
    for stale in AUTOENCODER_CLASSES.values():
        shutil.rmtree(folder / stale, ignore_errors=True)
    (folder / kind).mkdir()
    for name in AUTOENCODER_FILES:
        if (autoencoder / name).is_file():
            shutil.copy2(autoencoder / name, folder / kind / name)
    DDPMScheduler(beta_schedule="linear", prediction_type="epsilon", clip_sample=False, **SCHEDULE).save_pretrained(
        folder / "scheduler"
    )
    (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=1) + "\n")
    return folder
