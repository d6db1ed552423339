"""The bundled trained prior: it is small, records its split and samples digits. That every solver beats the
classical baseline with it on held-out images is tests/test_defaults.py's job."""

import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from conftest import BUNDLED_PRIOR
from priorflow.datasets import digits_split_indices, load_digits
from priorflow.solvers import build_solver

pytestmark = pytest.mark.slow


def test_bundled_prior_is_small_and_records_its_held_out_split(digits_prior):
    size = sum(f.stat().st_size for f in BUNDLED_PRIOR.iterdir())
    assert size <= 10 * 2**20
    held_out = digits_prior.identity["metadata"]["data"]["held_out"]
    split = digits_split_indices()
    assert held_out == {"test": split["test"], "val": split["val"]}
    assert not set(split["train"]) & (set(split["test"]) | set(split["val"]))


def _features(images: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(images, 2).flatten(1).numpy()


def test_ddim_samples_are_in_distribution(digits_prior):
    """A classifier fitted on the training digits is about as confident on samples as on real held-out digits."""
    train, labels = load_digits("train", 16)
    classifier = LogisticRegression(C=0.1, max_iter=3000).fit(_features(train), labels.numpy())
    samples = build_solver("ddim", steps=50).solve(digits_prior, None, list(range(64))).x
    test, _ = load_digits("test", 16)
    noise = torch.rand(64, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    blobs = F.avg_pool2d(noise, 5, 1, 2)  # smooth non-digits, what an undertrained prior draws

    def confidence(images: torch.Tensor) -> float:
        return float(classifier.predict_proba(_features(images)).max(1).mean())

    # measured: samples 0.68, real test digits 0.69, noise 0.24, blobs 0.30
    assert confidence(noise) < 0.4 and confidence(blobs) < 0.4
    assert confidence(samples) > 0.55
    assert confidence(samples) > confidence(test) - 0.1
    assert len(set(classifier.predict(_features(samples)).tolist())) >= 8  # not one mode
