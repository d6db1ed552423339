"""Training side of latent priors: seeded augmentation, the perturbed held-out split, `train-autoencoder` and
`train --autoencoder` on tiny networks (resume, refusals, loadable exports)."""

import json

import pytest
import torch
from typer.testing import CliRunner

from priorflow.cli import app
from priorflow.datasets import load_digits
from priorflow.errors import PriorflowError
from priorflow.solvers import build_solver, load_prior
from priorflow.solvers.priors.autoencoder import load_autoencoder
from priorflow.training.augment import Augmentation, affine
from priorflow.training.autoencoder import AutoencoderConfig, train_autoencoder
from priorflow.training.common import CHECKPOINT_FILE
from priorflow.training.ddpm import TrainConfig, train_prior
from priorflow.training.latent import AUTOENCODER_FILES

AUG = Augmentation(shift=1.5, rotate=12, scale=0.1)
SMALL = {"image_size": 8, "batch_size": 4, "block_out_channels": (8, 16), "warmup_steps": 1}
SMALL_AE = {"image_size": 8, "batch_size": 4, "block_out_channels": (8, 8), "warmup_steps": 1}


def test_affine_moves_content_the_stated_way():
    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, 5, 5] = 1.0
    moved = affine(x, shift=torch.tensor([[1.0, 2.0]]), degrees=torch.zeros(1), scale=torch.ones(1))
    assert moved[0, 0, 7, 6] == pytest.approx(1.0) and moved.sum() == pytest.approx(1.0)  # 1 right, 2 down
    same = affine(x, shift=torch.zeros(1, 2), degrees=torch.zeros(1), scale=torch.ones(1))
    torch.testing.assert_close(same, x, atol=1e-6, rtol=0)
    turned = affine(x, shift=torch.zeros(1, 2), degrees=torch.tensor([90.0]), scale=torch.ones(1))
    assert turned[0, 0, 5, 10] == pytest.approx(1.0)  # a quarter turn about the centre (7.5, 7.5)


def test_augmentation_is_seeded_and_parsed_strictly():
    images, _ = load_digits("val", 16)
    a = AUG(images[:8], torch.Generator().manual_seed(3))
    assert torch.equal(a, AUG(images[:8], torch.Generator().manual_seed(3)))
    assert not torch.equal(a, AUG(images[:8], torch.Generator().manual_seed(4)))
    assert a.min() >= 0 and a.max() <= 1 and not torch.equal(a, images[:8])
    assert Augmentation()(images, torch.Generator()) is images  # inactive: no draw, no change
    assert Augmentation.parse("shift=1.5,rotate=12,scale=0.1") == AUG and Augmentation.parse("none") == Augmentation()
    assert Augmentation.parse(AUG.spec()) == AUG
    for bad, message in [("shift=x", "not a number"), ("tilt=3", "one of shift"), ("scale=1.5", "less than 1"),
                         ("shift=1,p=0", "greater than 0")]:
        with pytest.raises(PriorflowError, match=message):
            Augmentation.parse(bad)


def test_augmentation_with_p_moves_only_some_images_and_p1_draws_as_before():
    images, _ = load_digits("val", 16)
    half = Augmentation(shift=1.5, rotate=12, scale=0.1, p=0.5)
    assert Augmentation.parse(half.spec()) == half and half.spec().endswith(",p=0.5") and "p=" not in AUG.spec()
    moved = half(images[:64], torch.Generator().manual_seed(3))
    unchanged = (moved - images[:64]).abs().flatten(1).amax(1) < 1e-6  # identity transform = the plain image
    assert 16 < unchanged.sum() < 48
    every = AUG(images[:64], torch.Generator().manual_seed(3))
    explicit = Augmentation(shift=1.5, rotate=12, scale=0.1, p=1.0)
    assert torch.equal(every, explicit(images[:64], torch.Generator().manual_seed(3)))
    assert unchanged.sum() > ((every - images[:64]).abs().flatten(1).amax(1) < 1e-6).sum()


