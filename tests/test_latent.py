"""Latent priors, autoencoders and the latent and projected solvers, on tiny random-weight networks."""

import json

import pytest
import torch
from conftest import make_autoencoder_folder, make_unet_folder

from priorflow.errors import PriorflowError, PriorLoadError
from priorflow.solvers import (
    InverseProblem,
    build_noise,
    build_operator,
    build_solver,
    load_prior,
    sample_generators,
)
from priorflow.solvers.algorithms.mpgd import MPGDZ, ProjectedMPGD
from priorflow.solvers.priors.autoencoder import load_autoencoder

SEEDS = [3, 5, 7]
LATENT = {
    "mpgd_ldm": {"steps": 5, "scale": 0.5},
    "dps_latent": {"steps": 5, "scale": 0.5},
    "dmplug_latent": {"max_iters": 8, "stopping": {"rule": "es_wmv", "window": 3, "patience": 2}},
}
PROJECTED = {"mpgd_ae": {"steps": 10, "scale": 0.5}, "mpgd_z": {"steps": 10, "scale": 0.5}}


def problem_for(prior, seeds):
    x = torch.rand(len(seeds), *prior.image_shape, generator=torch.Generator().manual_seed(0))
    op = build_operator("inpainting", prior.image_shape, seeds)
    return InverseProblem(build_noise("gaussian", sigma=0.05)(op(x), sample_generators(seeds)), op)


@pytest.fixture(params=[*LATENT, *PROJECTED])
def case(request, tiny_latent_prior, tiny_projection_prior):
    name = request.param
    prior = tiny_latent_prior if name in LATENT else tiny_projection_prior
    return name, build_solver(name, **{**LATENT, **PROJECTED}[name]), prior


def test_contract_determinism_and_latents(case):
    name, solver, prior = case
    problem = problem_for(prior, SEEDS)
    a, b = solver.solve(prior, problem, SEEDS), solver.solve(prior, problem, SEEDS)
    assert a.x.shape == (3, *prior.image_shape) and a.latent.shape == (3, *prior.space_shape)
    assert 0 <= a.x.min() and a.x.max() <= 1 and torch.isfinite(a.x).all()
    assert torch.equal(a.x, b.x) and torch.equal(a.latent, b.latent)
    assert all(a.stop_reason) and (a.nfe > 0).all()


def test_sample_alone_equals_sample_in_batch(case):
    name, solver, prior = case
    problem = problem_for(prior, SEEDS)
    batch = solver.solve(prior, problem, SEEDS)
    alone = solver.solve(prior, InverseProblem(problem.y[1:2], problem.operator.take(torch.tensor([1]))), SEEDS[1:2])
    torch.testing.assert_close(alone.x[0], batch.x[1], atol=1e-5, rtol=0)
    other = solver.solve(prior, problem, [SEEDS[0], 99, SEEDS[2]])
    assert not torch.equal(other.x[1], batch.x[1]) and torch.allclose(other.x[0], batch.x[0], atol=1e-5)


@pytest.mark.parametrize("name", PROJECTED)
def test_outside_the_window_projections_equal_mpgd_exactly(tiny_projection_prior, name):
    problem = problem_for(tiny_projection_prior, SEEDS)
    options = PROJECTED[name]
    plain = build_solver("mpgd", **options).solve(tiny_projection_prior, problem, SEEDS)
    # 10 steps see i/N = 0.9, 0.8, ..., 0.0: a window between two of them contains no step
    empty = build_solver(name, window=(0.91, 0.99), **options).solve(tiny_projection_prior, problem, SEEDS)
    assert torch.equal(empty.x, plain.x)
    projected = build_solver(name, **options).solve(tiny_projection_prior, problem, SEEDS)
    assert not torch.equal(projected.x, plain.x)


def test_projection_is_used_only_strictly_inside_the_window(tiny_projection_prior, monkeypatch):
    seen = []
    original = ProjectedMPGD.guide_x0

    def spy(self, prior, x0, objective, step_size, progress):
        low, high = self.window
        seen.append((round(progress, 6), low < progress < high))
        return original(self, prior, x0, objective, step_size, progress)

    monkeypatch.setattr(ProjectedMPGD, "guide_x0", spy)
    build_solver("mpgd_z", steps=10, scale=0.5).solve(tiny_projection_prior, problem_for(tiny_projection_prior, [1]), [1])
    assert [p for p, _ in seen] == [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0]
    assert [p for p, inside in seen if inside] == [0.4]  # 0.3 and 0.5 are the window's open ends


def test_mpgd_z_keeps_the_residual_the_autoencoder_cannot_represent(tiny_projection_prior):
    ae = tiny_projection_prior.autoencoder
    x0 = torch.rand(2, 1, 8, 8) * 2 - 1
    problem = problem_for(tiny_projection_prior, [1, 2])
    zero_step = MPGDZ(scale=1.0).project(ae, x0, problem.objective("norm"), 0.0)
    torch.testing.assert_close(zero_step, x0, atol=1e-5, rtol=0)  # D(E(x0)) + (x0 - D(E(x0)))


