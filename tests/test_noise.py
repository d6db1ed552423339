import pytest
import torch

from priorflow.errors import PriorflowError, UnknownNameError
from priorflow.solvers import build_noise, sample_generators

Y = torch.full((2, 1, 64, 64), 0.5)


@pytest.mark.parametrize(
    ("name", "params"),
    [("gaussian", {"sigma": 0.1}), ("poisson", {"rate": 20}), ("impulse", {"amount": 0.2}), ("speckle", {"sigma": 0.3}), ("none", {})],
)
def test_seeded_and_per_sample(name, params):
    noise = build_noise(name, **params)
    a = noise(Y, sample_generators([1, 2]))
    b = noise(Y, sample_generators([1, 2]))
    alone = noise(Y[1:], sample_generators([2]))
    assert torch.equal(a, b)
    assert torch.equal(a[1], alone[0])


def test_gaussian_sigma_is_on_zero_one_unless_told():
    y = torch.full((1, 1, 256, 256), 0.5)
    std01 = (build_noise("gaussian", sigma=0.05)(y, sample_generators([0])) - y).std()
    std_pm = (build_noise("gaussian", sigma=0.05, value_range="-1,1")(y, sample_generators([0])) - y).std()
    assert abs(std01 - 0.05) < 0.002
    assert abs(std_pm - 0.025) < 0.001  # the official repos' convention halves the nominal sigma


def test_poisson_impulse_speckle_statistics():
    y = torch.full((1, 1, 256, 256), 0.5)
    shot = build_noise("poisson", rate=10.0)(y, sample_generators([0]))
    assert abs(shot.mean() - 0.5) < 0.01 and abs(shot.var() - 0.5 / 10) < 0.01
    imp = build_noise("impulse", amount=0.3)(y, sample_generators([0]))
    hit = (imp != 0.5).float().mean()
    assert abs(hit - 0.3) < 0.01 and set(imp.unique().tolist()) == {0.0, 0.5, 1.0}
    sp = build_noise("speckle", sigma=0.2)(y, sample_generators([0]))
    assert abs((sp - y).std() - 0.1) < 0.005 and sp.min() >= 0 and sp.max() <= 1


def test_bad_noise_input():
    with pytest.raises(UnknownNameError, match="unknown noise model 'gauss'"):
        build_noise("gauss")
    with pytest.raises(PriorflowError, match="sigma must be non-negative"):
        build_noise("gaussian", sigma=-1.0)
    with pytest.raises(PriorflowError, match="value_range"):
        build_noise("gaussian", value_range="0,255")
    with pytest.raises(PriorflowError, match="2 generators for a batch of 1"):
        build_noise("gaussian")(Y[:1], sample_generators([1, 2]))


@pytest.mark.parametrize("level", ["low", "high"])
def test_robustness_levels_have_their_mean_and_variance(level):
    """The noise of the robustness benchmark (benchmarks/tables.py) on large draws: each model's mean and
    variance at its level, on a constant image where clipping barely acts (0.3: shot and speckle stay inside [0, 1])."""
    from tables import ROBUSTNESS_NOISE

    y = torch.full((1, 1, 512, 512), 0.3)
    expected = {  # name: (mean, variance) of the noisy values
        "gaussian": lambda p: (0.3, p["sigma"] ** 2),
        "poisson": lambda p: (0.3, 0.3 / p["rate"]),
        "speckle": lambda p: (0.3, (0.3 * p["sigma"]) ** 2),
        "impulse": lambda p: (p["amount"] / 2 + 0.3 * (1 - p["amount"]),  # half salt (1), half pepper (0)
                              p["amount"] / 2 + 0.09 * (1 - p["amount"]) - (p["amount"] / 2 + 0.3 * (1 - p["amount"])) ** 2),
    }
    for cell, (name, params) in ROBUSTNESS_NOISE.items():
        if not cell.endswith(level):
            continue
        noisy = build_noise(name, **params)(y, sample_generators([7]))
        mean, var = expected[name](params)
        assert abs(float(noisy.mean()) - mean) < 0.004, cell
        assert abs(float(noisy.var()) / var - 1) < 0.03, cell
