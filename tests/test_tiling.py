"""Images larger than the prior: the tile grid, the blending, operators on tiles, and solving in tiles."""

import pytest
import torch

from priorflow.errors import PriorflowError, ShapeError
from priorflow.solvers import InverseProblem, build_noise, build_operator, build_solver, sample_generators
from priorflow.solvers.algorithms.tiling import TileGrid, default_overlap, solve_tiled, tile_problem

SIZES = [(16, 16), (37, 53), (16, 40), (64, 64)]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("overlap", [0, 3, 8])
def test_tiles_cover_every_pixel_and_weights_sum_to_one(size, overlap):
    grid = TileGrid.plan(size, 16, overlap)
    covered = torch.zeros(size)
    for top, left in grid.boxes:
        covered[top : top + 16, left : left + 16] += 1
        assert top + 16 <= size[0] and left + 16 <= size[1]
    assert (covered >= 1).all()
    for window in ("cosine", "uniform"):
        per_tile = torch.stack([torch.zeros(size, dtype=torch.float64).index_put_(
            (torch.arange(t, t + 16)[:, None], torch.arange(l, l + 16)[None]), grid.window(window)) for t, l in grid.boxes])
        normalised = per_tile / per_tile.sum(0)
        assert torch.allclose(normalised.sum(0), torch.ones(size, dtype=torch.float64))


@pytest.mark.parametrize("size", SIZES)
def test_split_then_stitch_gives_the_image_back_and_a_constant_stays_constant(size):
    grid = TileGrid.plan(size, 16, 5)
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for window in ("cosine", "uniform"):
        assert torch.allclose(grid.stitch(grid.split(x), window), x)
        constant = torch.full((2 * grid.count, 3, 16, 16), 0.37, dtype=torch.float64)
        assert torch.allclose(grid.stitch(constant, window), torch.full((2, 3, *size), 0.37, dtype=torch.float64))


def test_tiles_lie_on_the_operators_grid_and_the_overlap_respects_the_margin():
    grid = TileGrid.plan((68, 44), 16, 6, step=4)
    assert all(t % 4 == 0 for t in grid.tops) and all(l % 4 == 0 for l in grid.lefts)
    assert grid.tops[-1] == 68 - 16 and grid.lefts[-1] == 44 - 16
    assert default_overlap(16, margin=3, step=1) == 6 and default_overlap(16, margin=8, step=4) == 8
    assert default_overlap(256, margin=3, step=1) == 64
    with pytest.raises(ShapeError, match="multiples of the operator's grid step 4"):
        TileGrid.plan((66, 44), 16, 4, step=4)


def test_an_image_smaller_than_the_prior_and_a_bad_overlap_are_refused():
    with pytest.raises(ShapeError, match="smaller than the prior's 16x16"):
        TileGrid.plan((12, 40), 16, 4)
    with pytest.raises(PriorflowError, match="overlap must be in"):
        TileGrid.plan((40, 40), 16, 16)
    with pytest.raises(PriorflowError, match="window must be one of"):
        TileGrid.plan((40, 40), 16, 4).window("hann")  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "params"), [
    ("identity", {}), ("inpainting", {"mask": "random", "fraction": 0.5}), ("gaussian_blur", {"kernel_size": 5, "sigma": 1.0}),
    ("super_resolution", {"factor": 2}), ("super_resolution", {"factor": 2, "method": "avgpool"}),
])
def test_the_measurement_of_a_tile_is_the_tile_of_the_measurement_away_from_tile_edges(name, params):
    seeds = [4, 9]
    op = build_operator(name, (1, 40, 36), seeds, **params)
    x = torch.rand(2, 1, 40, 36, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grid = TileGrid.plan((40, 36), 16, default_overlap(16, op.margin, op.measurement_step), op.measurement_step)
    tiled = tile_problem(InverseProblem(op(x), op), grid, (1, 16, 16))
    fitted = tiled.operator(grid.split(x))
    m = -(-op.margin // op.measurement_step)  # measurement pixels within the margin of a tile's edge
    inner = (slice(None), slice(None), slice(m, fitted.shape[-2] - m), slice(m, fitted.shape[-1] - m))
    assert torch.allclose(fitted[inner], tiled.y[inner])
    if op.margin == 0:
        assert torch.allclose(fitted, tiled.y)


def test_a_non_local_operator_refuses_tiles():
    op = build_operator("blind_blur", (1, 32, 32), [0], kernel_size=5, kernel="gaussian", sigma=1.0)
    with pytest.raises(PriorflowError, match="blind_blur is not local"):
        op.on_tiles((1, 16, 16), [(0, 0, 0)])


def _tiled_problem(prior, seeds, size=(13, 11)):
    x = torch.rand(len(seeds), *prior.image_shape[:1], *size, generator=torch.Generator().manual_seed(0))
    op = build_operator("inpainting", (prior.image_shape[0], *size), seeds, fraction=0.5)
    y = build_noise("gaussian", sigma=0.05)(op(x), sample_generators(seeds))
    return InverseProblem(y, op)


@pytest.mark.parametrize("name", ["dmplug", "mpgd"])
def test_tiles_solve_as_batch_rows_and_a_sample_alone_equals_it_in_a_batch(tiny_prior, name):
    options = {"dmplug": {"max_iters": 10, "stopping": {"rule": "es_wmv", "window": 3, "patience": 2}},
               "mpgd": {"steps": 5, "scale": 0.5}}[name]
    solver = build_solver(name, **options)
    grid = TileGrid.plan((13, 11), 8, 3)
    problem = _tiled_problem(tiny_prior, [2, 5])
    seeds = list(range(100, 100 + 2 * grid.count))
    both = solve_tiled(solver, tiny_prior, problem, seeds, grid)
    assert both.x.shape == (2, 1, 13, 11) and len(both.tiles.stop_reason) == 2 * grid.count
    index = torch.tensor([1])
    alone = solve_tiled(solver, tiny_prior, InverseProblem(problem.y[index], problem.operator.take(index)),
                        seeds[grid.count :], grid)
    assert torch.allclose(alone.x[0], both.x[1], atol=1e-4)
    assert torch.equal(alone.tiles.iterations, both.tiles.iterations[grid.count :])
