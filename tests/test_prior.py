"""Loading priors: diffusers folders, pipeline layouts, learned variance, and every way a checkpoint can be bad."""

import json
import shutil

import pytest
import torch
from conftest import make_unet_folder

from priorflow.errors import PriorLoadError
from priorflow.solvers import load_prior
from priorflow.solvers.priors.files import WEIGHTS_FILE


def test_loads_unet_folder_with_identity(tiny_prior_path):
    prior = load_prior(tiny_prior_path)
    assert prior.image_shape == (1, 8, 8)
    assert len(prior.identity["sha256"]) == 64
    assert not any(p.requires_grad for p in prior.network.parameters())
    assert prior.schedule.kind == "linear" and prior.schedule.num_steps == 1000


def test_pipeline_folder_with_cosine_scheduler(tmp_path):
    make_unet_folder(tmp_path / "unet", channels=3)
    (tmp_path / "scheduler").mkdir()
    config = {"_class_name": "DDPMScheduler", "num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2"}
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps(config))
    prior = load_prior(tmp_path)
    assert prior.channels == 3 and prior.schedule.kind == "squaredcos_cap_v2"
    assert prior.schedule.alpha_bar(500) > 0.4  # the cosine schedule keeps more signal mid-way than linear (0.08)


def test_learned_variance_network_gives_first_channels(tmp_path):
    prior = load_prior(make_unet_folder(tmp_path, channels=1, out_channels=2))
    x = torch.randn(2, 1, 8, 8)
    full = prior.network(x, torch.tensor([10, 10])).sample
    assert torch.equal(prior.eps(x, 10), full[:, :1])


def test_v_prediction_is_refused(tmp_path):
    make_unet_folder(tmp_path / "unet")
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps({"prediction_type": "v_prediction"}))
    with pytest.raises(PriorLoadError, match="only epsilon-prediction"):
        load_prior(tmp_path)


def test_missing_and_corrupt_checkpoints(tmp_path, tiny_prior_path):
    with pytest.raises(PriorLoadError, match="does not exist"):
        load_prior(tmp_path / "nowhere")
    with pytest.raises(PriorLoadError, match="no diffusion prior"):
        load_prior(tmp_path)
    folder = tmp_path / "p"
    shutil.copytree(tiny_prior_path, folder)
    (folder / WEIGHTS_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(PriorLoadError, match="corrupt"):
        load_prior(folder)
    (folder / WEIGHTS_FILE).unlink()
    torch.save({"weights": torch.zeros(1)}, folder / "diffusion_pytorch_model.bin")
    with pytest.raises(PriorLoadError, match="never pickles"):
        load_prior(folder)


def test_weights_that_do_not_match_the_config(tmp_path, tiny_prior_path):
    other = make_unet_folder(tmp_path / "other", channels=3)
    folder = tmp_path / "mixed"
    shutil.copytree(tiny_prior_path, folder)
    shutil.copy(other / WEIGHTS_FILE, folder / WEIGHTS_FILE)
    with pytest.raises(PriorLoadError, match="does not match"):
        load_prior(folder)
    (folder / "config.json").write_text("{broken")
    with pytest.raises(PriorLoadError, match="cannot read"):
        load_prior(folder)
