"""Train a small epsilon-prediction DDPM (diffusers UNet2DModel) with EMA weights and resumable checkpoints.

The result is a prior folder that `load_prior` reads: config.json, safetensors EMA weights, and priorflow.json
metadata recording the data, its split and the command that reproduces it.
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

import priorflow
from priorflow.datasets import digits_split_indices, load_digits, load_image_array
from priorflow.errors import PriorflowError
from priorflow.solvers.diffusion import NoiseSchedule
from priorflow.solvers.prior import METADATA_FILE, WEIGHTS_FILE

CHECKPOINT_FILE = "checkpoint.pt"


class TrainConfig(BaseModel):
    """Everything that determines the trained weights (changing any of it on resume is refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data: str = Field("digits", description="'digits' (scikit-learn's, train split) or a .npy of images in [0, 1]")
    image_size: int = Field(16, ge=8)
    steps: int = Field(4000, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(200, ge=0)
    ema_decay: float = Field(0.999, gt=0, lt=1)
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = Field(1, ge=1)
    seed: int = 0


def build_unet(config: TrainConfig, channels: int) -> torch.nn.Module:
    from diffusers.models.unets.unet_2d import UNet2DModel

    levels = len(config.block_out_channels)
    return UNet2DModel(
        sample_size=config.image_size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=config.block_out_channels,
        layers_per_block=config.layers_per_block,
        down_block_types=("DownBlock2D",) * levels,
        up_block_types=("UpBlock2D",) * levels,
        norm_num_groups=8,
    )


def _training_images(config: TrainConfig) -> Tensor:
    if config.data == "digits":
        images, _ = load_digits("train", config.image_size)
        return images
    path = Path(config.data)
    if not path.is_file():
        raise PriorflowError(f"training data {path} does not exist (use 'digits' or a .npy file)")
    images = load_image_array(path)
    if images.shape[-1] != config.image_size:
        raise PriorflowError(f"{path}: images are {images.shape[-1]} px, but image_size is {config.image_size}")
    return images


def _learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * (0.1 + 0.45 * (1.0 + math.cos(math.pi * progress)))


def _save_atomically(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train_prior(
    config: TrainConfig,
    out: Path,
    *,
    name: str = "prior",
    checkpoint_every: int = 250,
    on_step: Callable[[int, float], None] | None = None,
) -> Path:
    """Train (resuming from out/checkpoint.pt when present) and export the EMA weights to out/prior."""
    images = _training_images(config).mul(2.0).sub(1.0)
    out.mkdir(parents=True, exist_ok=True)
    channels = images.shape[1]
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    model = build_unet(config, channels)
    ema = build_unet(config, channels).requires_grad_(False)
    ema.load_state_dict(model.state_dict())
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    alphas_cumprod = torch.tensor(NoiseSchedule.linear().alphas_cumprod, dtype=torch.float32)
    step, loss_ema = 0, None

    checkpoint_path = out / CHECKPOINT_FILE
    if checkpoint_path.is_file():
        state = torch.load(checkpoint_path, weights_only=True)
        if state["config"] != config.model_dump(mode="json"):
            raise PriorflowError(f"{checkpoint_path} was made with another configuration; use a new --out folder")
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        step, loss_ema = state["step"], state["loss_ema"]

    model.train()
    while step < config.steps:
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(config, step)
        batch = images[torch.randint(0, images.shape[0], (config.batch_size,), generator=generator)]
        t = torch.randint(0, alphas_cumprod.numel(), (config.batch_size,), generator=generator)
        noise = torch.randn(batch.shape, generator=generator)
        abar = alphas_cumprod[t].view(-1, 1, 1, 1)
        noisy = abar.sqrt() * batch + (1 - abar).sqrt() * noise
        loss = F.mse_loss(model(noisy, t).sample, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        decay = min(config.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), model.parameters()):
                p_ema.lerp_(p, 1.0 - decay)
        step += 1
        loss_ema = loss.item() if loss_ema is None else 0.98 * loss_ema + 0.02 * loss.item()
        if on_step is not None:
            on_step(step, loss_ema)
        if step % checkpoint_every == 0 or step == config.steps:
            _save_atomically(
                {
                    "config": config.model_dump(mode="json"),
                    "model": model.state_dict(),
                    "ema": ema.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "generator": generator.get_state(),
                    "step": step,
                    "loss_ema": loss_ema,
                },
                checkpoint_path,
            )
    return export_prior(ema, config, out / "prior", name=name, final_loss=loss_ema)


def export_prior(network: torch.nn.Module, config: TrainConfig, folder: Path, *, name: str, final_loss: float | None) -> Path:
    """Write the prior folder: config.json, safetensors weights and priorflow.json metadata."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    network.save_config(folder)
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, folder / WEIGHTS_FILE)
    split = digits_split_indices() if config.data == "digits" else None
    metadata = {
        "name": name,
        "format": "diffusers UNet2DModel, epsilon prediction, images scaled from [0, 1] to [-1, 1]",
        "schedule": {"kind": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_train_timesteps": 1000},
        "training": config.model_dump(mode="json") | {"final_loss_ema": final_loss},
        "data": (
            {
                "source": "sklearn.datasets.load_digits (8x8, /16), bilinear upsampling",
                "split_seed": 0,
                "trained_on": "train",
                "held_out": {"test": split["test"], "val": split["val"]},
            }
            if split
            else {"source": config.data}
        ),
        "reproduce": (
            f"priorflow train --data {config.data} --image-size {config.image_size} --steps {config.steps} "
            f"--batch-size {config.batch_size} --seed {config.seed} --name {name} --out OUT"
        ),
        "versions": {"priorflow": priorflow.__version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=1) + "\n")
    return folder
