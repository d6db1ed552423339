"""How a run's samples map onto the rows a solver restores: whole images at the prior's size, or tiles of larger
images, and the slices a shard solves beside its own for a coupled volume."""

from __future__ import annotations

from dataclasses import dataclass

from priorflow.config import RunConfig
from priorflow.errors import PriorflowError, ShapeError
from priorflow.solvers.algorithms.tiling import TileGrid, default_overlap
from priorflow.solvers.physics.operators import Operator
from priorflow.storage.layout import SampleLayout, Shard


@dataclass(frozen=True)
class Geometry:
    image_shape: tuple[int, int, int]  # (C, H, W) of a restored sample
    measurement_shape: tuple[int, ...]  # of one sample's measurement
    grid: TileGrid | None  # None: samples are the prior's size
    samples_per_shard: int  # shard_size counts solver rows: a shard holds whole samples, all their tiles

    @property
    def tiles(self) -> int:
        return self.grid.count if self.grid else 1


def run_geometry(config: RunConfig, at_prior: Operator, layout: SampleLayout) -> Geometry:
    """The restored size and the tiles of the input's samples, for the run's operator built at the prior's image
    shape; errors name what does not fit."""
    prior_shape = at_prior.image_shape
    channels, side, width = prior_shape
    expected = at_prior.measurement_shape()[1:]
    sample = layout.sample_shape
    if config.coupling.weight and layout.kind == "images":
        raise PriorflowError(f"{config.input}: coupling links the slices of volumes, but this input's layout is "
                             "images (N, C, H, W); give volumes (--layout volumes or volume), or coupling weight 0")
    if config.mode == "benchmark":
        image = sample
    elif sample == expected:
        image = prior_shape
    elif at_prior.local and len(sample) == 3 and sample[0] == expected[0]:
        step = at_prior.measurement_step
        image = (channels, sample[1] * step, sample[2] * step)
    else:
        larger = "" if at_prior.local else f"; {at_prior.not_local()}"
        raise ShapeError(f"{config.input}: samples have shape {sample}, expected {expected} (measurements of "
                         f"{config.operator.name} at the prior's size{', or larger on its grid' if at_prior.local else ''}){larger}")
    if image[0] != channels:
        raise ShapeError(f"{config.input}: samples have {image[0]} channels, the prior {channels}")
    if tuple(image) == prior_shape:
        return Geometry(prior_shape, tuple(expected), None, config.shard_size)
    if image[1] < side or image[2] < width:
        raise ShapeError(f"{config.input}: samples are images of {image[1]}x{image[2]}, smaller than the prior's "
                         f"{side}x{width}; give images at least the prior's size")
    if side != width:
        raise ShapeError(f"tiles are square, but the prior's images are {side}x{width}")
    if not at_prior.local:
        raise PriorflowError(f"{config.input}: samples of {image[1]}x{image[2]} are larger than the prior's "
                             f"{side}x{width}; {at_prior.not_local()}")
    step = at_prior.measurement_step
    overlap = config.tiling.overlap
    overlap = default_overlap(side, at_prior.margin, step) if overlap is None else overlap
    grid = TileGrid.plan(image[1:], side, overlap, step)
    measurement = (expected[0], image[1] // step, image[2] // step)  # a local operator's measurement is on its grid
    return Geometry(tuple(image), measurement, grid, max(1, config.shard_size // grid.count))  # type: ignore[arg-type]


def with_halo(layout: SampleLayout, shard: Shard, halo: int) -> Shard:
    """The shard widened by `halo` slices on each side (within its volume): the context of a coupled slab."""
    if layout.kind == "images" or halo == 0:
        return shard
    depth = layout.grid[1]
    return Shard(shard.index, shard.n0, shard.n1, max(0, shard.d0 - halo), min(depth, shard.d1 + halo))
