"""Solver wiring on a tiny random-weight prior: calling convention, independence, determinism, errors."""

import pytest
import torch

from priorflow.errors import PriorflowError, ShapeError, UnknownNameError
from priorflow.solvers import (
    ESWMV,
    Discrepancy,
    FixedIterations,
    InverseProblem,
    PerSampleLoss,
    build_noise,
    build_operator,
    build_solver,
    sample_generators,
)

SEEDS = [3, 5, 7]
SOLVERS = {
    "ddim": {"steps": 5},
    "dps": {"steps": 5, "scale": 0.5},
    "mpgd": {"steps": 5, "scale": 0.5},
    "dmplug": {"max_iters": 12, "stopping": {"rule": "es_wmv", "window": 3, "patience": 2}},
    "dmplug_warm": {"warm_steps": 4, "inversion_iterations": 2, "max_iters": 5},
}


def problem_for(prior, seeds, name="inpainting", **params):
    x = torch.rand(len(seeds), *prior.image_shape, generator=torch.Generator().manual_seed(0))
    op = build_operator(name, prior.image_shape, seeds, **params)
    y = build_noise("gaussian", sigma=0.05)(op(x), sample_generators(seeds))
    return x, InverseProblem(y, op)


@pytest.mark.parametrize("name", SOLVERS)
def test_result_contract_and_determinism(tiny_prior, name):
    solver = build_solver(name, trace_every=2, **SOLVERS[name])
    _, problem = problem_for(tiny_prior, SEEDS)
    a = solver.solve(tiny_prior, problem, SEEDS)
    b = solver.solve(tiny_prior, problem, SEEDS)
    assert a.x.shape == (3, *tiny_prior.image_shape) and a.latent.shape == (3, *tiny_prior.image_shape)
    assert 0 <= a.x.min() and a.x.max() <= 1
    assert torch.equal(a.x, b.x) and torch.equal(a.latent, b.latent)
    assert len(a.stop_reason) == 3 and all(a.stop_reason)
    assert (a.seconds > 0).all() and (a.nfe > 0).all() and (a.iterations > 0).all()
    assert a.trace is not None and a.trace.shape[:2] == (3, len(a.trace_steps)) and a.trace_steps[0] == 2
    assert torch.isfinite(a.trace[:, 0]).all()
    if name == "dmplug":  # stopped samples leave NaN behind them; running ones are snapshotted at every k
        last = a.iterations - 1
        for i, steps in enumerate(last.tolist()):
            taken = [s <= steps for s in a.trace_steps]
            assert torch.isfinite(a.trace[i, taken]).all() and torch.isnan(a.trace[i, [not t for t in taken]]).all()


@pytest.mark.parametrize("name", SOLVERS)
def test_sample_alone_equals_sample_in_batch(tiny_prior, name):
    solver = build_solver(name, **SOLVERS[name])
    _, problem = problem_for(tiny_prior, SEEDS)
    batch = solver.solve(tiny_prior, problem, SEEDS)
    index = torch.tensor([1])
    alone = solver.solve(tiny_prior, InverseProblem(problem.y[index], problem.operator.take(index)), [SEEDS[1]])
    assert torch.allclose(alone.x[0], batch.x[1], atol=1e-4)
    assert alone.iterations[0] == batch.iterations[1] and alone.stop_reason[0] == batch.stop_reason[1]


def test_different_seeds_differ(tiny_prior):
    _, problem = problem_for(tiny_prior, [1, 1])
    r = build_solver("ddim", steps=3).solve(tiny_prior, problem, [1, 2])
    assert not torch.allclose(r.x[0], r.x[1])


def test_dmplug_stops_samples_independently_and_caps(tiny_prior):
    _, problem = problem_for(tiny_prior, SEEDS)
    solver = build_solver("dmplug", max_iters=40, lr=0.05, stopping=ESWMV(window=3, patience=2))
    r = solver.solve(tiny_prior, problem, SEEDS)
    assert all(reason in ("es_wmv", "max_iters") for reason in r.stop_reason)
    assert (r.iterations <= 40).all()
    assert (r.extras["selected_iteration"] < r.iterations).all()
    fixed = build_solver("dmplug", max_iters=4, stopping=FixedIterations()).solve(tiny_prior, problem, SEEDS)
    assert fixed.stop_reason == ["max_iters"] * 3 and fixed.iterations.tolist() == [4, 4, 4]
    assert fixed.extras["selected_iteration"].tolist() == [3, 3, 3]


@pytest.mark.parametrize("on_sphere", [True, False])
def test_dmplug_seed_on_sphere_keeps_each_seeds_norm(tiny_prior, on_sphere):
    """The returned seed of every sample has its starting norm (the projection runs per sample), and stays free
    (grows) without it."""
    from priorflow.solvers.physics.noise import randn

    _, problem = problem_for(tiny_prior, SEEDS)
    start = randn(sample_generators(SEEDS), tiny_prior.space_shape, tiny_prior.device).flatten(1).norm(dim=1)
    solver = build_solver("dmplug", max_iters=15, lr=0.1, seed_on_sphere=on_sphere, stopping=FixedIterations())
    norms = solver.solve(tiny_prior, problem, SEEDS).latent.flatten(1).norm(dim=1)
    assert torch.allclose(norms, start, rtol=1e-5) == on_sphere


