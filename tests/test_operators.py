import pytest
import torch
from test_physics import LINEAR as PHYSICS_LINEAR

from priorflow.errors import PriorflowError, ShapeError, UnknownNameError
from priorflow.solvers import build_operator
from priorflow.solvers.physics.kernels import bicubic_matrix, motion_kernel

SHAPE = (3, 16, 16)
SEEDS = [11, 12, 13]
LINEAR = [
    ("identity", {}),
    ("super_resolution", {"factor": 4}),
    ("super_resolution", {"factor": 2, "method": "avgpool"}),
    ("inpainting", {"mask": "random", "fraction": 0.7}),
    ("inpainting", {"mask": "box", "fraction": 0.5}),
    ("gaussian_blur", {"kernel_size": 9, "sigma": 1.5}),
    ("motion_blur", {"kernel_size": 9, "intensity": 0.5, "seed": 3}),
    ("blind_blur", {"kernel_size": 8, "kernel": "motion"}),
    ("blind_blur", {"kernel_size": 7, "kernel": "gaussian", "sigma": 1.0}),
]


@pytest.mark.parametrize(("name", "params", "shape"), [(n, p, SHAPE) for n, p in LINEAR] + PHYSICS_LINEAR)
def test_adjoint(name, params, shape):
    """<Ax, y> = <x, A^T y> for every linear operator, in float64 (deepinv's autograd adjoint of the Radon
    transform is exact)."""
    op = build_operator(name, shape, SEEDS, **params)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(len(SEEDS), *shape, generator=g, dtype=torch.float64)
    ax = op(x)
    y = torch.randn(ax.shape, generator=g, dtype=torch.float64)
    lhs, rhs = (ax * y).sum(), (x * op.adjoint(y)).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-10, atol=1e-10), (lhs, rhs)


@pytest.mark.parametrize(("name", "params"), LINEAR)
def test_take_matches_full_batch(name, params):
    """A sub-batch sees exactly its own per-sample parameters (masks, kernels)."""
    op = build_operator(name, SHAPE, SEEDS, **params)
    x = torch.rand(len(SEEDS), *SHAPE)
    index = torch.tensor([2, 0])
    assert torch.equal(op.take(index)(x[index]), op(x)[index])


def test_operators_are_differentiable_and_preserve_constants():
    for name, params in LINEAR[1:]:
        if name == "inpainting":
            continue
        op = build_operator(name, SHAPE, SEEDS, **params)
        x = torch.full((3, *SHAPE), 0.5, requires_grad=True)
        y = op(x)
        y.sum().backward()
        assert x.grad is not None
        if name != "blind_blur":  # zero padding darkens the borders
            assert torch.allclose(y, torch.full_like(y, 0.5), atol=1e-5)


def test_bicubic_matrix_rows_sum_to_one_and_antialias():
    m = bicubic_matrix(256, 64)
    assert torch.allclose(m.sum(1), torch.ones(64, dtype=torch.float64))
    assert (m[32] != 0).sum() >= 16  # the x4 kernel is stretched to 16 taps


def test_random_mask_drops_the_fraction_and_depends_only_on_the_seed():
    op = build_operator("inpainting", SHAPE, [5, 6], fraction=0.7)
    missing = 1 - op.mask.mean(dim=(1, 2, 3))
    assert torch.allclose(missing, torch.tensor([int(256 * 0.7) / 256] * 2))
    alone = build_operator("inpainting", SHAPE, [6], fraction=0.7)
    assert torch.equal(alone.mask[0], op.mask[1])
    assert not torch.equal(op.mask[0], op.mask[1])


def test_motion_kernel_is_seeded_normalised_and_not_a_delta():
    a = motion_kernel(15, 0.5, torch.Generator().manual_seed(1))
    b = motion_kernel(15, 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert torch.isclose(a.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert (a >= 0).all() and a.max() < 0.5


def test_spec_rebuilds_the_same_operator():
    op = build_operator("motion_blur", SHAPE, SEEDS, kernel_size=9, intensity=0.3, seed=4)
    spec = op.spec()
    again = build_operator(spec.pop("name"), SHAPE, SEEDS, **spec)
    assert torch.equal(op.kernel, again.kernel)


def test_bad_operator_input_is_named():
    with pytest.raises(UnknownNameError, match="unknown operator 'deblurr'.*gaussian_blur"):
        build_operator("deblurr", SHAPE, SEEDS)
    with pytest.raises(PriorflowError, match="factor 3 must divide"):
        build_operator("super_resolution", SHAPE, SEEDS, factor=3)
    with pytest.raises(PriorflowError, match="bad parameters for operator 'gaussian_blur'"):
        build_operator("gaussian_blur", SHAPE, SEEDS, radius=3)
    with pytest.raises(PriorflowError, match="kernel_size 61"):
        build_operator("gaussian_blur", SHAPE, SEEDS)  # DPS's 61 px kernel on a 16 px image
    op = build_operator("super_resolution", SHAPE, SEEDS)
    with pytest.raises(ShapeError, match=r"expects images of shape \(B, 3, 16, 16\)"):
        op(torch.zeros(1, 1, 16, 16))
    with pytest.raises(PriorflowError, match="no kernel"):
        build_operator("blind_blur", SHAPE, SEEDS, kernel_size=5)(torch.zeros(1, *SHAPE))
