"""Manifold-preserving guided diffusion (He et al., ICLR 2024): the guidance step is taken on the clean estimate
x0|t, not through the network, then a DDIM step (eta 0.5) goes on from the guided x0 and the unguided epsilon.

The four variants of the paper: w/o projection (`mpgd`), through an autoencoder beside a pixel prior
(`mpgd_ae`, `mpgd_z`), and in the latent space of a latent prior (`mpgd_ldm`). The loss is the un-squared norm
||y - A(x)|| per sample: the official code takes one norm over the whole batch (it runs batch size 1), so per-sample
norms reproduce its batch-1 behaviour and keep batch-mates from changing each other's step.
"""

from __future__ import annotations

from abc import abstractmethod
from functools import partial
from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from priorflow.solvers.algorithms.base import OTHER_OPERATORS, Callback, Solver, SolverResult, to_unit
from priorflow.solvers.algorithms.sampling import STEPS, reverse_diffusion
from priorflow.solvers.priors.autoencoder import Autoencoder
from priorflow.solvers.priors.prior import DiffusionPrior
from priorflow.solvers.problem import Objective


def _gradient(loss_of: Tensor, leaf: Tensor) -> Tensor:
    (grad,) = torch.autograd.grad(loss_of.sum(), leaf)
    return grad


class MPGD(Solver):
    """MPGD without projection: x0 <- x0 - scale / sqrt(alpha_bar_prev) * grad_{x0} ||y - A(x0)||.

    The best scale depends on the operator, so it defaults to "auto": SCALES below, the values tuned on the
    validation digits (benchmarks/RESULTS.md). On those, 2 is within 0.2 dB of the best for inpainting and
    deblurring and loses ~0.7 dB on 4x super-resolution, where 1 or less falls below bicubic upsampling.
    """

    SCALES: ClassVar[dict[str, float]] = {"super_resolution": 4.0, "inpainting": 2.0, "gaussian_blur": 2.0, OTHER_OPERATORS: 2.0}
    auto_options = {"scale": SCALES}

    name: Literal["mpgd"] = "mpgd"
    steps: int = Field(50, ge=1, le=1000, description=STEPS)
    eta: float = Field(0.5, ge=0.0, le=1.0, description="DDIM noise level (the paper's 0.5).")
    scale: float | None = Field(None, gt=0.0, description="Guidance step size on grad ||y - A(x0)|| (for data on [0, 1]).")

    @property
    def last_step(self) -> int:
        return self.steps

    def _solve(self, prior: DiffusionPrior, objective: Objective | None, seeds: list[int],
               callback: Callback | None) -> SolverResult:
        guide = partial(self.guide, prior, self.fitted(objective))
        return reverse_diffusion(prior, seeds, self.steps, self.eta, guide, self.recorder(len(seeds)), callback)

    def guide(self, prior: DiffusionPrior, objective: Objective, x: Tensor, t: int, alpha_bar_prev: float,
              progress: float) -> tuple[Tensor, Tensor, None]:
        """The unguided x0 and eps, then one guided step on x0 (no backpropagation through the network)."""
        with torch.no_grad():
            x0, eps = prior.denoise(x, t)
        return self.guide_x0(prior, x0, objective, self.scale / alpha_bar_prev**0.5, progress), eps, None  # type: ignore[operator]

    def guide_x0(self, prior: DiffusionPrior, x0: Tensor, objective: Objective, step_size: float, progress: float) -> Tensor:
        """One gradient step on x0 (on z0 for a latent prior, through its decoder); `progress` is i/N of the
        respaced step, from (N-1)/N at the start down to 0."""
        with torch.enable_grad():
            x0 = x0.detach().requires_grad_(True)
            grad = _gradient(objective(to_unit(prior.decode(x0))), x0)
        return (x0 - step_size * grad).detach()


