"""Degradation presets for the bundled 16x16 digits prior: the tasks of the benchmark, the demo and the tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from priorflow.errors import unknown_name
from priorflow.solvers import InverseProblem, build_noise, build_operator, simulate_measurements

TASKS: dict[str, dict[str, Any]] = {
    "sr_x4": {"operator": ("super_resolution", {"factor": 4, "method": "bicubic"}), "baseline": "bicubic upsampling"},
    "inpaint_70": {"operator": ("inpainting", {"mask": "random", "fraction": 0.7}), "baseline": "masked image"},
    "deblur_gauss": {"operator": ("gaussian_blur", {"kernel_size": 7, "sigma": 1.0}), "baseline": "blurred image"},
}
NOISE: tuple[str, dict[str, Any]] = ("gaussian", {"sigma": 0.05, "value_range": "0,1"})
BENCHMARK_NOISE_SEED_OFFSET = 10_000  # the offset behind the recorded benchmark tables (at most 300 digits)

# Solver options per task, tuned on the validation split by benchmarks/solvers.py (see benchmarks/RESULTS.md).
TUNED: dict[str, dict[str, dict[str, Any]]] = {
    "sr_x4": {
        "dps": {"scale": 0.5},
        "mpgd": {"scale": 4.0},
        "dmplug": {"lr": 0.01, "window": 10, "patience": 200, "max_iters": 600},
    },
    "inpaint_70": {
        "dps": {"scale": 0.5},
        "mpgd": {"scale": 2.0},
        "dmplug": {"lr": 0.03, "window": 50, "patience": 100, "max_iters": 300},
    },
    "deblur_gauss": {
        "dps": {"scale": 0.5},
        "mpgd": {"scale": 2.0},
        "dmplug": {"lr": 0.03, "window": 50, "patience": 100, "max_iters": 600},
    },
}
DPS_STEPS, MPGD_STEPS, DDIM_STEPS, DMPLUG_CAP = 1000, 50, 50, 600


def task(name: str) -> dict[str, Any]:
    if name not in TASKS:
        raise unknown_name("task", name, list(TASKS))
    return TASKS[name]


def solver_options(solver: str, tuned: dict[str, Any]) -> dict[str, Any]:
    """The benchmark's options for `solver` given its tuned values (e.g. TUNED[task][solver])."""
    if solver == "ddim":
        return {"steps": DDIM_STEPS, "eta": 0.0}
    if solver == "dps":
        return {"steps": DPS_STEPS, "eta": 1.0, "scale": tuned["scale"]}
    if solver == "mpgd":
        return {"steps": MPGD_STEPS, "eta": 0.5, "scale": tuned["scale"]}
    if solver == "dmplug":
        stopping = {"rule": "es_wmv", "window": tuned["window"], "patience": tuned["patience"]}
        return {"lr": tuned["lr"], "max_iters": tuned.get("max_iters", DMPLUG_CAP), "stopping": stopping}
    return {}


def simulate(task_name: str, x: Tensor, seeds: Sequence[int]) -> InverseProblem:
    """Degrade clean images x in [0, 1] as the task says; sample i's mask and noise come from seeds[i]."""
    name, params = task(task_name)["operator"]
    operator = build_operator(name, x.shape[1:], seeds, **params)
    return simulate_measurements(x, operator, build_noise(NOISE[0], **NOISE[1]), seeds, BENCHMARK_NOISE_SEED_OFFSET)


def classical_baseline(task_name: str, y: Tensor) -> Tensor:
    """What one gets without a prior: bicubic upsampling for SR, the measurement itself otherwise."""
    name, params = task(task_name)["operator"]
    if name == "super_resolution":
        return F.interpolate(y, scale_factor=params["factor"], mode="bicubic", align_corners=False).clamp(0, 1)
    return y.clamp(0, 1)
