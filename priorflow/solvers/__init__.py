"""priorflow.solvers: diffusion-prior solvers for y = A(x) + n, in pure PyTorch.

    prior = load_prior(path)
    op = build_operator("super_resolution", prior.image_shape, seeds, factor=4)
    problem = simulate_measurements(x, op, build_noise("gaussian", sigma=0.05), seeds)  # or InverseProblem(y, op)
    result = build_solver("dmplug").solve(prior, problem, seeds)
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError

from priorflow.errors import PriorflowError, unknown_name
from priorflow.solvers.base import Solver, SolverResult
from priorflow.solvers.dmplug import DMPlug, DMPlugBlind
from priorflow.solvers.noise import NOISE_MODELS, build_noise, sample_generators
from priorflow.solvers.operators import OPERATORS, build_operator
from priorflow.solvers.prior import DiffusionPrior, load_prior
from priorflow.solvers.problem import NOISE_SEED_OFFSET, InverseProblem, Objective, PerSampleLoss, simulate_measurements
from priorflow.solvers.sampling import DDIM, DPS, MPGD
from priorflow.solvers.stopping import ESWMV, Discrepancy, FixedIterations

SOLVERS: dict[str, type[Solver]] = {cls.model_fields["name"].default: cls for cls in (DMPlug, DMPlugBlind, MPGD, DPS, DDIM)}

OPERATOR_NAMES = frozenset(OPERATORS)
NOISE_MODELS_NAMES = frozenset(NOISE_MODELS)

SolverConfig = Annotated[DMPlug | DMPlugBlind | MPGD | DPS | DDIM, Field(discriminator="name")]


def build_solver(name: str, **params: Any) -> Solver:
    """A solver by name with its options validated (errors name the bad field)."""
    if name not in SOLVERS:
        raise unknown_name("solver", name, list(SOLVERS))
    try:
        return TypeAdapter(SolverConfig).validate_python({"name": name, **params})
    except ValidationError as exc:
        raise PriorflowError(f"bad options for solver {name!r}: {exc}") from exc


__all__ = [
    "DDIM", "DPS", "MPGD", "DMPlug", "DMPlugBlind", "ESWMV", "Discrepancy", "FixedIterations", "DiffusionPrior",
    "InverseProblem", "NOISE_MODELS_NAMES", "OPERATOR_NAMES", "Objective", "PerSampleLoss", "Solver", "SolverConfig", "SolverResult", "SOLVERS",
    "build_noise", "build_operator", "build_solver", "load_prior", "sample_generators", "simulate_measurements", "NOISE_SEED_OFFSET",
]
