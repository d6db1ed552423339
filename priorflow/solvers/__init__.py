"""priorflow.solvers: diffusion-prior solvers for y = A(x) + n, in pure PyTorch.

    prior = load_prior(path)
    op = build_operator("super_resolution", prior.image_shape, seeds, factor=4)
    problem = simulate_measurements(x, op, build_noise("gaussian", sigma=0.05), seeds)  # or InverseProblem(y, op)
    result = build_solver("dmplug").solve(prior, problem, seeds)

Three parts, one subpackage each: the forward models (physics/: operators, noise, the deepinv adapter, classical
baselines), the priors (priors/: networks, autoencoders, checkpoint loading) and the algorithms (algorithms/: DMPlug,
MPGD, DPS, DDIM, stopping rules, tiles, coupling); problem.py is where they meet.
"""

from priorflow.solvers.algorithms.base import Solver, SolverResult
from priorflow.solvers.algorithms.stopping import ESWMV, Discrepancy, FixedIterations
from priorflow.solvers.catalog import SOLVERS, SolverConfig, build_solver
from priorflow.solvers.physics.noise import NOISE_MODELS, build_noise, sample_generators
from priorflow.solvers.physics.registry import OPERATORS, build_operator
from priorflow.solvers.priors.loading import load_prior
from priorflow.solvers.priors.prior import DiffusionPrior
from priorflow.solvers.problem import (
    NOISE_SEED_OFFSET,
    InverseProblem,
    Objective,
    PerSampleLoss,
    operator_name,
    simulate_measurements,
)

__all__ = [
    "NOISE_MODELS", "NOISE_SEED_OFFSET", "OPERATORS", "SOLVERS", "DiffusionPrior", "Discrepancy", "ESWMV",
    "FixedIterations", "InverseProblem", "Objective", "PerSampleLoss", "Solver", "SolverConfig", "SolverResult",
    "build_noise", "build_operator", "build_solver", "load_prior", "operator_name", "sample_generators",
    "simulate_measurements",
]
