"""Reading input datasets: a Zarr array of images or volumes, uint8/uint16 or float in [0, 1]."""

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


@dataclass
class InputDataset:
    url: str
    array: zarr.Array
    layout: SampleLayout

    def read(self, shard: Shard) -> Tensor:
        """The shard's samples as (b, C, h, w) float32 in [0, 1]; NaN or out-of-range values are an error."""
        block = np.asarray(self.array[self.layout.index(shard)])
        return torch.from_numpy(self.layout.to_samples(to_unit_range(block, f"{self.url} shard {shard.index}")))


def to_unit_range(block: np.ndarray, where: str) -> np.ndarray:
    if np.issubdtype(block.dtype, np.unsignedinteger):
        return (block.astype(np.float32) / np.iinfo(block.dtype).max).astype(np.float32)
    if not np.issubdtype(block.dtype, np.floating):
        raise PriorflowError(f"{where}: unsupported dtype {block.dtype}; use uint8, uint16 or floats in [0, 1]")
    if not np.isfinite(block).all():
        raise PriorflowError(f"{where}: contains NaN or infinite values")
    low, high = float(block.min()), float(block.max())
    if low < -1e-6 or high > 1 + 1e-6:
        raise PriorflowError(f"{where}: float values must be in [0, 1], found {low:.4g}..{high:.4g}")
    return np.clip(block, 0.0, 1.0).astype(np.float32)


def open_input(url: str, channels: int, kind: Kind | None = None) -> InputDataset:
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
        raise PriorflowError(f"{url}: unsupported dtype {node.dtype}; use uint8, uint16 or floats in [0, 1]")
    try:
        layout = SampleLayout.infer(tuple(node.shape), channels, kind or node.attrs.get(LAYOUT_ATTRIBUTE))
    except ShapeError as exc:
        raise ShapeError(f"{url}: {exc}") from exc
    return InputDataset(url, node, layout)
