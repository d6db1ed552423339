"""DDPM noise schedule and the DDIM update as small pure functions.

Every solver in priorflow moves through the same three formulas, so they live here once:
x0 from epsilon, epsilon re-derived from a (clamped) x0, and the DDIM step with eta.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class NoiseSchedule:
    """Cumulative signal levels alpha_bar_t of a discrete DDPM, t = 0 .. T-1."""

    alphas_cumprod: tuple[float, ...]
    kind: str = "linear"

    @classmethod
    def linear(cls, beta_start: float = 1e-4, beta_end: float = 0.02, num_steps: int = 1000) -> NoiseSchedule:
        betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
        return cls(tuple(torch.cumprod(1.0 - betas, 0).tolist()), "linear")

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod: Tensor, kind: str) -> NoiseSchedule:
        return cls(tuple(alphas_cumprod.double().tolist()), kind)

    @property
    def num_steps(self) -> int:
        return len(self.alphas_cumprod)

    def alpha_bar(self, t: int) -> float:
        """alpha_bar_t, with alpha_bar_{-1} = 1 (diffusers' set_alpha_to_one) so the last DDIM step lands on x0."""
        return 1.0 if t < 0 else self.alphas_cumprod[t]

    def ddim_timesteps(self, num_inference_steps: int) -> list[int]:
        """'Leading' spacing, as diffusers' DDIMScheduler and guided-diffusion's 'ddimN' respacing: 3 -> [666, 333, 0]."""
        if not 1 <= num_inference_steps <= self.num_steps:
            raise ValueError(f"steps must be between 1 and {self.num_steps}, got {num_inference_steps}")
        ratio = self.num_steps // num_inference_steps
        return [i * ratio for i in reversed(range(num_inference_steps))]


def predict_x0(x_t: Tensor, eps: Tensor, alpha_bar_t: float) -> Tensor:
    """Tweedie / DDIM estimate of the clean image from the noise prediction."""
    return (x_t - math.sqrt(1.0 - alpha_bar_t) * eps) / math.sqrt(alpha_bar_t)


def predict_eps(x_t: Tensor, x0: Tensor, alpha_bar_t: float) -> Tensor:
    """The noise consistent with x_t and a given x0 (used after clamping x0, as the official code does)."""
    return (x_t - math.sqrt(alpha_bar_t) * x0) / math.sqrt(1.0 - alpha_bar_t)


def ddim_sigma(alpha_bar_t: float, alpha_bar_prev: float, eta: float) -> float:
    """DDIM's per-step noise level; eta = 1 with all T steps is DDPM's ancestral sampler (fixed-small variance)."""
    return eta * math.sqrt((1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t)) * math.sqrt(1.0 - alpha_bar_t / alpha_bar_prev)


def ddim_step(x0: Tensor, eps: Tensor, alpha_bar_prev: float, sigma: float = 0.0, noise: Tensor | None = None) -> Tensor:
    """x_{t-1} = sqrt(ab_prev) x0 + sqrt(1 - ab_prev - sigma^2) eps + sigma z."""
    x_prev = math.sqrt(alpha_bar_prev) * x0 + math.sqrt(max(1.0 - alpha_bar_prev - sigma**2, 0.0)) * eps
    if sigma > 0.0:
        if noise is None:
            raise ValueError("ddim_step with sigma > 0 needs noise")
        x_prev = x_prev + sigma * noise
    return x_prev
