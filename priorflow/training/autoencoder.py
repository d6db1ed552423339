"""Train a small diffusers autoencoder (AutoencoderKL or VQModel) whose latents a latent diffusion prior models.

The result is a diffusers model folder (config.json with an explicit scaling_factor, safetensors weights) plus
priorflow.json metadata. The scaling factor is 1/std of the training latents, as Stable Diffusion's 0.18215 was, so
the prior sees latents of unit scale whatever the autoencoder learnt.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

import priorflow
from priorflow.datasets import load_digits
from priorflow.solvers.priors.files import METADATA_FILE, WEIGHTS_FILE
from priorflow.training.augment import Augmentation, upsample
from priorflow.training.common import Loop, data_metadata, fit, training_images
from priorflow.training.latent import encoder_for


class AutoencoderConfig(BaseModel):
    """Everything that determines the trained weights (changing any of it on resume is refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["kl", "vq"] = Field("kl", description="AutoencoderKL or VQModel")
    data: str = Field("digits", description="'digits' (scikit-learn's, train split) or a .npy of images in [0, 1]")
    image_size: int = Field(16, ge=8)
    latent_channels: int = Field(2, ge=1)
    block_out_channels: tuple[int, ...] = Field((32, 32), description="one level per entry; each but the last halves")
    layers_per_block: int = Field(1, ge=1)
    num_vq_embeddings: int = Field(256, ge=2, description="codebook size (vq only)")
    steps: int = Field(3000, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(100, ge=0)
    loss: Literal["l1", "l2"] = "l1"
    kl_weight: float = Field(1e-4, ge=0, description="on the per-element KL, beside the per-pixel loss (kl only)")
    ema_decay: float = Field(0.999, ge=0, lt=1, description="0: export the raw weights")
    seed: int = 0
    augment: Augmentation = Field(Augmentation(), description="random affine transforms of each training batch")


def build_autoencoder(config: AutoencoderConfig, channels: int) -> torch.nn.Module:
    from diffusers import AutoencoderKL, VQModel

    levels = len(config.block_out_channels)
    common: dict[str, Any] = {
        "in_channels": channels,
        "out_channels": channels,
        "down_block_types": ("DownEncoderBlock2D",) * levels,
        "up_block_types": ("UpDecoderBlock2D",) * levels,
        "block_out_channels": config.block_out_channels,
        "layers_per_block": config.layers_per_block,
        "latent_channels": config.latent_channels,
        "norm_num_groups": 8,
        "sample_size": config.image_size,
    }
    if config.kind == "vq":
        return VQModel(**common, num_vq_embeddings=config.num_vq_embeddings, vq_embed_dim=config.latent_channels)
    return AutoencoderKL(**common, force_upcast=False)


def _losses(
    model: torch.nn.Module, config: AutoencoderConfig, batch: Tensor, generator: torch.Generator
) -> dict[str, Tensor]:
    """Reconstruction loss and its regulariser: the KL of the posterior (per latent element) or VQ's commitment."""
    if config.kind == "vq":
        out = model(batch)
        reconstruction, regulariser = out.sample, out.commit_loss.mean()
    else:
        posterior = model.encode(batch).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
        reconstruction = model.decode(z).sample
        regulariser = posterior.kl().mean() / posterior.mean[0].numel()
    error = F.l1_loss(reconstruction, batch) if config.loss == "l1" else F.mse_loss(reconstruction, batch)
    weight = 1.0 if config.kind == "vq" else config.kl_weight
    return {"loss": error + weight * regulariser, "reconstruction": error, "regulariser": regulariser}


def train_autoencoder(
    config: AutoencoderConfig,
    out: Path,
    *,
    name: str = "autoencoder",
    checkpoint_every: int = 250,
    on_step: Callable[[int, float], None] | None = None,
) -> Path:
    """Train (resuming from out/checkpoint.pt when present) and export the (EMA) weights to out/autoencoder."""
    images = training_images(config.data, config.image_size)
    out.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    model = build_autoencoder(config, images.shape[1])
    ema = build_autoencoder(config, images.shape[1]).requires_grad_(False)
    ema.load_state_dict(model.state_dict())
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)

    def losses(generator: torch.Generator) -> dict[str, Tensor]:
        batch = images[torch.randint(0, images.shape[0], (config.batch_size,), generator=generator)]
        return _losses(model, config, config.augment(batch, generator, config.image_size).mul(2.0).sub(1.0), generator)

    loop = Loop(out, config.model_dump(mode="json"), config.steps, config.lr, config.warmup_steps, config.ema_decay,
                checkpoint_every)
    averages = fit(loop, model, ema, optimizer, generator, losses, on_step)
    final = ema if config.ema_decay else model
    plain = upsample(images, config.image_size)
    return export_autoencoder(final.eval(), config, plain, out / "autoencoder", name=name, final_losses=averages)


@torch.no_grad()
def reconstruction_psnr(model: torch.nn.Module, images: Tensor) -> float:
    """Mean PSNR (dB, images in [0, 1]) of decode(encode(x)) through the deterministic latent: KL mean or VQ codes."""
    from priorflow.solvers.metrics import psnr

    latents = encoder_for(model, 1.0)(images.mul(2.0).sub(1.0))
    decoded = model.decode(latents).sample.add(1.0).div(2.0).clamp(0.0, 1.0)
    return float(psnr(decoded, images).mean())


def export_autoencoder(
    model: torch.nn.Module, config: AutoencoderConfig, images: Tensor, folder: Path, *, name: str,
    final_losses: dict[str, float],
) -> Path:
    """Write the diffusers folder with its scaling factor (1/std of the unaugmented training latents) and metadata."""
    from safetensors.torch import save_file

    with torch.no_grad():
        latents = torch.cat([encoder_for(model, 1.0)(b.mul(2.0).sub(1.0)) for b in images.split(256)])
    scaling_factor = float(1.0 / latents.std())
    model.register_to_config(scaling_factor=scaling_factor)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_config(folder)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / WEIGHTS_FILE)
    metadata: dict[str, Any] = {
        "name": name,
        "format": f"diffusers {type(model).__name__}, images scaled from [0, 1] to [-1, 1]; prior latents are "
                  + ("the KL posterior mean" if config.kind == "kl" else "the pre-quantisation latent")
                  + " times scaling_factor",
        "image_shape": list(images.shape[1:]),
        "latent_shape": list(latents.shape[1:]),
        "scaling_factor": scaling_factor,
        "latent_stats": {"mean": float(latents.mean()), "std": float(latents.std())},
        "training": config.model_dump(mode="json") | {"final_losses_ema": final_losses},
        "data": data_metadata(config.data),
        "reproduce": (
            f"priorflow train-autoencoder --kind {config.kind} --data {config.data} --image-size {config.image_size} "
            f"--latent-channels {config.latent_channels} "
            f"--block-out-channels {','.join(map(str, config.block_out_channels))} --steps {config.steps} "
            f"--batch-size {config.batch_size} --lr {config.lr:g} --loss {config.loss} "
            + (f"--kl-weight {config.kl_weight:g} " if config.kind == "kl" else "")
            + f"--seed {config.seed} --name {name} --out OUT"
            + (f" --augment {config.augment.spec()}" if config.augment.active else "")
        ),
        "versions": {"priorflow": priorflow.__version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    if config.data == "digits":
        test, _ = load_digits("test", config.image_size)
        perturbed, _ = load_digits("test", config.image_size, perturbed=True)
        metadata["held_out_psnr"] = {"test": reconstruction_psnr(model, test),
                                     "test_perturbed": reconstruction_psnr(model, perturbed)}
    (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=1) + "\n")
    return folder
