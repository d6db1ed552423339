"""Autoencoders for latent priors and for MPGD's projections: diffusers `VQModel` and `AutoencoderKL` folders.

diffusers applies the latent scaling factor in its pipelines, not in the models; priorflow applies it here, once,
so that a latent is always `(encode(x) - shift) * scaling_factor` and solvers never see the unscaled space.
The factor is read from the folder's config.json only when the file states it: the CompVis LDM VQ folders omit it,
and diffusers' class default (0.18215, Stable Diffusion's KL value) then decodes wrong images (diffusers #6725).
A VQ folder without it gets 1.0 (CompVis LDMs do not scale VQ latents); a KL folder without it gets 0.18215.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from priorflow.errors import PriorLoadError
from priorflow.solvers.device import resolve_device
from priorflow.solvers.priors.files import CONFIG_FILE, WEIGHTS_FILE, sha256_file

AutoencoderKind = Literal["vq", "kl"]
CLASSES: dict[str, AutoencoderKind] = {"VQModel": "vq", "AutoencoderKL": "kl"}
DEFAULT_SCALING = {"vq": 1.0, "kl": 0.18215}


@dataclass
class Autoencoder:
    """Encode images in [-1, 1] to scaled latents and decode them back; both differentiable.

    VQ: `encode` returns the latent before quantisation and `decode` quantises with a straight-through gradient
    (diffusers' `VQModel.decode`), so decode(encode(x)) is the CompVis first stage MPGD projects through.
    KL: `encode` returns the mean of the posterior (deterministic, as MPGD-Z needs a function of x0).
    """

    model: nn.Module
    kind: AutoencoderKind
    scaling_factor: float
    shift_factor: float
    factor: int
    image_channels: int
    latent_channels: int
    identity: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def latent_shape(self, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """The latent shape of images of `image_shape`, or a ShapeError-like PriorLoadError if they do not fit."""
        channels, height, width = image_shape
        if channels != self.image_channels or height % self.factor or width % self.factor:
            raise PriorLoadError(
                f"autoencoder {self.identity.get('name', '')!r} takes images with {self.image_channels} channel(s) and "
                f"sides divisible by {self.factor}; the prior's images are {channels}x{height}x{width}"
            )
        return (self.latent_channels, height // self.factor, width // self.factor)

    def image_shape(self, latent_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        return (self.image_channels, latent_shape[1] * self.factor, latent_shape[2] * self.factor)

    def encode(self, x: Tensor) -> Tensor:
        encoded = self.model.encode(x)
        latent = encoded.latents if self.kind == "vq" else encoded.latent_dist.mean
        return (latent - self.shift_factor) * self.scaling_factor

    def decode(self, z: Tensor) -> Tensor:
        return self.model.decode(z / self.scaling_factor + self.shift_factor).sample


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PriorLoadError(f"no autoencoder at {folder}: cannot read {path.name} ({exc})") from exc


def load_autoencoder(path: str | Path, device: torch.device | str = "auto", scaling_factor: float | None = None) -> Autoencoder:
    """A VQModel or AutoencoderKL folder (config.json + safetensors weights), frozen, on `device`.
    `scaling_factor` overrides the folder's (see the module docstring for how a missing one is chosen)."""
    from diffusers import AutoencoderKL, VQModel
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(path)
    config = _read_config(folder)
    kind = CLASSES.get(config.get("_class_name", ""))
    if kind is None:
        raise PriorLoadError(
            f"{folder / 'config.json'}: _class_name {config.get('_class_name')!r} is not an autoencoder priorflow "
            f"reads; expected one of {', '.join(CLASSES)}"
        )
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise PriorLoadError(f"{weights} is missing (priorflow reads safetensors weights only, never pickles)")
    try:
        model = (VQModel if kind == "vq" else AutoencoderKL).from_config(config)
        model.load_state_dict(load_file(weights), strict=True)
    except (TypeError, ValueError, SafetensorError, RuntimeError, OSError) as exc:
        raise PriorLoadError(f"{weights} is corrupt or does not match its config.json: {exc}") from exc
    if scaling_factor is not None and not scaling_factor > 0:
        raise PriorLoadError(f"scaling_factor must be positive, got {scaling_factor}")
    stated = config.get("scaling_factor")
    scale = scaling_factor or stated or DEFAULT_SCALING[kind]
    model.eval().requires_grad_(False).to(resolve_device(device))
    identity = {
        "path": str(folder.resolve()),
        "name": folder.parent.name if folder.name in ("vae", "vqvae") else folder.name,
        "kind": kind,
        "sha256": sha256_file(weights),
        "scaling_factor": scale,
        "scaling_factor_from": "override" if scaling_factor else "config.json" if stated else f"{kind} default",
    }
    return Autoencoder(
        model, kind, float(scale), float(config.get("shift_factor") or 0.0), 2 ** (len(config["block_out_channels"]) - 1),
        int(config["in_channels"]), int(config.get("vq_embed_dim") or config["latent_channels"]), identity,
    )