def test_vq_decode_quantises_with_a_straight_through_gradient(tmp_path):
    ae = load_autoencoder(make_autoencoder_folder(tmp_path / "vq", "vq", scaling_factor=None), "cpu")
    z = ae.encode(torch.rand(2, 1, 8, 8) * 2 - 1)
    quantised, _, _ = ae.model.quantize(z)
    assert not torch.equal(z, quantised)  # encode returns the latent before quantisation
    torch.testing.assert_close(ae.decode(z), ae.model.decode(quantised, force_not_quantize=True).sample)
    leaf = z.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(ae.decode(leaf).sum(), leaf)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize(("kind", "stated", "override", "expected"), [
    ("vq", None, None, 1.0),  # the CompVis LDM VQ folders omit it; diffusers' 0.18215 would be wrong
    ("kl", None, None, 0.18215),
    ("kl", 0.5, None, 0.5),
    ("vq", None, 0.25, 0.25),
])
def test_scaling_factor_is_the_stated_one_or_the_override(tmp_path, kind, stated, override, expected):
    folder = make_autoencoder_folder(tmp_path / kind, kind, scaling_factor=stated)
    ae = load_autoencoder(folder, "cpu", override)
    assert ae.scaling_factor == expected
    x = torch.rand(1, 1, 8, 8) * 2 - 1
    raw = ae.model.encode(x)
    raw = raw.latents if kind == "vq" else raw.latent_dist.mean
    torch.testing.assert_close(ae.encode(x), raw * expected)
    torch.testing.assert_close(ae.decode(ae.encode(x)), ae.model.decode(raw).sample)


def test_latent_prior_reads_its_own_schedule_and_shapes(tiny_latent_prior):
    prior = tiny_latent_prior
    assert prior.latent and prior.kind == "latent" and prior.schedule.kind == "scaled_linear"
    assert prior.space_shape == (2, 4, 4) and prior.image_shape == (1, 8, 8)
    assert prior.identity["autoencoder"]["sha256"] != prior.identity["sha256"]


def test_solver_and_prior_of_different_spaces_are_refused(tiny_prior, tiny_latent_prior):
    problem = problem_for(tiny_prior, [1])
    with pytest.raises(PriorflowError, match="needs a latent prior.*use mpgd"):
        build_solver("mpgd_ldm").solve(tiny_prior, problem, [1])
    for pixel, latent in (("mpgd", "mpgd_ldm"), ("dps", "dps_latent"), ("dmplug", "dmplug_latent")):
        with pytest.raises(PriorflowError, match=f"works in pixel space.*latent prior; use {latent}"):
            build_solver(pixel).solve(tiny_latent_prior, problem_for(tiny_latent_prior, [1]), [1])
    with pytest.raises(PriorflowError, match="mpgd_ae projects through an autoencoder.*--autoencoder"):
        build_solver("mpgd_ae").solve(tiny_prior, problem, [1])


def test_autoencoders_that_do_not_fit_are_refused(tmp_path, tiny_prior_path, tiny_latent_prior_path):
    rgb = make_autoencoder_folder(tmp_path / "rgb", channels=3)
    with pytest.raises(PriorLoadError, match="1 channel.*3 channel|3 channel.*1x8x8"):
        load_prior(tiny_prior_path, "cpu", autoencoder=rgb)
    odd = make_unet_folder(tmp_path / "odd", size=7)
    with pytest.raises(PriorLoadError, match="divisible by 2"):
        load_prior(odd, "cpu", autoencoder=make_autoencoder_folder(tmp_path / "gray"))
    with pytest.raises(PriorLoadError, match="own autoencoder"):
        load_prior(tiny_latent_prior_path, "cpu", autoencoder=tmp_path / "gray")
    with pytest.raises(PriorLoadError, match="scaling factor applies to an autoencoder"):
        load_prior(tiny_prior_path, "cpu", scaling_factor=0.5)
    with pytest.raises(PriorLoadError, match="no autoencoder at"):
        load_prior(tiny_prior_path, "cpu", autoencoder=tmp_path / "missing")
    unet_as_ae = tmp_path / "unet_as_ae"
    make_unet_folder(unet_as_ae)
    with pytest.raises(PriorLoadError, match="not an autoencoder"):
        load_prior(tiny_prior_path, "cpu", autoencoder=unet_as_ae)


def test_latent_channels_must_match_the_unet(tmp_path):
    from conftest import make_latent_prior_folder

    folder = make_latent_prior_folder(tmp_path / "ldm")
    config = json.loads((folder / "vae" / "config.json").read_text())
    make_autoencoder_folder(folder / "vae", latent_channels=3, scaling_factor=config["scaling_factor"])
    with pytest.raises(PriorLoadError, match="2-channel latents.*3-channel"):
        load_prior(folder, "cpu")