def test_perturbed_split_is_fixed_and_keeps_its_labels():
    plain, labels = load_digits("test", 16)
    moved, moved_labels = load_digits("test", 16, perturbed=True)
    again, _ = load_digits("test", 16, perturbed=True)
    assert torch.equal(moved, again) and torch.equal(labels, moved_labels)
    assert moved.shape == plain.shape and 0 <= moved.min() and moved.max() <= 1
    changed = (moved - plain).abs().flatten(1).mean(1)
    assert (changed > 0.005).float().mean() > 0.9  # nearly every image moved

    def centre(images: torch.Tensor) -> torch.Tensor:
        grid = torch.arange(16.0)
        mass = images.sum((1, 2, 3))
        return torch.stack([(images.sum((1, 2)) * grid).sum(1) / mass, (images.sum((1, 3)) * grid).sum(1) / mass], 1)

    assert (centre(moved) - centre(plain)).abs().max() < 2.5  # shift 1.5 px, plus what rotation and scale move


def test_augmented_training_resumes_exactly_and_refuses_another_augmentation(tmp_path):
    config = TrainConfig(steps=3, augment=AUG, **SMALL)
    whole = train_prior(config, tmp_path / "whole")

    def stop_at_two(step: int, loss: float) -> None:
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_prior(config, tmp_path / "cut", checkpoint_every=1, on_step=stop_at_two)
    assert torch.load(tmp_path / "cut" / CHECKPOINT_FILE, weights_only=True)["step"] == 1
    resumed = train_prior(config, tmp_path / "cut")
    weights = "diffusion_pytorch_model.safetensors"
    assert (whole / weights).read_bytes() == (resumed / weights).read_bytes()
    with pytest.raises(PriorflowError, match="augment differ"):
        train_prior(TrainConfig(steps=3, augment=Augmentation(shift=1.0), **SMALL), tmp_path / "cut")
    metadata = json.loads((whole / "priorflow.json").read_text())
    assert metadata["training"]["augment"] == {"shift": 1.5, "rotate": 12.0, "scale": 0.1, "p": 1.0}
    assert metadata["reproduce"].endswith("--augment shift=1.5,rotate=12,scale=0.1")


@pytest.fixture(scope="module")
def tiny_autoencoder(tmp_path_factory):
    out = tmp_path_factory.mktemp("ae")
    config = AutoencoderConfig(steps=2, augment=AUG, **SMALL_AE)
    train_autoencoder(config, out, name="tiny-ae", checkpoint_every=1)
    return out, config


def test_autoencoder_resumes_refuses_changes_and_exports_a_scaled_diffusers_folder(tiny_autoencoder):
    out, config = tiny_autoencoder
    steps = []
    folder = train_autoencoder(config, out, name="tiny-ae", on_step=lambda s, loss: steps.append(s))
    assert steps == []  # already complete
    with pytest.raises(PriorflowError, match="kl_weight differ"):
        train_autoencoder(config.model_copy(update={"kl_weight": 0.1}), out)
    assert sorted(p.name for p in folder.iterdir()) == sorted(AUTOENCODER_FILES)
    stated = json.loads((folder / "config.json").read_text())["scaling_factor"]
    autoencoder = load_autoencoder(folder, "cpu")
    assert autoencoder.kind == "kl" and autoencoder.scaling_factor == stated
    assert autoencoder.identity["scaling_factor_from"] == "config.json"
    train, _ = load_digits("train", 8)
    with torch.no_grad():
        latents = autoencoder.encode(train.mul(2).sub(1))
    assert latents.shape[1:] == (2, 4, 4) and latents.std().item() == pytest.approx(1.0, rel=1e-3)
    metadata = json.loads((folder / "priorflow.json").read_text())
    assert metadata["latent_shape"] == [2, 4, 4] and metadata["training"]["augment"]["rotate"] == 12.0
    assert set(metadata["held_out_psnr"]) == {"test", "test_perturbed"}
    assert "train-autoencoder --kind kl" in metadata["reproduce"] and "--augment shift=1.5" in metadata["reproduce"]


