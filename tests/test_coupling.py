"""Coherent volumes: the depth coupling of a slab's slices, in every solver that takes an objective."""

import pytest
import torch

from priorflow.errors import PriorflowError
from priorflow.solvers import InverseProblem, build_noise, build_operator, build_solver, sample_generators
from priorflow.solvers.algorithms.coupling import DepthCoupling

SEEDS = [11, 12, 13, 14]
SOLVERS = {
    "dmplug": {"max_iters": 12, "stopping": {"rule": "es_wmv", "window": 3, "patience": 2}},
    "mpgd": {"steps": 5, "scale": 0.5},
    "dps": {"steps": 5, "scale": 0.5},
}
STRONG = {"dmplug": 50.0, "mpgd": 1.0, "dps": 1.0}  # Adam normalises DMPlug's steps; MPGD and DPS step by the gradient


def slab(prior):
    """Four slices of one smoothly changing volume, inpainted."""
    base = torch.rand(1, *prior.image_shape, generator=torch.Generator().manual_seed(0))
    x = torch.cat([base.roll(d, -1) for d in range(len(SEEDS))])
    op = build_operator("inpainting", prior.image_shape, SEEDS, fraction=0.6)
    return InverseProblem(build_noise("gaussian", sigma=0.05)(op(x), sample_generators(SEEDS)), op)


@pytest.mark.parametrize("name", SOLVERS)
def test_weight_zero_is_the_independent_solve_bit_for_bit(tiny_prior, name):
    solver, problem = build_solver(name, **SOLVERS[name]), slab(tiny_prior)
    plain = solver.solve(tiny_prior, problem, SEEDS)
    zero = solver.solve(tiny_prior, problem, SEEDS, coupling=DepthCoupling.chain(0.0, len(SEEDS)))
    assert torch.equal(plain.x, zero.x) and torch.equal(plain.latent, zero.latent)


@pytest.mark.parametrize("name", SOLVERS)
def test_coupling_draws_adjacent_slices_together(tiny_prior, name):
    solver, problem = build_solver(name, **SOLVERS[name]), slab(tiny_prior)

    def flicker(x):
        return (x[1:] - x[:-1]).abs().mean().item()

    plain = solver.solve(tiny_prior, problem, SEEDS)
    tight = solver.solve(tiny_prior, problem, SEEDS, coupling=DepthCoupling.chain(STRONG[name], len(SEEDS)))
    assert flicker(tight.x) < flicker(plain.x)


@pytest.mark.parametrize("kind", ["mse", "norm"])
def test_the_summed_losses_have_the_gradient_of_fit_plus_penalty_over_edges(tiny_prior, kind):
    problem = slab(tiny_prior)
    x = torch.rand(len(SEEDS), *tiny_prior.image_shape, dtype=torch.float64, requires_grad=True)
    coupling = DepthCoupling.chain(0.7, 2, tiles=2)  # rows: slice 0 tiles 0-1, slice 1 tiles 0-1
    objective = coupling.couple(problem.objective(kind), kind)
    (grad,) = torch.autograd.grad(objective(x).sum(), x)

    def penalty(d):
        return d.flatten().pow(2).mean() if kind == "mse" else d.flatten().norm()

    total = problem.objective(kind)(x).sum() + 0.7 * (penalty(x[2] - x[0]) + penalty(x[3] - x[1]))
    (expected,) = torch.autograd.grad(total, x)
    assert torch.allclose(grad, expected)
    sub = objective.take(torch.tensor([2, 3]))  # rows 0 and 1 stopped: their last images anchor rows 2 and 3
    assert torch.allclose(sub(x[2:]).detach(), objective(x)[2:].detach())


def test_blind_dmplug_couples_its_learnt_kernel_fits(tiny_prior):
    """The kernel belongs to the objective, so the coupled objective learns it too: weight 0 is the plain solve bit for
    bit, and a strong weight draws the slices together."""
    blurred = build_operator("blind_blur", tiny_prior.image_shape, SEEDS, kernel_size=3, kernel="gaussian", sigma=1.0)
    base = torch.rand(1, *tiny_prior.image_shape, generator=torch.Generator().manual_seed(0))
    y = blurred(torch.cat([base.roll(d, -1) for d in range(len(SEEDS))]))
    problem = InverseProblem(y, build_operator("blind_blur", tiny_prior.image_shape, SEEDS, kernel_size=3))
    solver = build_solver("dmplug_blind", **SOLVERS["dmplug"])
    plain = solver.solve(tiny_prior, problem, SEEDS)
    zero = solver.solve(tiny_prior, problem, SEEDS, coupling=DepthCoupling.chain(0.0, len(SEEDS)))
    tight = solver.solve(tiny_prior, problem, SEEDS, coupling=DepthCoupling.chain(STRONG["dmplug"], len(SEEDS)))
    assert torch.equal(plain.x, zero.x) and torch.equal(plain.extras["kernel"], zero.extras["kernel"])
    assert (tight.x[1:] - tight.x[:-1]).abs().mean() < (plain.x[1:] - plain.x[:-1]).abs().mean()


def test_a_mismatched_chain_is_refused(tiny_prior):
    with pytest.raises(PriorflowError, match="links 3 rows, the problem has 4"):
        build_solver("mpgd", steps=2).solve(tiny_prior, slab(tiny_prior), SEEDS, coupling=DepthCoupling.chain(1.0, 3))
