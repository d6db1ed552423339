"""Degradation presets for the bundled 16x16 digits priors: the tasks of the demo, `compare`, the tests and the
benchmarks, and which bundled prior each solver takes (the benchmarks' own tables are in benchmarks/tables.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from priorflow.bundled import BUNDLED_AUTOENCODERS, BUNDLED_PRIORS
from priorflow.errors import unknown_name
from priorflow.solvers import (
    DiffusionPrior,
    InverseProblem,
    build_noise,
    build_operator,
    build_solver,
    simulate_measurements,
)
from priorflow.solvers.priors.loading import PriorCache

TASKS: dict[str, dict[str, Any]] = {
    "sr_x4": {"operator": ("super_resolution", {"factor": 4, "method": "bicubic"}), "baseline": "bicubic upsampling"},
    "inpaint_70": {"operator": ("inpainting", {"mask": "random", "fraction": 0.7}), "baseline": "masked image"},
    "deblur_gauss": {"operator": ("gaussian_blur", {"kernel_size": 7, "sigma": 1.0}), "baseline": "blurred image"},
}
NOISE: tuple[str, dict[str, Any]] = ("gaussian", {"sigma": 0.05, "value_range": "0,1"})
BENCHMARK_NOISE_SEED_OFFSET = 10_000  # the offset behind the recorded benchmark tables (at most 300 digits)


def bundled_prior_kind(solver: str) -> str:
    """Which bundled prior a solver takes: "latent" (digits16-latent), "projection" (digits16 with the autoencoder
    digits16-ae beside it, for MPGD-AE/Z) or "pixel" (digits16)."""
    cls = build_solver(solver).__class__
    return "latent" if cls.space == "latent" else "projection" if cls.needs_autoencoder else "pixel"


BUNDLED = PriorCache(size=3)  # one prior of each kind


def bundled_prior(kind: str, device: str = "auto") -> DiffusionPrior:
    """The bundled prior of a kind (see bundled_prior_kind), loaded once per process."""
    if kind == "latent":
        return BUNDLED.get(BUNDLED_PRIORS["digits16-latent"], device)
    autoencoder = BUNDLED_AUTOENCODERS["digits16-ae"] if kind == "projection" else None
    return BUNDLED.get(BUNDLED_PRIORS["digits16"], device, autoencoder)


def task(name: str) -> dict[str, Any]:
    if name not in TASKS:
        raise unknown_name("task", name, list(TASKS))
    return TASKS[name]


def simulate(task_name: str, x: Tensor, seeds: Sequence[int], noise: tuple[str, dict[str, Any]] = NOISE) -> InverseProblem:
    """Degrade clean images x in [0, 1] as the task says, with the benchmark's noise unless `noise` (name, params) is
    given; sample i's mask and noise come from seeds[i]."""
    name, params = task(task_name)["operator"]
    operator = build_operator(name, x.shape[1:], seeds, **params)
    return simulate_measurements(x, operator, build_noise(noise[0], **noise[1]), seeds, BENCHMARK_NOISE_SEED_OFFSET)


def classical_baseline(task_name: str, y: Tensor) -> Tensor:
    """What one gets without a prior: bicubic upsampling for SR, the measurement itself for the other tasks."""
    name, params = task(task_name)["operator"]
    if name == "super_resolution":
        return F.interpolate(y, scale_factor=params["factor"], mode="bicubic", align_corners=False).clamp(0, 1)
    return y.clamp(0, 1)
