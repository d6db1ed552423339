"""The output group of a restoration run, written shard by shard so that a run can resume and never lies.

    restored        the input's layout at the prior's size, float32 in [0, 1]
    latents         leading + (C, H, W): each sample's final latent (DMPlug's z*, the last x_t otherwise)
    trace           leading + (S, C, H, W): latent snapshots every k steps (NaN after a sample stopped)
    measurement     leading + measurement shape (benchmark mode)
    ground_truth    as restored (benchmark mode)
    metrics/*       leading: psnr, ssim, lpips (benchmark mode), iterations, stop_reason (code), seconds, nfe
    levels/k/restored  restored at 1/2, 1/4 size in y and x (k = 1, 2): its OME-Zarr levels (priorflow.storage.ngff)
    _done           leading: 1 once every array of the sample is written, the last write of a shard

Every array is chunked so that one shard is one chunk (one object), so concurrent workers never write the same
object. Every array carries dimension names, so xarray opens the group; the "ome" attribute makes it an OME-Zarr
image of `restored` for napari and other NGFF readers. Attributes record the whole run configuration and its
fingerprint; a run with another configuration is refused unless told to overwrite, which deletes only these arrays.
The writer lease is beside the group (priorflow.storage.lease). An input that grew by appending samples (along its
first axis) grows the group: the arrays are resized, what is already restored stays as it is, and only the new
samples are pending.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr
from zarr.errors import GroupNotFoundError

from priorflow.errors import PriorflowError
from priorflow.storage import ngff
from priorflow.storage.layout import SampleLayout, Shard
from priorflow.storage.location import RUN_ATTRIBUTE, inspect_output
from priorflow.storage.urls import describe_storage_error, normalize_url, open_store

SUMMARY_ATTRIBUTE = "priorflow_summary"
NGFF_ATTRIBUTE = "ome"
PER_SAMPLE_METRICS = {"psnr": "f8", "ssim": "f8", "lpips": "f8", "iterations": "i8", "stop_reason": "i1", "seconds": "f8", "nfe": "i8"}
OWN_ARRAYS = ("restored", "latents", "trace", "measurement", "ground_truth",
              *(f"metrics/{m}" for m in PER_SAMPLE_METRICS), *ngff.LEVEL_ARRAYS, "_done")
"""Every array priorflow writes into an output group: the only ones a run with --overwrite ever deletes."""

SameRun = Callable[[dict[str, Any]], bool]
"""Whether a group's run record describes the run at hand (its fingerprint, or an older spelling of the same)."""


class RunConflict(PriorflowError):
    """The output holds another run's results, or another run is writing it now."""


@dataclass(frozen=True)
class ArraySpec:
    """An output array: its per-sample trailing shape, dimension names (for xarray and NGFF readers) and dtype."""

    trailing: tuple[int, ...]
    dims: tuple[str, ...]
    dtype: str
    fill: float | int


