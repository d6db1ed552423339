"""The bundled trained prior: it is small, records its split and samples digits. That every solver beats the
classical baseline with it on held-out images is tests/test_defaults.py's job."""

import pytest
from conftest import BUNDLED_PRIOR, digit_classifier_scores

from priorflow.datasets import digits_split_indices
from priorflow.solvers import build_solver

pytestmark = pytest.mark.slow


def test_bundled_prior_is_small_and_records_its_held_out_split(digits_prior):
    size = sum(f.stat().st_size for f in BUNDLED_PRIOR.iterdir())
    assert size <= 10 * 2**20
    held_out = digits_prior.identity["metadata"]["data"]["held_out"]
    split = digits_split_indices()
    assert held_out == {"test": split["test"], "val": split["val"]}
    assert not set(split["train"]) & (set(split["test"]) | set(split["val"]))


def test_ddim_samples_are_in_distribution(digits_prior):
    """The samples are recognised as digits about as confidently as real held-out digits (conftest's classifier;
    digits16 was trained with augmentation, so the perturbed digits are its reference)."""
    scores = digit_classifier_scores(build_solver("ddim", steps=50).solve(digits_prior, None, list(range(64))).x)
    # measured: samples 0.54, perturbed test digits 0.56 (plain 0.69), noise 0.24, blobs 0.30, 10 classes; the prior
    # trained without augmentation: samples 0.68
    assert scores["noise"] < 0.4 and scores["blobs"] < 0.4
    assert scores["samples"] > 0.45 and scores["samples"] > scores["perturbed"] - 0.1
    assert scores["classes"] >= 8  # not one mode
