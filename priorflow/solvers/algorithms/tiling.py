"""Images larger than the prior: overlapping tiles of the prior's size, solved as batch rows, blended back.

A local operator's measurement of a tile is the tile of the measurement (on the operator's grid: the factor's for
super-resolution), up to the operator's own border handling at the tile's edges, which differs from the whole
image's within its margin. The overlap (at least twice the margin by default) and the blending window, which gives
a tile's edge pixels little weight, hide that difference; `benchmarks/tiling.py` measures what is left of it.
Tiles are ordinary samples to a solver: each has its own seed and stops on its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from priorflow.errors import PriorflowError, ShapeError
from priorflow.solvers.algorithms.base import Callback, Solver, SolverResult
from priorflow.solvers.algorithms.coupling import DepthCoupling
from priorflow.solvers.priors.prior import DiffusionPrior
from priorflow.solvers.problem import InverseProblem

Window = Literal["cosine", "uniform"]
WINDOWS: tuple[Window, ...] = ("cosine", "uniform")


def _starts(length: int, tile: int, stride: int) -> tuple[int, ...]:
    """Tile starts along one axis: every `stride`, the last one flush with the end."""
    count = math.ceil((length - tile) / stride) + 1
    return tuple(sorted({min(i * stride, length - tile) for i in range(count)}))


def _ramp(size: int, overlap: int) -> Tensor:
    """1D blending weights: sin^2 ramps over `overlap` pixels at both ends, 1 between (never 0, so a pixel that
    only one tile covers keeps that tile's value)."""
    w = torch.ones(size, dtype=torch.float64)
    if overlap:
        ramp = torch.sin(torch.pi / 2 * (torch.arange(overlap, dtype=torch.float64) + 0.5) / overlap) ** 2
        w[:overlap] = torch.minimum(w[:overlap], ramp)
        w[size - overlap :] = torch.minimum(w[size - overlap :], ramp.flip(0))
    return w


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of an image of `height` x `width` lie: tops x lefts, each tile `tile` pixels square."""

    height: int
    width: int
    tile: int
    overlap: int
    tops: tuple[int, ...]
    lefts: tuple[int, ...]

    @classmethod
    def plan(cls, image_hw: Sequence[int], tile: int, overlap: int, step: int = 1) -> TileGrid:
        """Tiles that overlap by at least `overlap` pixels, starting on multiples of `step` (an operator's grid)."""
        height, width = (int(s) for s in image_hw)
        if height < tile or width < tile:
            raise ShapeError(f"images of {height}x{width} are smaller than the prior's {tile}x{tile}: tiles cannot "
                             "cover them; give images at least the prior's size")
        if tile % step or height % step or width % step:
            raise ShapeError(f"the tile ({tile}) and the image ({height}x{width}) must be multiples of the operator's "
                             f"grid step {step}")
        if not 0 <= overlap < tile:
            raise PriorflowError(f"tile overlap must be in [0, {tile}), got {overlap}")
        stride = max(step, (tile - overlap) // step * step)
        return cls(height, width, tile, overlap, _starts(height, tile, stride), _starts(width, tile, stride))

    @property
    def count(self) -> int:
        return len(self.tops) * len(self.lefts)

    @property
    def boxes(self) -> list[tuple[int, int]]:
        """(top, left) of every tile, row-major."""
        return [(top, left) for top in self.tops for left in self.lefts]

    def split(self, images: Tensor, scale: int = 1) -> Tensor:
        """(B, C, H/scale, W/scale) -> (B * count, C, tile/scale, tile/scale): sample-major, tiles row-major."""
        size = self.tile // scale
        tiles = [images[..., top // scale : top // scale + size, left // scale : left // scale + size]
                 for top, left in self.boxes]
        return torch.stack(tiles, 1).flatten(0, 1)

    def window(self, kind: Window) -> Tensor:
        """(tile, tile) blending weights of one tile."""
        if kind not in WINDOWS:
            raise PriorflowError(f"tile window must be one of {', '.join(WINDOWS)}, got {kind!r}")
        w = _ramp(self.tile, self.overlap if kind == "cosine" else 0)
        return torch.outer(w, w)

    def stitch(self, tiles: Tensor, kind: Window) -> Tensor:
        """(B * count, C, tile, tile) -> (B, C, H, W): each pixel the window-weighted mean of the tiles over it."""
        batch = tiles.shape[0] // self.count
        tiles = tiles.reshape(batch, self.count, *tiles.shape[1:])
        window = self.window(kind).to(tiles)
        total = tiles.new_zeros(batch, tiles.shape[2], self.height, self.width)
        weight = tiles.new_zeros(self.height, self.width)
        for i, (top, left) in enumerate(self.boxes):
            total[..., top : top + self.tile, left : left + self.tile] += tiles[:, i] * window
            weight[top : top + self.tile, left : left + self.tile] += window
        return total / weight


def default_overlap(tile: int, margin: int, step: int) -> int:
    """A quarter of the tile, or twice the operator's margin if larger but at most half the tile (more would solve
    every pixel over four times), on the operator's grid."""
    overlap = min(max(tile // 4, 2 * margin), tile // 2)
    return min(math.ceil(overlap / step) * step, tile - step)


@dataclass
class TiledResult:
    """The stitched images (B, C, H, W) and the solver's result per row: per tile (B * count rows), or per image."""

    x: Tensor
    tiles: SolverResult


def tile_problem(problem: InverseProblem, grid: TileGrid, tile_shape: Sequence[int]) -> InverseProblem:
    """The problem of every tile as batch rows: the operator on the tiles, and the tiles of the measurement."""
    operator = problem.operator
    boxes = [(sample, top, left) for sample in range(problem.batch_size) for top, left in grid.boxes]
    return InverseProblem(grid.split(problem.y, operator.measurement_step), operator.on_tiles(tile_shape, boxes))


def solve_tiled(
    solver: Solver,
    prior: DiffusionPrior,
    problem: InverseProblem,
    seeds: Sequence[int],
    grid: TileGrid | None,
    window: Window = "cosine",
    callback: Callback | None = None,
    coupling: DepthCoupling | None = None,
) -> TiledResult:
    """Restore whole images: `problem` holds whole images' measurements and an operator on whole images. With a
    `grid`, images larger than the prior are solved tile by tile: `seeds` gives each tile its seed (B * count,
    sample-major) and `coupling` links tile rows (DepthCoupling.chain with `tiles=grid.count`); without one the
    images are the prior's size and solved as they are."""
    if grid is None:
        result = solver.solve(prior, problem, seeds, callback, coupling)
        return TiledResult(result.x, result)
    tiled = tile_problem(problem, grid, prior.image_shape)
    result = solver.solve(prior, tiled, seeds, callback, coupling)
    return TiledResult(grid.stitch(result.x, window), result)
