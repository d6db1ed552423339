"""Reading input datasets: a Zarr array of images or volumes (uint8/uint16, or floats in [0, 1]), or of
measurements (uint8/uint16, or any finite floats: noise legitimately leaves [0, 1])."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import zarr
from torch import Tensor

from priorflow.errors import PriorflowError, ShapeError
from priorflow.storage.layout import Kind, SampleLayout, Shard
from priorflow.storage.urls import StorageError, describe_storage_error, normalize_url, open_store

LAYOUT_ATTRIBUTE = "priorflow_layout"
SAMPLE_DATA = "priorflow sample data"  # the `written_by` of arrays `priorflow sample-data` writes: clean images


SCAN_ELEMENTS = 2**26  # inputs up to this size (256 MB of float32) are checked whole before a run starts


@dataclass
class InputDataset:
    url: str
    array: zarr.Array
    layout: SampleLayout
    measurements: bool = False  # measured data: floats need not lie in [0, 1]

    @property
    def clean_images(self) -> bool:
        """Whether the array says it holds clean images (`priorflow sample-data` writes such arrays)."""
        return self.array.attrs.get("written_by") == SAMPLE_DATA

    def read(self, shard: Shard) -> Tensor:
        """The shard's samples as (b, C, h, w) float32; NaN, infinite or (for images) out-of-range values are an error."""
        block = np.asarray(self.array[self.layout.index(shard)])
        return torch.from_numpy(self.layout.to_samples(self.to_float(block, f"{self.url} shard {shard.index}")))

    def to_float(self, block: np.ndarray, where: str) -> np.ndarray:
        """uint8/uint16 scaled to [0, 1]; floats checked: finite, and in [0, 1] unless they are measurements."""
        if np.issubdtype(block.dtype, np.unsignedinteger):
            return (block.astype(np.float32) / np.iinfo(block.dtype).max).astype(np.float32)
        bad = ~np.isfinite(block)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise PriorflowError(f"{where}: {int(bad.sum())} NaN or infinite values (the first at index {first} of the block)")
        if self.measurements:
            return block.astype(np.float32)
        low, high = float(block.min()), float(block.max())
        if low < -1e-6 or high > 1 + 1e-6:
            raise PriorflowError(f"{where}: images as floats must be in [0, 1], found {low:.4g}..{high:.4g}")
        return np.clip(block, 0.0, 1.0).astype(np.float32)

    def check_values(self, budget: int | None = None) -> None:
        """Check the values before any work starts: the whole input when it is at most `budget` (SCAN_ELEMENTS)
        elements, else its first and last chunks (each shard is checked again when a worker reads it)."""
        budget = SCAN_ELEMENTS if budget is None else budget
        step = self.array.chunks[0]
        starts = list(range(0, self.array.shape[0], step))
        if self.array.size > budget:
            starts = sorted({starts[0], starts[-1]})
        for start in starts:
            where = f"{self.url}[{start}:{start + step}]"
            try:
                block = np.asarray(self.array[start : start + step])
            except Exception as exc:  # noqa: BLE001 - a corrupt chunk or a storage failure: say where
                raise describe_storage_error(where, exc) from exc
            self.to_float(block, where)


def open_input(url: str, channels: int, kind: Kind | None = None, measurements: bool = False) -> InputDataset:
    """Open an input array; the layout comes from `kind`, the array's `priorflow_layout` attribute, or its shape."""
    url = normalize_url(url)
    try:
        node = zarr.open(store=open_store(url, read_only=True), mode="r")
    except FileNotFoundError as exc:
        raise StorageError(f"no Zarr array at {url}") from exc
    except Exception as exc:  # noqa: BLE001 - fsspec backends raise many types; report them clearly
        raise describe_storage_error(url, exc) from exc
    if not isinstance(node, zarr.Array):
        names = ", ".join(sorted(node.array_keys())) or "none"
        raise StorageError(f"{url} is a Zarr group, not an array (arrays in it: {names}); give the array's URL")
    if not (np.issubdtype(node.dtype, np.unsignedinteger) or np.issubdtype(node.dtype, np.floating)):
        raise PriorflowError(f"{url}: unsupported dtype {node.dtype}; use uint8, uint16 or floats")
    try:
        layout = SampleLayout.infer(tuple(node.shape), channels, kind or node.attrs.get(LAYOUT_ATTRIBUTE))
    except ShapeError as exc:
        raise ShapeError(f"{url}: {exc}") from exc
    return InputDataset(url, node, layout, measurements)