def test_vq_autoencoder_trains_with_its_commitment_loss(tmp_path):
    folder = train_autoencoder(AutoencoderConfig(kind="vq", steps=2, num_vq_embeddings=16, **SMALL_AE), tmp_path)
    metadata = json.loads((folder / "priorflow.json").read_text())
    assert metadata["training"]["final_losses_ema"]["regulariser"] > 0
    autoencoder = load_autoencoder(folder, "cpu")
    assert autoencoder.kind == "vq" and autoencoder.scaling_factor == metadata["scaling_factor"]


def test_latent_prior_trains_on_the_autoencoder_and_exports_a_pipeline(tiny_autoencoder, tmp_path):
    ae_out, _ = tiny_autoencoder
    ae_folder = ae_out / "autoencoder"
    config = TrainConfig(steps=2, augment=AUG, autoencoder=str(ae_folder), **SMALL)
    folder = train_prior(config, tmp_path, name="tiny-latent", checkpoint_every=1)
    assert sorted(p.name for p in folder.iterdir()) == ["priorflow.json", "scheduler", "unet", "vae"]
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert (scheduler["_class_name"], scheduler["beta_start"], scheduler["beta_end"]) == ("DDPMScheduler", 1e-4, 0.02)
    assert (scheduler["num_train_timesteps"], scheduler["prediction_type"]) == (1000, "epsilon")
    assert (folder / "vae" / "config.json").read_bytes() == (ae_folder / "config.json").read_bytes()
    prior = load_prior(folder, "cpu")
    assert prior.latent and prior.space_shape == (2, 4, 4) and prior.image_shape == (1, 8, 8)
    metadata = prior.identity["metadata"]
    assert metadata["autoencoder"]["name"] == "tiny-ae" and metadata["reproduce"].endswith("--autoencoder AE_FOLDER")
    samples = build_solver("ddim", steps=3).solve(prior, None, [0, 1]).x
    assert samples.shape == (2, 1, 8, 8) and 0 <= samples.min() and samples.max() <= 1
    assert TrainConfig(autoencoder="ae").block_out_channels == (32, 64)  # the latent default
    assert TrainConfig().block_out_channels == (32, 64, 64)


def test_latent_prior_resume_refuses_another_autoencoder(tiny_autoencoder, tmp_path):
    ae_out, config = tiny_autoencoder
    prior_config = TrainConfig(steps=2, autoencoder=str(ae_out / "autoencoder"), **SMALL)
    train_prior(prior_config, tmp_path / "prior", checkpoint_every=1)
    other = train_autoencoder(config.model_copy(update={"seed": 1}), tmp_path / "ae2")
    (ae_out / "autoencoder").rename(tmp_path / "kept")
    other.rename(ae_out / "autoencoder")  # same path, other weights
    try:
        with pytest.raises(PriorflowError, match="autoencoder_sha256 differ"):
            train_prior(prior_config, tmp_path / "prior")
    finally:
        (ae_out / "autoencoder").rename(other)
        (tmp_path / "kept").rename(ae_out / "autoencoder")
    with pytest.raises(PriorflowError, match="no autoencoder"):
        train_prior(TrainConfig(steps=1, autoencoder=str(tmp_path / "missing"), **SMALL), tmp_path / "x")


def test_cli_trains_an_autoencoder_and_rejects_bad_options(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["train-autoencoder", "--out", str(tmp_path / "ae"), "--image-size", "8", "--steps",
                                 "1", "--batch-size", "2", "--block-out-channels", "8,8", "--augment", "shift=1"])
    assert result.exit_code == 0, result.output
    assert load_autoencoder(tmp_path / "ae" / "autoencoder", "cpu").latent_channels == 2
    bad = runner.invoke(app, ["train", "--out", str(tmp_path / "p"), "--steps", "1", "--augment", "shift=1,tilt=2"])
    assert bad.exit_code == 2 and "tilt=2" in bad.output
    widths = runner.invoke(app, ["train-autoencoder", "--out", str(tmp_path / "w"), "--block-out-channels", "8,x"])
    assert widths.exit_code == 2 and "comma-separated integers" in widths.output
