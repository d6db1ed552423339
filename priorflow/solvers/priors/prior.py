"""A pretrained unconditional diffusion prior: an epsilon network, its DDPM schedule and, for a latent prior,
the autoencoder whose latents it models. The contract every solver works through: `denoise(x_t, t)` in the prior's
own space, its `schedule`, and `decode` from that space to images (loading.py reads priors from disk)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from priorflow.solvers.priors.autoencoder import Autoencoder
from priorflow.solvers.priors.diffusion import NoiseSchedule, predict_eps, predict_x0


@dataclass(frozen=True, eq=False)
class DiffusionPrior:
    """An epsilon-prediction network over its own space, of shape `space_shape`, plus the map to images.

    A pixel prior's space is the images themselves, in [-1, 1]. A latent prior's space is the scaled latents of
    its `autoencoder`, and `decode` turns them into images. A pixel prior may also carry an autoencoder for MPGD's
    projections (`latent` False). A network with learned variance (2C output channels) contributes its first C
    channels as epsilon.

    Frozen, and priorflow never moves or changes a loaded network: one prior is shared by every solve of a process
    (priorflow.solvers.priors.loading.PriorCache). It lives on the device it was loaded on.
    """

    network: nn.Module
    schedule: NoiseSchedule
    space_shape: tuple[int, int, int]
    identity: dict[str, Any] = field(default_factory=dict)
    autoencoder: Autoencoder | None = None
    latent: bool = False

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the images this prior restores."""
        if self.latent:
            assert self.autoencoder is not None
            return self.autoencoder.image_shape(self.space_shape)
        return self.space_shape

    @property
    def channels(self) -> int:
        return self.image_shape[0]

    @property
    def image_size(self) -> int:
        return self.image_shape[-1]

    @property
    def kind(self) -> str:
        return "latent" if self.latent else "pixel"

    def eps(self, x_t: Tensor, t: int) -> Tensor:
        timesteps = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
        out = self.network(x_t, timesteps)
        out = getattr(out, "sample", out)
        return out[:, : self.space_shape[0]].to(x_t.dtype)  # under autocast: the schedule arithmetic stays in x_t's format

    def denoise(self, x_t: Tensor, t: int) -> tuple[Tensor, Tensor]:
        """(x0, eps) at timestep t. In pixel space x0 is clamped to [-1, 1] and eps re-derived from it, as
        DMPlug/MPGD/DPS do; latents have no fixed range and are left as they are (as LDM samplers do)."""
        alpha_bar = self.schedule.alpha_bar(t)
        x0 = predict_x0(x_t, self.eps(x_t, t), alpha_bar)
        if self.latent:
            return x0, predict_eps(x_t, x0, alpha_bar)
        x0 = x0.clamp(-1.0, 1.0)
        return x0, predict_eps(x_t, x0, alpha_bar)

    def decode(self, x: Tensor) -> Tensor:
        """A point of the prior's space as an image in [-1, 1] (clamped): the identity for pixel priors."""
        if not self.latent:
            return x
        assert self.autoencoder is not None
        return self.autoencoder.decode(x).clamp(-1.0, 1.0)