def test_dmplug_bf16_autocast_keeps_fp32_state_and_follows_fp32(tiny_prior):
    """bf16 changes only the network's number format: the seed and output stay fp32, and R(z) of the starting seed
    is the fp32 one to bf16's precision (about 3 significant digits)."""
    _, problem = problem_for(tiny_prior, SEEDS)
    runs = {p: build_solver("dmplug", max_iters=1, precision=p, stopping=FixedIterations()).solve(tiny_prior, problem, SEEDS)
            for p in ("fp32", "bf16")}
    assert runs["bf16"].x.dtype == runs["bf16"].latent.dtype == torch.float32
    assert 0 < (runs["bf16"].x - runs["fp32"].x).abs().max() < 0.05


def test_dmplug_warm_counts_its_warm_start_and_refuses_latent_priors(tiny_prior, tiny_latent_prior):
    _, problem = problem_for(tiny_prior, SEEDS)
    result = build_solver("dmplug_warm", warm_steps=4, inversion_iterations=2, max_iters=5).solve(tiny_prior, problem, SEEDS)
    assert result.nfe.tolist() == [4 + 2 * 2 + 3 * 5] * 3 and result.iterations.tolist() == [5] * 3
    with pytest.raises(PriorflowError, match="works in pixel space"):
        build_solver("dmplug_warm").solve(tiny_latent_prior, problem, SEEDS)


def test_dmplug_discrepancy_needs_measurements(tiny_prior):
    loss = PerSampleLoss(lambda x, t: (x - t).pow(2).flatten(1).mean(1), torch.zeros(2, *tiny_prior.image_shape))
    solver = build_solver("dmplug", max_iters=3, stopping=Discrepancy(sigma=0.05))
    with pytest.raises(PriorflowError, match="discrepancy principle needs measurements"):
        solver.solve(tiny_prior, loss, [1, 2])


@pytest.mark.parametrize("name", ["dps", "mpgd", "dmplug"])
def test_custom_per_sample_loss_drives_the_solver(tiny_prior, name):
    """Black-box guidance: pull the image towards a target brightness; the loss must fall versus no guidance."""
    target = torch.tensor([0.9, 0.1])

    def brightness(x, t):
        return (x.mean(dim=(1, 2, 3)) - t).abs() * 10

    loss = PerSampleLoss(brightness, target)
    options = {"max_iters": 30, "lr": 0.1, "stopping": FixedIterations()} if name == "dmplug" else {"steps": 10, "scale": 5.0}
    guided = build_solver(name, **options)
    unguided = build_solver("ddim", steps=10).solve(tiny_prior, None, [1, 2])
    result = guided.solve(tiny_prior, loss, [1, 2])
    assert (brightness(result.x, target) < brightness(unguided.x, target)).all()


def test_blind_dmplug_learns_a_kernel_per_sample(tiny_prior):
    x = torch.rand(2, *tiny_prior.image_shape)
    op = build_operator("blind_blur", tiny_prior.image_shape, [1, 2], kernel_size=3, kernel="gaussian", sigma=0.8)
    y = op(x)
    unknown = build_operator("blind_blur", tiny_prior.image_shape, [1, 2], kernel_size=3)
    r = build_solver("dmplug_blind", max_iters=5).solve(tiny_prior, InverseProblem(y, unknown), [1, 2])
    kernel = r.extras["kernel"]
    assert kernel.shape == (2, 3, 3) and (kernel >= 0).all()
    assert torch.allclose(kernel.sum(dim=(1, 2)), torch.ones(2), atol=1e-5)
    with pytest.raises(PriorflowError, match="no kernel"):
        build_solver("dmplug", max_iters=2).solve(tiny_prior, InverseProblem(y, unknown), [1, 2])
    with pytest.raises(PriorflowError, match="dmplug_blind needs measurements of a blind_blur"):
        build_solver("dmplug_blind").solve(tiny_prior, problem_for(tiny_prior, [1, 2])[1], [1, 2])


def test_bad_input_is_named(tiny_prior):
    _, problem = problem_for(tiny_prior, SEEDS)
    with pytest.raises(UnknownNameError, match="unknown solver 'dmplugg'"):
        build_solver("dmplugg")
    with pytest.raises(PriorflowError, match="lr"):
        build_solver("dmplug", lr=-1)
    with pytest.raises(PriorflowError, match="window"):
        build_solver("dmplug", stopping={"rule": "es_wmv", "window": 0})
    with pytest.raises(ShapeError, match="3 measurements but 2 seeds"):
        build_solver("mpgd", steps=2).solve(tiny_prior, problem, [1, 2])
    bad = problem.y.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(PriorflowError, match="NaN"):
        InverseProblem(bad, problem.operator)
    with pytest.raises(ShapeError, match="operator inpainting gives"):
        InverseProblem(problem.y[:, :, :4], problem.operator)
    op3 = build_operator("identity", (3, 8, 8), SEEDS)
    with pytest.raises(ShapeError, match="prior on"):
        build_solver("dps", steps=2).solve(tiny_prior, InverseProblem(torch.zeros(3, 3, 8, 8), op3), SEEDS)
    with pytest.raises(PriorflowError, match="needs measurements or a loss"):
        build_solver("dps").solve(tiny_prior, None, [1])


def test_device_resolution():
    from priorflow.solvers.device import resolve_device

    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(PriorflowError, match="CUDA is not available"):
            resolve_device("cuda")