class ProjectedMPGD(MPGD):
    """MPGD with an autoencoder projection inside a window of the steps, w/o projection (at full scale) outside it,
    as the official linear-inverse code: projected only when window[0] < i/N < window[1] on the respaced steps."""

    needs_autoencoder = True
    window: tuple[float, float] = Field((0.3, 0.5), description="Open interval of i/N (respaced step over step count, "
                                        "from ~1 at the start to 0 at the end) where the projection is used.")
    multiplier: float = Field(gt=0.0, description="Factor on the step inside the window (hard-coded in the official code).")

    @model_validator(mode="after")
    def _ordered_window(self) -> ProjectedMPGD:
        low, high = self.window
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"window must satisfy 0 <= low < high <= 1, got {self.window}")
        return self

    def guide_x0(self, prior: DiffusionPrior, x0: Tensor, objective: Objective, step_size: float, progress: float) -> Tensor:
        low, high = self.window
        if not low < progress < high:
            return super().guide_x0(prior, x0, objective, step_size, progress)
        assert prior.autoencoder is not None
        return self.project(prior.autoencoder, x0, objective, self.multiplier * step_size).detach()

    @abstractmethod
    def project(self, autoencoder: Autoencoder, x0: Tensor, objective: Objective, step_size: float) -> Tensor:
        """The guided x0 inside the window."""


class MPGDAE(ProjectedMPGD):
    """MPGD-AE: x0 <- x0 - 0.0075 * scale / sqrt(alpha_bar_prev) * grad_{x0} ||y - A(D(E(x0)))|| in the window:
    the loss is measured on the autoencoder's reconstruction, so the step points along the data manifold."""

    name: Literal["mpgd_ae"] = "mpgd_ae"  # type: ignore[assignment]
    multiplier: float = Field(0.0075, gt=0.0, description="Factor on the step inside the window (official: 0.0075).")

    def project(self, autoencoder: Autoencoder, x0: Tensor, objective: Objective, step_size: float) -> Tensor:
        with torch.enable_grad():
            x0 = x0.detach().requires_grad_(True)
            grad = _gradient(objective(to_unit(autoencoder.decode(autoencoder.encode(x0)))), x0)
        return x0 - step_size * grad


class MPGDZ(ProjectedMPGD):
    """MPGD-Z: z = E(x0), r = x0 - D(z); z <- z - 0.01 * scale / sqrt(alpha_bar_prev) * grad_z ||y - A(D(z))||;
    x0 <- D(z) + r in the window: the step is taken in the latent space and the residual the autoencoder cannot
    represent is kept."""

    name: Literal["mpgd_z"] = "mpgd_z"  # type: ignore[assignment]
    multiplier: float = Field(0.01, gt=0.0, description="Factor on the step inside the window (official: 0.01).")

    def project(self, autoencoder: Autoencoder, x0: Tensor, objective: Objective, step_size: float) -> Tensor:
        with torch.no_grad():
            z = autoencoder.encode(x0)
            residual = x0 - autoencoder.decode(z)
        with torch.enable_grad():
            z = z.requires_grad_(True)
            grad = _gradient(objective(to_unit(autoencoder.decode(z))), z)
        with torch.no_grad():
            return autoencoder.decode(z - step_size * grad) + residual


class MPGDLatent(MPGD):
    """MPGD-LDM (the paper's Type IV) for inverse problems: DDIM in the latent space of a latent prior, the
    guidance step on z0|t with the gradient of ||y - A(D(z0))|| through the decoder, one decode at the end.

    Not in the official linear-inverse code (only in its Stable Diffusion style guidance, which normalises the step
    by the gradient's RMS and guides in a middle window). Here it is the w/o-projection rule moved to latents,
    z0 <- z0 - scale / sqrt(alpha_bar_prev) * grad, at every step, so that MPGD's variants differ only in where the
    step is taken. The auto scale per operator is the best of 0.25 ... 16 on 10 validation digits with the bundled
    latent prior digits16-latent (benchmarks/RESULTS.md, latent section); 4 is within 0.3 dB of the best on all three.
    """

    SCALES: ClassVar[dict[str, float]] = {"super_resolution": 4.0, "inpainting": 4.0, "gaussian_blur": 2.0, OTHER_OPERATORS: 4.0}
    auto_options = {"scale": SCALES}
    space = "latent"

    name: Literal["mpgd_ldm"] = "mpgd_ldm"  # type: ignore[assignment]
