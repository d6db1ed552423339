"""Operators over deepinv's physics (ct, mri) and DPS's phase retrieval, and their classical baselines."""

import pytest
import torch
from tables import PHYSICS_TASKS, classical_baseline, simulate

from priorflow.datasets import load_digits
from priorflow.errors import PriorflowError, ShapeError
from priorflow.solvers import InverseProblem, build_operator
from priorflow.solvers.metrics import psnr

SEEDS = [11, 12, 13]
LINEAR = [
    ("ct", {"angles": 8}, (1, 16, 16)),
    ("ct", {"angles": 5, "detector_pixels": 16}, (3, 16, 16)),
    ("mri", {"acceleration": 4, "center_fraction": 0.125}, (1, 16, 16)),
    ("mri", {"acceleration": 2, "center_fraction": 0.25}, (3, 16, 12)),
]
ALL = LINEAR + [("phase_retrieval", {"oversample": 2.0}, (1, 16, 16))]


@pytest.mark.parametrize(("name", "params", "shape"), ALL)
def test_spec_rebuilds_take_and_shapes(name, params, shape):
    op = build_operator(name, shape, SEEDS, **params)
    x = torch.rand(len(SEEDS), *shape, requires_grad=True)
    y = op(x)
    assert tuple(y.shape) == op.measurement_shape(len(SEEDS))
    InverseProblem(y.detach(), op)
    spec = op.spec()
    assert torch.equal(build_operator(spec.pop("name"), shape, SEEDS, **spec)(x), y)
    index = torch.tensor([2, 0])
    assert torch.equal(op.take(index)(x[index]), y[index])
    y.sum().backward()  # the solvers differentiate through A
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_measurement_shapes():
    shapes = {
        ("ct", 8, None): (2, 3, 23, 8), ("ct", 8, 16): (2, 3, 16, 8),  # 23 = 16 + ceil((sqrt(2) - 1) 16)
    }
    for (_, angles, detector), expected in shapes.items():
        assert build_operator("ct", (3, 16, 16), [0, 1], angles=angles, detector_pixels=detector)(torch.rand(2, 3, 16, 16)).shape == expected
    assert build_operator("mri", (3, 16, 16), [0, 1], acceleration=4).measurement_shape(2) == (2, 6, 16, 4)
    assert build_operator("phase_retrieval", (3, 16, 16), [0, 1]).measurement_shape(2) == (2, 3, 24, 24)


def test_ct_is_deepinvs_clean_radon_transform_over_the_width():
    from deepinv.physics import Tomography

    op = build_operator("ct", (1, 16, 16), SEEDS, angles=8)
    x = torch.rand(len(SEEDS), 1, 16, 16)
    reference = Tomography(angles=8, img_width=16, normalize=False).A(x) / 16
    assert torch.allclose(op(x), reference)
    physics = op.physics(x)
    assert torch.equal(physics(x), physics.A(x))  # its noise and sensor are off
    assert torch.equal(op(x), op(x))


def test_mri_is_deepinvs_clean_fft_on_the_sampled_columns():
    from deepinv.physics import MRI

    op = build_operator("mri", (1, 16, 16), SEEDS, acceleration=4, center_fraction=0.125)
    x = torch.rand(len(SEEDS), 1, 16, 16)
    mask = torch.zeros(len(SEEDS), 1, 16, 16)
    for i, columns in enumerate(op.samples["column"]):
        mask[i, ..., columns] = 1.0
    full = MRI(mask=mask, img_size=(16, 16)).A(torch.cat([x, torch.zeros_like(x)], 1))
    y = op(x)
    for i, columns in enumerate(op.samples["column"]):
        assert torch.allclose(y[i], full[i][..., columns])
    physics = op.physics(x)
    assert torch.equal(physics(op.encode(x)), physics.A(op.encode(x)))


def test_mri_masks_come_from_each_samples_seed():
    op = build_operator("mri", (1, 16, 16), [5, 6, 7], acceleration=4, center_fraction=0.125)
    columns = op.samples["column"]
    assert columns.shape == (3, 4)  # 16 // 4 columns per sample
    assert all({7, 8} <= set(c.tolist()) for c in columns)  # int(0.125 * 16) = 2 central columns (DC at 8)
    assert len({tuple(c.tolist()) for c in columns}) > 1
    alone = build_operator("mri", (1, 16, 16), [6], acceleration=4, center_fraction=0.125)
    assert torch.equal(alone.samples["column"][0], columns[1])
    x = torch.rand(3, 1, 16, 16)
    assert torch.equal(alone(x[1:2]), op(x)[1:2])


def test_phase_retrieval_is_the_magnitude_of_the_centred_fft_of_the_padded_image():
    op = build_operator("phase_retrieval", (1, 16, 16), SEEDS)
    x = torch.rand(2, 1, 16, 16, dtype=torch.float64)
    padded = torch.zeros(2, 1, 24, 24, dtype=torch.float64)
    padded[..., 4:20, 4:20] = x  # DPS: int(oversample / 8 * size) = 4 zeros per side
    dims = (-2, -1)
    reference = torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(padded, dim=dims), norm="ortho"), dim=dims).abs()
    assert torch.allclose(op(x), reference)
    assert torch.allclose(op(x).pow(2).sum(dims), x.pow(2).sum(dims))  # orthonormal: Parseval
    assert not op.linear
    with pytest.raises(NotImplementedError, match="not linear"):
        op.adjoint(reference)


def test_bad_parameters_are_named():
    shape = (1, 16, 16)
    cases = [
        ("ct", {"angles": 0}, "ct angles must be an integer >= 1"),
        ("ct", {"detector_pixels": 20}, "ct detector_pixels must be 23 .* or 16"),
        ("mri", {"acceleration": 0}, "mri acceleration must be an integer between 1"),
        ("mri", {"acceleration": 4, "center_fraction": 0.5}, r"center_fraction must be in \[0, 1/acceleration\]"),
        ("mri", {"center_fraction": -0.1}, "center_fraction must be in"),
        ("phase_retrieval", {"oversample": -1}, "oversample must be a number >= 0"),
        ("ct", {"angle": 8}, "bad parameters for operator 'ct'"),
    ]
    for name, params, message in cases:
        with pytest.raises(PriorflowError, match=message):
            build_operator(name, shape, SEEDS, **params)
    with pytest.raises(PriorflowError, match="ct needs square images"):
        build_operator("ct", (1, 16, 12), SEEDS)
    with pytest.raises(ShapeError, match="mri holds columns for 3 samples, got a batch of 2"):
        build_operator("mri", shape, SEEDS)(torch.zeros(2, *shape))


@pytest.mark.parametrize("task", list(PHYSICS_TASKS))
def test_baselines_beat_a_trivial_guess(task):
    """Each classical baseline beats the mean image (ct, mri) or zeros (phase retrieval: defined up to shifts and
    a 180-degree rotation that PSNR counts as errors) on held-out digits."""
    x = load_digits("test", 16)[0][:8]
    seeds = list(range(8))
    problem = simulate(task, x, seeds)
    restored = classical_baseline(task, problem.y, problem.operator)
    assert restored.shape == x.shape and restored.min() >= 0 and restored.max() <= 1
    trivial = torch.zeros_like(x) if task == "phase_retrieval" else torch.full_like(x, float(x.mean()))
    assert psnr(restored, x).mean() > psnr(trivial, x).mean() + 1.0
    assert torch.equal(classical_baseline(task, problem.y, problem.operator), restored)  # deterministic
