"""The benchmarks' own tables: tasks over the physics operators, the robustness noises, the blind version of a blur
task, and the options the recorded solver tables of RESULTS.md were made with. They are the benchmarks' (the CLI
and the pipeline take each solver's defaults), so they live here, beside the scripts that use them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from priorflow import presets
from priorflow.errors import PriorflowError
from priorflow.presets import BENCHMARK_NOISE_SEED_OFFSET, NOISE, TASKS
from priorflow.solvers import InverseProblem, build_noise, build_operator, build_solver, simulate_measurements
from priorflow.solvers.physics.classical import BASELINES, classical_reconstruction
from priorflow.solvers.physics.operators import Operator

PHYSICS_TASKS: dict[str, dict[str, Any]] = {
    "ct_8": {"operator": ("ct", {"angles": 8}), "baseline": BASELINES["ct"][0]},
    "mri_x4": {"operator": ("mri", {"acceleration": 4, "center_fraction": 0.125}), "baseline": BASELINES["mri"][0]},
    "phase_retrieval": {"operator": ("phase_retrieval", {"oversample": 2.0}), "baseline": BASELINES["phase_retrieval"][0]},
}
"""Tasks over deepinv's physics and Fourier phase retrieval (physics.py). On 16 columns, MRI x4 samples 4: 2
central and 2 random."""
ROBUSTNESS_NOISE: dict[str, tuple[str, dict[str, Any]]] = {
    "gaussian_low": ("gaussian", {"sigma": 0.12}), "gaussian_high": ("gaussian", {"sigma": 0.18}),
    "impulse_low": ("impulse", {"amount": 0.3}), "impulse_high": ("impulse", {"amount": 0.5}),
    "shot_low": ("poisson", {"rate": 25.0}), "shot_high": ("poisson", {"rate": 12.0}),
    "speckle_low": ("speckle", {"sigma": 0.20}), "speckle_high": ("speckle", {"sigma": 0.35}),
}
"""The noise of DMPlug's robustness table (its Table 5, after ES-DIP's data: ImageNet-C's corruptions on [0, 1];
salt-and-pepper at ES-DIP's shipped amounts, half salt and half pepper)."""
BLIND: dict[str, tuple[str, dict[str, Any]]] = {"deblur_gauss": ("blind_blur", {"kernel_size": 7})}
"""The tasks a blind solver (dmplug_blind) takes: the same measurements, solved with the kernel unknown (only its
size is given). A blind solver's forward model pads with zeros where the task's blur reflects: at the border of
a digit's dark background, the two barely differ."""


def simulate(task_name: str, x: Tensor, seeds: Sequence[int], noise: tuple[str, dict[str, Any]] = NOISE) -> InverseProblem:
    """priorflow.presets.simulate, for the physics tasks too."""
    if task_name not in PHYSICS_TASKS:
        return presets.simulate(task_name, x, seeds, noise)
    name, params = PHYSICS_TASKS[task_name]["operator"]
    operator = build_operator(name, x.shape[1:], seeds, **params)
    return simulate_measurements(x, operator, build_noise(noise[0], **noise[1]), seeds, BENCHMARK_NOISE_SEED_OFFSET)


def classical_baseline(task_name: str, y: Tensor, operator: Operator | None = None) -> Tensor:
    """priorflow.presets.classical_baseline, and for the physics tasks the operator's classical reconstruction
    (priorflow.solvers.physics.classical), which needs the `operator`."""
    if task_name not in PHYSICS_TASKS:
        return presets.classical_baseline(task_name, y)
    if operator is None:
        raise PriorflowError(f"the baseline of task {task_name} needs its operator (the problem's)")
    return classical_reconstruction(operator, y)


def blind(task_name: str, problem: InverseProblem, seeds: Sequence[int]) -> InverseProblem:
    """The task's measurements as a blind problem for dmplug_blind (the kernel is unknown to the solver)."""
    if task_name not in BLIND:
        raise PriorflowError(f"task {task_name!r} is not a blur: blind solvers take {', '.join(BLIND)}")
    name, params = BLIND[task_name]
    return InverseProblem(problem.y, build_operator(name, problem.operator.image_shape, seeds, **params))


def problem_for(solver: str, task_name: str, problem: InverseProblem, seeds: Sequence[int]) -> InverseProblem:
    """What `solver` is given for a task: the problem itself, or its blind version for dmplug_blind."""
    return blind(task_name, problem, seeds) if solver == "dmplug_blind" else problem


def solver_default(solver: str, option: str, task_name: str) -> Any:
    """A solver's default value of `option` on a task: its plain default, or its "auto" value for the operator."""
    return getattr(build_solver(solver).resolved(presets.task(task_name)["operator"][0]), option)


# DMPlug's values per task, tuned on the validation split by solvers.py with the free seed (the official code's):
# the recorded solver tables in RESULTS.md were made with them, so they are kept here.
DMPLUG_TUNED: dict[str, dict[str, Any]] = {
    "sr_x4": {"lr": 0.01, "window": 10, "patience": 200, "max_iters": 600, "seed_on_sphere": False},
    "inpaint_70": {"lr": 0.03, "window": 50, "patience": 100, "max_iters": 300, "seed_on_sphere": False},
    "deblur_gauss": {"lr": 0.03, "window": 50, "patience": 100, "max_iters": 600, "seed_on_sphere": False},
}
# Solver options per task, tuned on the validation split by solvers.py (see RESULTS.md). DPS's and MPGD's tuned
# scales are their defaults (MPGD's per operator), so they are read from the solvers.
TUNED: dict[str, dict[str, dict[str, Any]]] = {
    name: {
        "dps": {"scale": solver_default("dps", "scale", name)},
        "mpgd": {"scale": solver_default("mpgd", "scale", name)},
        "dmplug": DMPLUG_TUNED[name],
    }
    for name in TASKS
}
DPS_STEPS, MPGD_STEPS, DDIM_STEPS, DMPLUG_CAP = 1000, 50, 50, 600

FAMILIES = {"dps_latent": "dps", "mpgd_ae": "mpgd", "mpgd_z": "mpgd", "mpgd_ldm": "mpgd", "dmplug_latent": "dmplug"}
"""Solvers that take the benchmark options of another: the latent and projected variants of DPS, MPGD and DMPlug."""


def solver_options(solver: str, tuned: dict[str, Any]) -> dict[str, Any]:
    """The benchmark's options for `solver` given its tuned values (e.g. TUNED[task][solver])."""
    solver = FAMILIES.get(solver, solver)
    if solver == "ddim":
        return {"steps": DDIM_STEPS, "eta": 0.0}
    if solver == "dps":
        return {"steps": DPS_STEPS, "eta": 1.0, "scale": tuned["scale"]}
    if solver == "mpgd":
        return {"steps": MPGD_STEPS, "eta": 0.5, **tuned}
    if solver == "dmplug":
        stopping = {"rule": "es_wmv", "window": tuned["window"], "patience": tuned["patience"]}
        return {"lr": tuned["lr"], "max_iters": tuned.get("max_iters", DMPLUG_CAP), "stopping": stopping,
                "seed_on_sphere": tuned.get("seed_on_sphere", False)}
    return {}
