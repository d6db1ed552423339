"""How an array of images or volumes maps onto the 2D samples a prior restores, and onto shards.

Layouts: `images` (N, C, H, W); `volumes` (N, D, H, W), each slice a 1-channel sample; `volume` (D, H, W), one
volume. A shard is a run of samples that is exactly one chunk of every output array, so concurrent workers
never write the same object.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from priorflow.errors import PriorflowError, ShapeError

Kind = Literal["images", "volumes", "volume"]
KINDS: tuple[Kind, ...] = ("images", "volumes", "volume")


@dataclass(frozen=True)
class Shard:
    """Samples (n, d) for n in [n0, n1) and d in [d0, d1) of a layout; `index` numbers the shard."""

    index: int
    n0: int
    n1: int
    d0: int
    d1: int

    @property
    def size(self) -> int:
        return (self.n1 - self.n0) * (self.d1 - self.d0)


@dataclass(frozen=True)
class SampleLayout:
    kind: Kind
    shape: tuple[int, ...]

    @classmethod
    def infer(cls, shape: tuple[int, ...], channels: int, kind: Kind | None = None) -> SampleLayout:
        """The layout of an input array for a prior with `channels`; `kind` (e.g. from attributes) wins."""
        if kind is None:
            if len(shape) == 3:
                kind = "volume"
            elif len(shape) == 4 and shape[1] == channels:
                kind = "images"
            elif len(shape) == 4:
                raise ShapeError(
                    f"shape {shape} is not (N, C, H, W) images for this {channels}-channel prior (axis 1 has "
                    f"{shape[1]}); if it holds (N, D, H, W) volumes, say so with --layout volumes (layout: volumes)"
                )
            else:
                raise ShapeError(f"input arrays must be (N, C, H, W), (N, D, H, W) or (D, H, W); got shape {shape}")
        if kind not in KINDS:
            raise PriorflowError(f"unknown layout {kind!r}; choose one of {', '.join(KINDS)}")
        expected_ndim = 3 if kind == "volume" else 4
        if len(shape) != expected_ndim:
            raise ShapeError(f"a {kind} array has {expected_ndim} dimensions, got shape {shape}")
        if kind == "images" and shape[1] != channels:
            raise ShapeError(f"images have {shape[1]} channels, the prior expects {channels}")
        if min(shape[-2:]) < 1 or 0 in shape:
            raise ShapeError(f"the input array is empty: shape {shape}")
        if kind != "images" and channels != 1:
            raise ShapeError(f"{kind} are restored slice by slice, which needs a 1-channel prior (this one has {channels})")
        return cls(kind, tuple(int(s) for s in shape))

    def with_sample_shape(self, sample_shape: tuple[int, int, int]) -> SampleLayout:
        """The same samples at another size, e.g. restored images from low-resolution measurements."""
        channels, height, width = sample_shape
        trailing = (channels, height, width) if self.kind == "images" else (height, width)
        return SampleLayout(self.kind, (*self.leading, *trailing))

    @property
    def leading(self) -> tuple[int, ...]:
        """Shape of the per-sample grid: (N,), (N, D) or (D,)."""
        return {"images": self.shape[:1], "volumes": self.shape[:2], "volume": self.shape[:1]}[self.kind]

    @property
    def leading_dims(self) -> tuple[str, ...]:
        """Dimension names of the per-sample grid, as output arrays record them."""
        return {"images": ("sample",), "volumes": ("volume", "slice"), "volume": ("slice",)}[self.kind]

    @property
    def trailing_dims(self) -> tuple[str, ...]:
        """Dimension names of one sample in this layout: (channel, y, x) for images, (y, x) for slices."""
        return ("channel", "y", "x") if self.kind == "images" else ("y", "x")

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        if self.kind == "images":
            return tuple(self.shape[1:])  # type: ignore[return-value]
        return (1, *self.shape[-2:])  # type: ignore[return-value]

    @property
    def grid(self) -> tuple[int, int]:
        """(N, D): samples are (n, d) pairs."""
        return {"images": (self.shape[0], 1), "volumes": self.shape[:2], "volume": (1, self.shape[0])}[self.kind]  # type: ignore[return-value]

    @property
    def num_samples(self) -> int:
        n, d = self.grid
        return n * d

    def leading_chunks(self, shard_size: int) -> tuple[int, ...]:
        return {"images": (shard_size,), "volumes": (1, shard_size), "volume": (shard_size,)}[self.kind]

    def plan(self, shard_size: int) -> list[Shard]:
        if shard_size < 1:
            raise PriorflowError(f"shard_size must be at least 1, got {shard_size}")
        n_total, d_total = self.grid
        if self.kind == "images":
            return [Shard(i, n, min(n + shard_size, n_total), 0, 1) for i, n in enumerate(range(0, n_total, shard_size))]
        boxes = [(n, d) for n in range(n_total) for d in range(0, d_total, shard_size)]
        return [Shard(i, n, n + 1, d, min(d + shard_size, d_total)) for i, (n, d) in enumerate(boxes)]

    def index(self, shard: Shard) -> tuple[slice | int, ...]:
        """Where the shard's samples sit in any array whose leading dimensions are this layout's."""
        if self.kind == "images":
            return (slice(shard.n0, shard.n1),)
        if self.kind == "volumes":
            return (shard.n0, slice(shard.d0, shard.d1))
        return (slice(shard.d0, shard.d1),)

    def pending(self, shards: list[Shard], done: np.ndarray) -> list[Shard]:
        """The part of each shard still to solve, given per-sample `done` flags (leading shape).

        Results are marked done shard by shard and inputs only grow at the end, so what is left of a shard is a
        tail of it: the samples an earlier run wrote are never solved again.
        """
        pending = []
        for shard in shards:
            undone = np.flatnonzero(~done[self.index(shard)].ravel())
            if undone.size == 0:
                continue
            first = int(undone[0])
            pending.append(replace(shard, n0=shard.n0 + first) if self.kind == "images" else replace(shard, d0=shard.d0 + first))
        return pending

    def sample_ids(self, shard: Shard) -> list[int]:
        """Flat sample numbers n * D + d: they seed each sample, whatever the sharding."""
        d_total = self.grid[1]
        return [n * d_total + d for n in range(shard.n0, shard.n1) for d in range(shard.d0, shard.d1)]

    def to_samples(self, block: np.ndarray) -> np.ndarray:
        """An array block of a shard (restored layout) to (b, C, H, W)."""
        return block if self.kind == "images" else block[:, None]

    def from_samples(self, samples: np.ndarray) -> np.ndarray:
        """(b, C, H, W) samples to the block of the shard in the array's own layout."""
        return samples if self.kind == "images" else samples[:, 0]
