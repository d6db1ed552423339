"""DDIM-type samplers: one reverse loop, `reverse_diffusion`, and the guidance that makes each solver what it is.
Unconditional DDIM and DPS are here, MPGD and its projections in mpgd.py. Over a latent prior the loop runs in latent
space and decodes once at the end."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor

from priorflow.solvers.algorithms.base import OTHER_OPERATORS, Callback, Recorder, Solver, SolverResult, to_unit
from priorflow.solvers.algorithms.stopping import STOP_COMPLETED
from priorflow.solvers.physics.noise import randn, sample_generators
from priorflow.solvers.priors.diffusion import ddim_sigma, ddim_step
from priorflow.solvers.priors.prior import DiffusionPrior
from priorflow.solvers.problem import Objective

Guidance = Callable[[Tensor, int, float, float], tuple[Tensor, Tensor, Tensor | None]]
"""guide(x_t, t, alpha_bar_prev, progress) -> (x0, eps, correction): the DDIM step goes from x0 and eps, then
subtracts the correction from x_{t-1}. `progress` is i/N of the respaced step, from (N-1)/N at the start down to 0."""

STEPS = "Reverse diffusion steps (network evaluations)."


def reverse_diffusion(prior: DiffusionPrior, seeds: Sequence[int], steps: int, eta: float, guide: Guidance,
                      recorder: Recorder, callback: Callback | None = None) -> SolverResult:
    """x_T ~ N(0, I), one stream per seed, then `steps` DDIM steps with noise level eta, each guided by `guide`."""
    device = prior.device
    generators = sample_generators(seeds)
    index = torch.arange(len(seeds))
    x = randn(generators, prior.space_shape, device)
    timesteps = prior.schedule.ddim_timesteps(steps)
    latent = x
    for i, t in enumerate(timesteps):
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        alpha_bar, alpha_bar_prev = prior.schedule.alpha_bar(t), prior.schedule.alpha_bar(t_prev)
        latent = x
        x0, eps, correction = guide(x, t, alpha_bar_prev, (len(timesteps) - 1 - i) / len(timesteps))
        sigma = ddim_sigma(alpha_bar, alpha_bar_prev, eta)
        noise = randn(generators, prior.space_shape, device) if sigma > 0 else None
        x = ddim_step(x0, eps, alpha_bar_prev, sigma, noise)
        if correction is not None:
            x = x - correction
        x = x.detach()
        recorder.step(index, nfe=1)
        recorder.snapshot(i + 1, x, index)
        if callback is not None:
            with torch.no_grad():
                callback(i + 1, to_unit(prior.decode(x0)).clamp(0, 1), index)
    n = len(seeds)
    with torch.no_grad():
        image = prior.decode(x)
    return SolverResult(
        x=to_unit(image).clamp(0.0, 1.0),
        latent=latent.detach(),
        iterations=torch.full((n,), len(timesteps), dtype=torch.long),
        stop_reason=[STOP_COMPLETED] * n,
        seconds=recorder.seconds,
        nfe=recorder.nfe,
        trace=recorder.trace,
        trace_steps=recorder.trace_steps,
    )


def unguided(prior: DiffusionPrior, x: Tensor, t: int, alpha_bar_prev: float, progress: float) -> tuple[Tensor, Tensor, None]:
    """The prior's own step: DDIM's denoised estimate and noise, no correction."""
    with torch.no_grad():
        x0, eps = prior.denoise(x, t)
    return x0, eps, None


class DDIM(Solver):
    """Unconditional DDIM sampling: the prior alone, a reference that ignores the measurements."""

    name: Literal["ddim"] = "ddim"
    space = "any"
    steps: int = Field(50, ge=1, le=1000, description=STEPS)
    eta: float = Field(0.0, ge=0.0, le=1.0, description="DDIM noise level: 0 deterministic, 1 DDPM-like ancestral.")

    @property
    def last_step(self) -> int:
        return self.steps

    def _solve(self, prior: DiffusionPrior, objective: Objective | None, seeds: list[int],
               callback: Callback | None) -> SolverResult:
        return reverse_diffusion(prior, seeds, self.steps, self.eta, partial(unguided, prior), self.recorder(len(seeds)),
                                 callback)


class DPS(Solver):
    """Diffusion posterior sampling (Chung et al. 2023): x_{t-1} -= scale * grad_{x_t} ||y - A(x0(x_t))||.

    The gradient goes through the network. steps=1000, eta=1 is the official DDPM ancestral sampler; fewer DDIM
    steps need a larger scale. The norm is taken per sample, so batch-mates do not change each other's step.
    Scales are for measurements on [0, 1]: the official scale on [-1, 1] corresponds to twice it here.
    The default scale 0.5 was the best of {0.25, 0.5, 1} on the validation digits for SR x4, 70 % inpainting and
    Gaussian deblurring alike, with digits16 as first trained (without augmentation; benchmarks/RESULTS.md).
    """

    name: Literal["dps"] = "dps"
    steps: int = Field(1000, ge=1, le=1000, description=STEPS)
    eta: float = Field(1.0, ge=0.0, le=1.0, description="DDIM noise level: 1 with 1000 steps is DDPM, as the paper.")
    scale: float = Field(0.5, gt=0.0, description="Guidance step size on grad ||y - A(x0)|| (for data on [0, 1]).")

    @property
    def last_step(self) -> int:
        return self.steps

    def _solve(self, prior: DiffusionPrior, objective: Objective | None, seeds: list[int],
               callback: Callback | None) -> SolverResult:
        guide = partial(self.guide, prior, self.fitted(objective))
        return reverse_diffusion(prior, seeds, self.steps, self.eta, guide, self.recorder(len(seeds)), callback)

    def guide(self, prior: DiffusionPrior, objective: Objective, x: Tensor, t: int, alpha_bar_prev: float,
              progress: float) -> tuple[Tensor, Tensor, Tensor]:
        """The unguided step, corrected by scale * grad_{x_t} of the data fit of x0(x_t) (decoded, for latents)."""
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            x0, eps = prior.denoise(x_in, t)
            loss = objective(to_unit(prior.decode(x0))).sum()
            (grad,) = torch.autograd.grad(loss, x_in)
        return x0.detach(), eps.detach(), self.scale * grad  # type: ignore[operator]


class DPSLatent(DPS):
    """DPS over a latent prior: the gradient of ||y - A(D(z0(z_t)))|| goes through the UNet and the decoder, and the
    step is taken on z_t. The baseline the latent MPGD and DMPlug are judged against. The auto scale per operator is
    the best of 0.5, 1, 2 on 10 validation digits with digits16-latent (benchmarks/RESULTS.md, latent section)."""

    SCALES: ClassVar[dict[str, float]] = {"super_resolution": 0.5, "inpainting": 1.0, "gaussian_blur": 0.5, OTHER_OPERATORS: 0.5}
    auto_options = {"scale": SCALES}

    name: Literal["dps_latent"] = "dps_latent"  # type: ignore[assignment]
    space = "latent"
    scale: float | None = Field(  # type: ignore[assignment]
        None, gt=0.0, description="Guidance step size on grad ||y - A(D(z0))|| (for data on [0, 1])."
    )
