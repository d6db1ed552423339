"""Train a small epsilon-prediction DDPM (diffusers UNet2DModel) with EMA weights and resumable checkpoints.

The result is a prior folder that `load_prior` reads: config.json, safetensors EMA weights, and priorflow.json
metadata recording the data, its split and the command that reproduces it. With an autoencoder the DDPM models its
scaled latents instead of pixels, and the export is a latent pipeline folder (see latent.py).
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

import priorflow
from priorflow.solvers.priors.diffusion import NoiseSchedule
from priorflow.solvers.priors.files import METADATA_FILE, WEIGHTS_FILE, sha256_file
from priorflow.training.augment import Augmentation, upsample
from priorflow.training.common import CHECKPOINT_FILE, Loop, data_metadata, fit, training_images
from priorflow.training.latent import SCHEDULE, encoder_for, export_latent_prior, load_frozen_autoencoder

__all__ = ["CHECKPOINT_FILE", "TrainConfig", "build_unet", "export_prior", "train_prior"]
PIXEL_CHANNELS, LATENT_CHANNELS = (32, 64, 64), (32, 64)


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
    block_out_channels: tuple[int, ...] = Field(
        PIXEL_CHANNELS, description=f"default {PIXEL_CHANNELS} for pixels, {LATENT_CHANNELS} for latents (8x8 or so)"
    )
    layers_per_block: int = Field(1, ge=1)
    seed: int = 0
    augment: Augmentation = Field(Augmentation(), description="random affine transforms of each training batch")
    autoencoder: str | None = Field(None, description="autoencoder folder: train on its scaled latents")

    @model_validator(mode="before")
    @classmethod
    def _latent_default_channels(cls, values: Any) -> Any:
        """A latent prior's 8x8 inputs take fewer levels than 16x16 pixels: its own default width."""
        if isinstance(values, dict) and values.get("autoencoder") and values.get("block_out_channels") is None:
            return values | {"block_out_channels": LATENT_CHANNELS}
        return values


def build_unet(config: TrainConfig, channels: int, size: int | None = None) -> torch.nn.Module:
    from diffusers.models.unets.unet_2d import UNet2DModel

    levels = len(config.block_out_channels)
    return UNet2DModel(
        sample_size=size or config.image_size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=config.block_out_channels,
        layers_per_block=config.layers_per_block,
        down_block_types=("DownBlock2D",) * levels,
        up_block_types=("UpBlock2D",) * levels,
        norm_num_groups=8,
    )


def _batches(config: TrainConfig, images: Tensor) -> tuple[Callable[[torch.Generator], Tensor], str | None]:
    """Draws a training batch in the model's space (pixels in [-1, 1], or scaled latents), and the autoencoder's
    weights digest. Augmentation moves the images before they are encoded; unaugmented latents are encoded once."""
    if config.autoencoder is None:
        encode, digest = None, None
    else:
        folder = Path(config.autoencoder)
        model, scaling_factor = load_frozen_autoencoder(folder)
        encode, digest = encoder_for(model, scaling_factor), sha256_file(folder / WEIGHTS_FILE)
    pool = images
    if encode is not None and not config.augment.active:
        pool = torch.cat([encode(upsample(b, config.image_size).mul(2.0).sub(1.0)) for b in images.split(256)])

    def draw(generator: torch.Generator) -> Tensor:
        batch = pool[torch.randint(0, pool.shape[0], (config.batch_size,), generator=generator)]
        if pool is not images:
            return batch
        batch = config.augment(batch, generator, config.image_size).mul(2.0).sub(1.0)
        return batch if encode is None else encode(batch)

    return draw, digest