class OutputGroup:
    def __init__(self, url: str, group: zarr.Group) -> None:
        self.url, self.group = url, group

    @classmethod
    def open(cls, url: str, read_only: bool = True) -> OutputGroup:
        url = normalize_url(url)
        try:
            node = zarr.open(store=open_store(url, read_only=read_only), mode="r" if read_only else "r+")
        except (FileNotFoundError, GroupNotFoundError) as exc:
            raise PriorflowError(f"no priorflow output group at {url}") from exc
        except Exception as exc:  # noqa: BLE001
            raise describe_storage_error(url, exc) from exc
        if not isinstance(node, zarr.Group):
            raise PriorflowError(f"{url} is a Zarr array, not a priorflow output group")
        if RUN_ATTRIBUTE not in node.attrs:
            raise PriorflowError(f"{url} is a Zarr group that priorflow did not write (no {RUN_ATTRIBUTE} attribute)")
        return cls(url, node)

    @classmethod
    def prepare(
        cls,
        url: str,
        layout: SampleLayout,
        shard_size: int,
        arrays: dict[str, ArraySpec],
        run: dict[str, Any],
        *,
        input_url: str | None = None,
        overwrite: bool = False,
        same_run: SameRun | None = None,
    ) -> OutputGroup:
        """Create the group, or reopen it to resume the same run (`same_run` of its record; by default, the same
        fingerprint). The caller holds the lease.

        Only a new location or a priorflow group is ever used (priorflow.storage.location). A group holding another
        configuration's results is refused unless `overwrite`, which deletes only priorflow's own arrays; one that
        holds no finished sample yet (a run that failed before any result) is simply taken over. The same run
        recorded under an older fingerprint gets this run's record, so that it is found by the fingerprint from now on.
        """
        url = normalize_url(url)
        same_run = same_run or _same_fingerprint(run["fingerprint"])
        found = cls.check(url, input_url, run["fingerprint"], overwrite, same_run)
        try:
            if found is None:
                group = zarr.create_group(store=open_store(url), attributes={RUN_ATTRIBUTE: run})
            else:
                group = zarr.open_group(store=open_store(url), mode="r+")
        except Exception as exc:  # noqa: BLE001
            if isinstance(exc, PriorflowError):
                raise
            raise describe_storage_error(url, exc) from exc
        output = cls(url, group)
        existing = group.attrs[RUN_ATTRIBUTE]
        leading_chunks = layout.leading_chunks(shard_size)
        if not same_run(existing):
            output._delete_own_arrays()
            for attribute in (SUMMARY_ATTRIBUTE, NGFF_ATTRIBUTE):
                if attribute in group.attrs:
                    del group.attrs[attribute]
            group.attrs[RUN_ATTRIBUTE] = run
        elif existing["fingerprint"] != run["fingerprint"]:
            group.attrs[RUN_ATTRIBUTE] = run
        if "_done" in group and tuple(group["_done"].chunks) == leading_chunks:  # else: an older format
            check_growth(url, tuple(group["_done"].shape), layout.leading)
        for name, spec in arrays.items():
            output._require(name, (*layout.leading, *spec.trailing), (*leading_chunks, *spec.trailing),
                            (*layout.leading_dims, *spec.dims), spec.dtype, spec.fill)
        output._require("_done", layout.leading, leading_chunks, layout.leading_dims, "u1", 0)
        if ngff.IMAGE in arrays:
            output._require_levels(layout, shard_size, arrays[ngff.IMAGE])
        return output

    @classmethod
    def check(cls, url: str, input_url: str | None, fingerprint: str, overwrite: bool,
              same_run: SameRun | None = None) -> OutputGroup | None:
        """Whether a run may write `url`, decided without writing: None for a new location, the priorflow group to
        resume or replace otherwise. Raises for user data, overlap with the input, or another configuration's
        results (unless `overwrite`)."""
        if inspect_output(url, input_url).state == "new":
            return None
        found = cls.open(url)
        held = found.run["fingerprint"]
        if not (same_run or _same_fingerprint(fingerprint))(found.run) and found._has_results() and not overwrite:
            raise RunConflict(
                f"{found.url} holds results of another configuration (fingerprint {held[:12]}, this run "
                f"{fingerprint[:12]}); use a new output, or --overwrite to replace priorflow's arrays in it"
            )
        return found

    def _has_results(self) -> bool:
        return "_done" in self.group and bool(np.asarray(self.group["_done"][...]).any())

    def _delete_own_arrays(self) -> None:
        """Delete the arrays priorflow wrote (OWN_ARRAYS) and the groups they leave empty, and nothing else a user may
        have put in the group."""
        for name in OWN_ARRAYS:
            if name in self.group:
                del self.group[name]
        for name in OWN_ARRAYS:
            parent = name.rpartition("/")[0]
            while parent and parent in self.group and not list(self.group[parent].keys()):
                del self.group[parent]
                parent = parent.rpartition("/")[0]

    def _require(self, name: str, shape: tuple[int, ...], chunks: tuple[int, ...], dims: tuple[str, ...], dtype: str,
                 fill: float | int) -> bool:
        """Create the array, or keep it (resized when the input grew: existing chunks are kept as they are).
        Whether it was created."""
        if name in self.group:
            existing = self.group[name]
            if tuple(existing.chunks) == chunks and tuple(existing.shape[1:]) == shape[1:] and existing.dtype == np.dtype(dtype):
                if tuple(existing.shape) != shape:
                    existing.resize(shape)
                return False
        self.group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill, overwrite=True,
                                dimension_names=dims)
        return True

    def _require_levels(self, layout: SampleLayout, shard_size: int, image: ArraySpec) -> None:
        """The downsampled levels of `restored`, chunked as it is, and the "ome" attribute that makes them one
        OME-Zarr image. Levels new to a group that holds results (of a priorflow that wrote none) are filled."""
        dims, leading_chunks = (*layout.leading_dims, *image.dims), layout.leading_chunks(shard_size)
        levels = ngff.level_shapes(image.trailing)
        created = [self._require(ngff.level_path(k), (*layout.leading, *trailing), (*leading_chunks, *trailing), dims,
                                 image.dtype, image.fill) for k, trailing in enumerate(levels, start=1)]
        self.group.attrs[NGFF_ATTRIBUTE] = ngff.multiscales(layout.kind, dims, len(levels))
        if any(created) and self._has_results():
            self._fill_levels(layout, shard_size)

    def _fill_levels(self, layout: SampleLayout, shard_size: int) -> None:
        """Downsample what `restored` already holds into the level arrays, shard by shard (one object each)."""
        done = self.done()
        for shard in layout.plan(shard_size):
            index = layout.index(shard)
            if done[index].any():
                self._write_levels(index, np.asarray(self.group[ngff.IMAGE][index]))

    def _write_levels(self, index: tuple[slice | int, ...], block: np.ndarray) -> None:
        for k, level in enumerate(ngff.pyramid(block), start=1):
            self.group[ngff.level_path(k)][index] = level

    # --- shards ------------------------------------------------------------------------------------------
    def done(self) -> np.ndarray:
        """Per sample (the layout's leading shape): True once all its arrays are written."""
        if "_done" not in self.group:
            raise PriorflowError(f"{self.url} is being prepared: it has no done markers yet")
        return np.asarray(self.group["_done"][...]).astype(bool)

    def shard_done(self, layout: SampleLayout, shard: Shard) -> bool:
        """Whether every sample of `shard` is written already (e.g. by a worker that was lost before it reported)."""
        return bool(np.asarray(self.group["_done"][layout.index(shard)]).all())

    def write_shard(self, layout: SampleLayout, shard: Shard, arrays: dict[str, np.ndarray]) -> None:
        """Write every array of one shard and its chunk of each level of `restored`, then mark its samples done (the
        marker is the last write)."""
        index = layout.index(shard)
        for name, block in arrays.items():
            self.group[name][index] = block
        if ngff.IMAGE in arrays:
            self._write_levels(index, arrays[ngff.IMAGE])
        self.group["_done"][index] = 1

    def read(self, name: str) -> np.ndarray:
        return np.asarray(self.group[name][...])

    @property
    def run(self) -> dict[str, Any]:
        return dict(self.group.attrs[RUN_ATTRIBUTE])


def check_growth(url: str, held: tuple[int, ...], leading: tuple[int, ...]) -> None:
    """An input may only grow by appending samples along its first axis; anything else would misplace results."""
    if len(held) == len(leading) and held[1:] == leading[1:] and leading[0] >= held[0]:
        return
    raise RunConflict(
        f"{url} holds results for a sample grid {held}, but the input now has {leading}; an input may only grow "
        f"by appending along its first axis. Use a new output, or overwrite"
    )


def _same_fingerprint(fingerprint: str) -> SameRun:
    return lambda run: run["fingerprint"] == fingerprint
