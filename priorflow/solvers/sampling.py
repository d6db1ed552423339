"""DDIM-type samplers: unconditional DDIM, DPS and MPGD share one reverse loop and differ in their guidance."""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor

from priorflow.solvers.base import OTHER_OPERATORS, Callback, Solver, SolverResult, randn, to_unit
from priorflow.solvers.diffusion import ddim_sigma, ddim_step
from priorflow.solvers.noise import sample_generators
from priorflow.solvers.prior import DiffusionPrior
from priorflow.solvers.problem import InverseProblem, Objective
from priorflow.solvers.stopping import STOP_COMPLETED


class ReverseSampler(Solver):
    """x_T ~ N(0, I), then `steps` DDIM steps with noise level eta; subclasses guide each step."""

    steps: int = Field(50, ge=1, le=1000, description="Reverse diffusion steps (network evaluations).")
    eta: float = Field(0.0, ge=0.0, le=1.0, description="DDIM noise level: 0 deterministic, 1 DDPM-like ancestral.")

    @property
    def last_step(self) -> int:
        return self.steps

    @abstractmethod
    def denoise_and_guide(
        self, prior: DiffusionPrior, x: Tensor, t: int, alpha_bar_prev: float, progress: float, objective: Objective | None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """(x0, eps, correction): the DDIM step goes from x0 and eps, then subtracts the correction of x_{t-1}."""

    def _solve(
        self,
        prior: DiffusionPrior,
        objective: Objective | None,
        problem: InverseProblem | Objective | None,
        seeds: list[int],
        callback: Callback | None,
    ) -> SolverResult:
        device = prior.device
        generators = sample_generators(seeds)
        index = torch.arange(len(seeds))
        x = randn(generators, prior.image_shape, device)
        timesteps = prior.schedule.ddim_timesteps(self.steps)
        recorder = self.recorder(len(seeds))
        latent = x
        for i, t in enumerate(timesteps):
            t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
            alpha_bar, alpha_bar_prev = prior.schedule.alpha_bar(t), prior.schedule.alpha_bar(t_prev)
            latent = x
            x0, eps, correction = self.denoise_and_guide(
                prior, x, t, alpha_bar_prev, (len(timesteps) - 1 - i) / len(timesteps), objective
            )
            sigma = ddim_sigma(alpha_bar, alpha_bar_prev, self.eta)
            noise = randn(generators, prior.image_shape, device) if sigma > 0 else None
            x = ddim_step(x0, eps, alpha_bar_prev, sigma, noise)
            if correction is not None:
                x = x - correction
            x = x.detach()
            recorder.step(index, nfe=1)
            recorder.snapshot(i + 1, x, index)
            if callback is not None:
                callback(i + 1, to_unit(x0).clamp(0, 1), index)
        n = len(seeds)
        return SolverResult(
            x=to_unit(x).clamp(0.0, 1.0),
            latent=latent.detach(),
            iterations=torch.full((n,), len(timesteps), dtype=torch.long),
            stop_reason=[STOP_COMPLETED] * n,
            seconds=recorder.seconds,
            nfe=recorder.nfe,
            trace=recorder.trace,
            trace_steps=recorder.trace_steps,
        )


class DDIM(ReverseSampler):
    """Unconditional DDIM sampling: the prior alone, a reference that ignores the measurements."""

    name: Literal["ddim"] = "ddim"
    needs_problem = False

    def denoise_and_guide(self, prior, x, t, alpha_bar_prev, progress, objective):  # type: ignore[override]
        with torch.no_grad():
            x0, eps = prior.denoise(x, t)
        return x0, eps, None


class DPS(ReverseSampler):
    """Diffusion posterior sampling (Chung et al. 2023): x_{t-1} -= scale * grad_{x_t} ||y - A(x0(x_t))||.

    The gradient goes through the network. steps=1000, eta=1 is the official DDPM ancestral sampler; fewer DDIM
    steps need a larger scale. The norm is taken per sample, so batch-mates do not change each other's step.
    Scales are for measurements on [0, 1]: the official scale on [-1, 1] corresponds to twice it here.
    The default scale 0.5 was the best of {0.25, 0.5, 1} on the validation digits for SR x4, 70 % inpainting and
    Gaussian deblurring alike (benchmarks/RESULTS.md).
    """

    name: Literal["dps"] = "dps"
    steps: int = Field(1000, ge=1, le=1000, description="Reverse diffusion steps (network evaluations).")
    eta: float = Field(1.0, ge=0.0, le=1.0, description="DDIM noise level: 1 with 1000 steps is DDPM, as the paper.")
    scale: float = Field(0.5, gt=0.0, description="Guidance step size on grad ||y - A(x0)|| (for data on [0, 1]).")

    def denoise_and_guide(self, prior, x, t, alpha_bar_prev, progress, objective):  # type: ignore[override]
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            x0, eps = prior.denoise(x_in, t)
            loss = objective(to_unit(x0)).sum()
            (grad,) = torch.autograd.grad(loss, x_in)
        return x0.detach(), eps.detach(), self.scale * grad


class MPGD(ReverseSampler):
    """Manifold-preserving guided diffusion (He et al. 2024), without projection.

    The guidance step is taken on the clean estimate x0|t, not through the network:
    x0 <- x0 - scale / sqrt(alpha_bar_prev) * grad_{x0} ||y - A(x0)||, then a DDIM step with eta (0.5).
    Autoencoder projections (MPGD-AE, MPGD-Z) plug in by overriding `guide_x0`.

    The best scale depends on the operator, so it defaults to "auto": SCALES below, the values tuned on the
    validation digits (benchmarks/RESULTS.md). On those, 2 is within 0.2 dB of the best for inpainting and
    deblurring and loses ~0.7 dB on 4x super-resolution, where 1 or less falls below bicubic upsampling.
    """

    SCALES: ClassVar[dict[str, float]] = {"super_resolution": 4.0, "inpainting": 2.0, "gaussian_blur": 2.0, OTHER_OPERATORS: 2.0}
    auto_options = {"scale": SCALES}

    name: Literal["mpgd"] = "mpgd"
    eta: float = Field(0.5, ge=0.0, le=1.0, description="DDIM noise level (the paper's 0.5).")
    scale: float | None = Field(None, gt=0.0, description="Guidance step size on grad ||y - A(x0)|| (for data on [0, 1]).")

    def guide_x0(self, x0: Tensor, objective: Objective, step_size: float, progress: float) -> Tensor:
        """One gradient step on x0 (MPGD w/o projection); `progress` runs from ~1 (start) to 0 (end)."""
        with torch.enable_grad():
            x0 = x0.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(objective(to_unit(x0)).sum(), x0)
        return (x0 - step_size * grad).detach()

    def denoise_and_guide(self, prior, x, t, alpha_bar_prev, progress, objective):  # type: ignore[override]
        with torch.no_grad():
            x0, eps = prior.denoise(x, t)
        return self.guide_x0(x0, objective, self.scale / alpha_bar_prev**0.5, progress), eps, None