def train_prior(
    config: TrainConfig,
    out: Path,
    *,
    name: str = "prior",
    checkpoint_every: int = 250,
    on_step: Callable[[int, float], None] | None = None,
) -> Path:
    """Train (resuming from out/checkpoint.pt when present) and export the EMA weights to out/prior."""
    images = training_images(config.data, config.image_size)
    draw, autoencoder_sha = _batches(config, images)
    out.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(config.seed)
    shape = draw(torch.Generator().manual_seed(0)).shape[1:]  # a separate generator: the seeded stream is untouched
    torch.manual_seed(config.seed)
    model = build_unet(config, shape[0], shape[-1])
    ema = build_unet(config, shape[0], shape[-1]).requires_grad_(False)
    ema.load_state_dict(model.state_dict())
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    alphas_cumprod = torch.tensor(NoiseSchedule.linear().alphas_cumprod, dtype=torch.float32)
    identity = config.model_dump(mode="json") | ({"autoencoder_sha256": autoencoder_sha} if autoencoder_sha else {})

    def losses(generator: torch.Generator) -> dict[str, Tensor]:
        """The epsilon-prediction loss of a batch noised at random timesteps."""
        batch = draw(generator)
        t = torch.randint(0, alphas_cumprod.numel(), (config.batch_size,), generator=generator)
        noise = torch.randn(batch.shape, generator=generator)
        abar = alphas_cumprod[t].view(-1, 1, 1, 1)
        noisy = abar.sqrt() * batch + (1 - abar).sqrt() * noise
        return {"loss": F.mse_loss(model(noisy, t).sample, noise)}

    loop = Loop(out, identity, config.steps, config.lr, config.warmup_steps, config.ema_decay, checkpoint_every)
    averages = fit(loop, model, ema, optimizer, generator, losses, on_step)
    return export_prior(ema, config, out / "prior", name=name, final_loss=averages.get("loss"))


def _reproduce(config: TrainConfig, name: str) -> str:
    command = (
        f"priorflow train --data {config.data} --image-size {config.image_size} --steps {config.steps} "
        f"--batch-size {config.batch_size} --seed {config.seed} --name {name} --out OUT"
    )
    if config.block_out_channels != (LATENT_CHANNELS if config.autoencoder else PIXEL_CHANNELS):
        command += f" --block-out-channels {','.join(map(str, config.block_out_channels))}"
    if config.augment.active:
        command += f" --augment {config.augment.spec()}"
    return command + (" --autoencoder AE_FOLDER" if config.autoencoder else "")


def export_prior(network: torch.nn.Module, config: TrainConfig, folder: Path, *, name: str, final_loss: float | None) -> Path:
    """Write the prior folder: config.json, safetensors weights and priorflow.json metadata (for a latent prior,
    the pipeline folder of latent.py)."""
    from safetensors.torch import save_file

    metadata: dict[str, Any] = {
        "name": name,
        "format": "diffusers UNet2DModel, epsilon prediction, images scaled from [0, 1] to [-1, 1]",
        "schedule": {"kind": "linear"} | SCHEDULE,
        "training": config.model_dump(mode="json", exclude={"autoencoder"}) | {"final_loss_ema": final_loss},
        "data": data_metadata(config.data),
        "reproduce": _reproduce(config, name),
        "versions": {"priorflow": priorflow.__version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    if config.autoencoder is not None:
        autoencoder = Path(config.autoencoder)
        ae_metadata_path = autoencoder / METADATA_FILE
        ae_metadata = json.loads(ae_metadata_path.read_text()) if ae_metadata_path.is_file() else {}
        metadata["format"] = ("latent diffusion: diffusers UNet2DModel over the autoencoder's latents times its "
                              "scaling_factor, epsilon prediction; images scaled from [0, 1] to [-1, 1]")
        metadata["autoencoder"] = {
            "name": ae_metadata.get("name"),
            "sha256": sha256_file(autoencoder / WEIGHTS_FILE),
            "reproduce": ae_metadata.get("reproduce", f"(trained outside priorflow: {autoencoder})"),
        }
        return export_latent_prior(network, autoencoder, folder, metadata)
    folder.mkdir(parents=True, exist_ok=True)
    network.save_config(folder)
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, folder / WEIGHTS_FILE)
    (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=1) + "\n")
    return folder
