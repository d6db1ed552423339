"""The DDIM pieces against diffusers' own scheduler, so that R(z) is DMPlug's sampler."""

import torch
from diffusers import DDIMScheduler, DDPMScheduler

from priorflow.solvers.algorithms.dmplug import DMPlug
from priorflow.solvers.priors.diffusion import NoiseSchedule, ddim_sigma


def test_linear_schedule_matches_diffusers():
    ours = torch.tensor(NoiseSchedule.linear().alphas_cumprod, dtype=torch.float64)
    theirs = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").alphas_cumprod.double()
    assert torch.allclose(ours, theirs, rtol=1e-5)


def test_dmplug_timesteps_are_leading():
    schedule = NoiseSchedule.linear()
    assert schedule.ddim_timesteps(3) == [666, 333, 0]
    assert schedule.ddim_timesteps(50)[:2] == [980, 960]
    assert abs(schedule.alpha_bar(666) - 0.011) < 0.001 and schedule.alpha_bar(-1) == 1.0


def test_reverse_equals_diffusers_ddim_with_clipping(tiny_prior):
    """R(z) = diffusers DDIMScheduler(clip_sample, set_alpha_to_one) with use_clipped_model_output, eta 0."""
    z = torch.randn(2, *tiny_prior.image_shape, generator=torch.Generator().manual_seed(0))
    ours = DMPlug().reverse(tiny_prior, z)
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True, set_alpha_to_one=True)
    scheduler.set_timesteps(3)
    assert scheduler.timesteps.tolist() == [666, 333, 0]
    x = z
    with torch.no_grad():
        for t in scheduler.timesteps:
            eps = tiny_prior.eps(x, int(t))
            x = scheduler.step(eps, t, x, eta=0.0, use_clipped_model_output=True).prev_sample
    assert torch.allclose(ours, x.clamp(-1, 1), atol=1e-5)


def test_ddim_sigma_is_ddpm_posterior_at_eta_one():
    s = NoiseSchedule.linear()
    t, prev = 500, 499
    beta_tilde = (1 - s.alpha_bar(prev)) / (1 - s.alpha_bar(t)) * (1 - s.alpha_bar(t) / s.alpha_bar(prev))
    assert abs(ddim_sigma(s.alpha_bar(t), s.alpha_bar(prev), 1.0) ** 2 - beta_tilde) < 1e-12
