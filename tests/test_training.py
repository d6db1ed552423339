"""`priorflow train`: a few steps, a resumed run, a refused change of configuration, an exported prior."""

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from priorflow.cli import app
from priorflow.errors import PriorflowError
from priorflow.solvers import load_prior
from priorflow.training.ddpm import CHECKPOINT_FILE, TrainConfig, train_prior

SMALL = {"image_size": 8, "batch_size": 4, "block_out_channels": (8, 16), "warmup_steps": 1}


def test_resume_continues_where_it_stopped(tmp_path):
    steps = []
    train_prior(TrainConfig(steps=2, **SMALL), tmp_path, checkpoint_every=1)
    with pytest.raises(PriorflowError, match="another configuration"):
        train_prior(TrainConfig(steps=4, lr=5e-4, **SMALL), tmp_path)
    folder = train_prior(TrainConfig(steps=2, **SMALL), tmp_path, on_step=lambda s, loss: steps.append(s))
    assert steps == []  # already complete: nothing retrained
    state = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    assert state["step"] == 2
    prior = load_prior(folder)
    assert prior.image_shape == (1, 8, 8)
    assert prior.identity["metadata"]["data"]["held_out"]["test"][:3] == sorted(prior.identity["metadata"]["data"]["held_out"]["test"])[:3]


def test_trains_on_a_npy_array_through_the_cli(tmp_path):
    data = (np.random.default_rng(0).random((10, 1, 8, 8)) * 255).astype(np.uint8)
    np.save(tmp_path / "images.npy", data)
    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--out", str(out), "--data", str(tmp_path / "images.npy"), "--image-size", "8", "--steps", "2", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert load_prior(out / "prior").identity["metadata"]["data"] == {"source": str(tmp_path / "images.npy")}
    bad = runner.invoke(app, ["train", "--out", str(tmp_path / "bad"), "--data", str(tmp_path / "missing.npy"), "--steps", "1"])
    assert bad.exit_code == 2 and "does not exist" in bad.output
    wrong_size = runner.invoke(app, ["train", "--out", str(tmp_path / "w"), "--data", str(tmp_path / "images.npy"), "--steps", "1"])
    assert wrong_size.exit_code == 2 and "image_size is 16" in wrong_size.output
