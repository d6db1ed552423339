"""OME-Zarr (NGFF 0.5) multiscale metadata and downsampled levels for `restored`, so napari and other NGFF readers
open an output group directly. Pure numpy: the output group (priorflow.storage.outputs) creates and writes them.

Level 0 is `restored` itself; levels 1 and 2 (`levels/1/restored`, `levels/2/restored`) halve y and x (2x2 mean),
each made only while its smaller side keeps at least MIN_SIDE pixels. Every level has `restored`'s leading chunking,
so a shard writes its own chunk of each level from its block alone. NGFF 0.5 requires every level's dimension names
to be the axis names, so the levels reuse `restored`'s names at other sizes of y and x: each is in a group of its own
so that every group is still one consistent xarray dataset (xarray.open_groups), but xarray.open_datatree, which
requires a child group's dimensions to match its parents' sizes, cannot open the whole output group any more.

Axes follow NGFF 0.5: 2 or 3 space axes last, before them at most one time axis (first) and at most one channel or
custom axis. Axis names are the arrays' dimension names, because NGFF 0.5 requires them to match:
    volume  (D, H, W)     slice, y, x             all space (slice is z)
    volumes (N, D, H, W)  volume, slice, y, x     volume is a custom axis (type "index"), the others space
    images  (N, C, H, W)  sample, channel, y, x   sample is typed "time": NGFF has no axis type for a stack of
                                                   independent samples, and with a channel axis present a custom one
                                                   is not allowed, so "time" (no unit) is the only valid choice.
Pixel size is 1 (no unit): a run's configuration gives none.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from priorflow.errors import PriorflowError

IMAGE = "restored"
MAX_LEVELS = 2
MIN_SIDE = 4
LEVEL_ARRAYS = tuple(f"levels/{k}/{IMAGE}" for k in range(1, MAX_LEVELS + 1))
"""Every level array priorflow may write (outputs.OWN_ARRAYS lists them, so --overwrite deletes them)."""
AXIS_TYPES: dict[str, tuple[str, ...]] = {
    "images": ("time", "channel", "space", "space"),
    "volumes": ("index", "space", "space", "space"),
    "volume": ("space", "space", "space"),
}


def level_path(level: int) -> str:
    return IMAGE if level == 0 else LEVEL_ARRAYS[level - 1]


def level_shapes(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Shapes of levels 1, 2, ... of an array or block of `shape`: y and x halved, rounded up (see downsample)."""
    shapes: list[tuple[int, ...]] = []
    height, width = shape[-2:]
    for _ in range(MAX_LEVELS):
        height, width = -(-height // 2), -(-width // 2)
        if min(height, width) < MIN_SIDE:
            break
        shapes.append((*shape[:-2], height, width))
    return shapes


def downsample(block: np.ndarray) -> np.ndarray:
    """2x2 mean over the last two axes. An odd last row or column is padded with a copy of itself, so its pixels
    are the mean of the pixels it has: the level keeps the whole extent instead of cropping it."""
    height, width = block.shape[-2:]
    padded = np.pad(block, [(0, 0)] * (block.ndim - 2) + [(0, height % 2), (0, width % 2)], mode="edge")
    quads = padded.reshape(*padded.shape[:-2], padded.shape[-2] // 2, 2, padded.shape[-1] // 2, 2)
    return quads.mean(axis=(-3, -1)).astype(block.dtype, copy=False)


def pyramid(block: np.ndarray) -> list[np.ndarray]:
    """Levels 1, 2, ... of a block of `restored` (any leading shape), each from the one before."""
    levels = []
    for _ in level_shapes(block.shape):
        block = downsample(block)
        levels.append(block)
    return levels


def multiscales(kind: str, dims: tuple[str, ...], levels: int) -> dict[str, Any]:
    """The group's "ome" attribute: one multiscale image of `levels` levels beyond `restored`, whose dimension
    names are `dims`.

    Level k's scale is 2^k in y and x (1 elsewhere); its translation (2^k - 1) / 2 puts each pixel at the centre of
    the level-0 pixels it averages, so levels overlay exactly in a viewer.
    """
    types = AXIS_TYPES.get(kind)
    if types is None or len(types) != len(dims):
        raise PriorflowError(f"no NGFF axes for a {kind} layout with dimensions {dims}")
    leading = [1.0] * (len(dims) - 2)
    datasets = []
    for k in range(levels + 1):
        transforms: list[dict[str, Any]] = [{"type": "scale", "scale": [*leading, 2.0**k, 2.0**k]}]
        if k:
            shift = (2**k - 1) / 2
            transforms.append({"type": "translation", "translation": [0.0] * len(leading) + [shift, shift]})
        datasets.append({"path": level_path(k), "coordinateTransformations": transforms})
    return {
        "version": "0.5",
        "multiscales": [{
            "name": IMAGE,
            "axes": [{"name": name, "type": axis_type} for name, axis_type in zip(dims, types, strict=True)],
            "datasets": datasets,
            "type": "mean",
            "metadata": {"description": "2x2 mean in y and x; an odd last row or column is the mean of its own pixels",
                         "method": "priorflow.storage.ngff.downsample"},
        }],
    }
