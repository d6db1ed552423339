"""The output group of a restoration run, written shard by shard so that a run can resume and never lies.

    restored        the input's layout at the prior's size, float32 in [0, 1]
    latents         leading + (C, H, W): each sample's final latent (DMPlug's z*, the last x_t otherwise)
    trace           leading + (S, C, H, W): latent snapshots every k steps (NaN after a sample stopped)
    measurement     leading + measurement shape (benchmark mode)
    ground_truth    as restored (benchmark mode)
    metrics/*       leading: psnr, ssim, lpips (benchmark mode), iterations, stop_reason (code), seconds, nfe
    _done           leading: 1 once every array of the sample is written, the last write of a shard

Every array is chunked so that one shard is one chunk (one object), so concurrent workers never write the same
object. Attributes record the whole run configuration and its fingerprint; a run with another configuration is
refused unless told to overwrite. An input that grew by appending samples (along its first axis) grows the
group: the arrays are resized, what is already restored stays as it is, and only the new samples are pending.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr
from zarr.errors import GroupNotFoundError

from priorflow.errors import PriorflowError
from priorflow.solvers.stopping import STOP_REASONS
from priorflow.storage.layout import SampleLayout, Shard
from priorflow.storage.urls import describe_storage_error, normalize_url, open_store

RUN_ATTRIBUTE = "priorflow_run"
LOCK_ATTRIBUTE = "priorflow_lock"
LOCK_STALE_SECONDS = 6 * 3600
PER_SAMPLE_METRICS = {"psnr": "f8", "ssim": "f8", "lpips": "f8", "iterations": "i8", "stop_reason": "i1", "seconds": "f8", "nfe": "i8"}


class RunConflict(PriorflowError):
    """The output holds another run's results, or another run is writing it now."""


@dataclass(frozen=True)
class ArraySpec:
    """An output array: its per-sample trailing shape and dtype."""

    trailing: tuple[int, ...]
    dtype: str
    fill: float | int


class OutputGroup:
    def __init__(self, url: str, group: zarr.Group) -> None:
        self.url, self.group = url, group

    @classmethod
    def open(cls, url: str, read_only: bool = True) -> OutputGroup:
        url = normalize_url(url)
        try:
            group = zarr.open_group(store=open_store(url, read_only=read_only), mode="r" if read_only else "r+")
        except (FileNotFoundError, GroupNotFoundError) as exc:
            raise PriorflowError(f"no priorflow output group at {url}") from exc
        except Exception as exc:  # noqa: BLE001
            raise describe_storage_error(url, exc) from exc
        return cls(url, group)

    @classmethod
    def prepare(
        cls,
        url: str,
        layout: SampleLayout,
        shard_size: int,
        arrays: dict[str, ArraySpec],
        run: dict[str, Any],
        *,
        owner: str,
        overwrite: bool = False,
    ) -> tuple[OutputGroup, str]:
        """Create the group, or reopen it to resume the same run (same fingerprint), and take its writer lock.

        Refuses while another run holds a fresh lock, and when the group holds another configuration's results
        (unless `overwrite`). Returns the group and the lock id to release.
        """
        url = normalize_url(url)
        try:
            store = open_store(url)
            try:
                group = zarr.open_group(store=store, mode="r+")
            except (FileNotFoundError, GroupNotFoundError):
                group = zarr.open_group(store=store, mode="w-")
        except Exception as exc:  # noqa: BLE001
            if isinstance(exc, PriorflowError):
                raise
            raise describe_storage_error(url, exc) from exc
        lock = group.attrs.get(LOCK_ATTRIBUTE)
        if lock and time.time() - lock["since"] < LOCK_STALE_SECONDS:
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(lock["since"]))
            raise RunConflict(
                f"{url} is being written by another run ({lock['owner']}, since {since} UTC); wait for it to "
                f"finish, or `priorflow unlock {url}` if that run is dead"
            )
        existing = group.attrs.get(RUN_ATTRIBUTE)
        if existing is not None and existing["fingerprint"] != run["fingerprint"] and not overwrite:
            raise RunConflict(
                f"{url} holds results of another configuration (fingerprint {existing['fingerprint'][:12]}, "
                f"this run {run['fingerprint'][:12]}); use a new output or overwrite"
            )
        fresh = existing is None or existing["fingerprint"] != run["fingerprint"]
        leading_chunks = layout.leading_chunks(shard_size)
        if not fresh and "_done" in group and tuple(group["_done"].chunks) == leading_chunks:  # else: an older format
            check_growth(url, tuple(group["_done"].shape), layout.leading)
        lock_id = uuid.uuid4().hex
        lock = {"id": lock_id, "owner": owner, "since": time.time()}
        if fresh:
            group = zarr.open_group(store=store, mode="w")
        group.attrs.update({RUN_ATTRIBUTE: run, LOCK_ATTRIBUTE: lock})
        output = cls(url, group)
        for name, spec in arrays.items():
            output._require(name, (*layout.leading, *spec.trailing), (*leading_chunks, *spec.trailing), spec.dtype, spec.fill)
        output._require("_done", layout.leading, leading_chunks, "u1", 0)
        return output, lock_id

    def _require(self, name: str, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: str, fill: float | int) -> None:
        """Create the array, or keep it (resized when the input grew: existing chunks are kept as they are)."""
        if name in self.group:
            existing = self.group[name]
            if tuple(existing.chunks) == chunks and tuple(existing.shape[1:]) == shape[1:] and existing.dtype == np.dtype(dtype):
                if tuple(existing.shape) != shape:
                    existing.resize(shape)
                return
        self.group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill, overwrite=True)

    def release(self, lock_id: str) -> None:
        """Give the writer lock back if this run still holds it."""
        group = zarr.open_group(store=self.group.store, mode="r+")
        lock = group.attrs.get(LOCK_ATTRIBUTE)
        if lock and lock["id"] == lock_id:
            del group.attrs[LOCK_ATTRIBUTE]

    def unlock(self) -> None:
        """Remove a lock left by a run that died (the rerun then resumes it)."""
        if LOCK_ATTRIBUTE in self.group.attrs:
            del self.group.attrs[LOCK_ATTRIBUTE]

    # --- shards ------------------------------------------------------------------------------------------
    def done(self) -> np.ndarray:
        """Per sample (the layout's leading shape): True once all its arrays are written."""
        return np.asarray(self.group["_done"][...]).astype(bool)

    def write_shard(self, layout: SampleLayout, shard: Shard, arrays: dict[str, np.ndarray]) -> None:
        """Write every array of one shard, then mark its samples done (the marker is the last write)."""
        index = layout.index(shard)
        for name, block in arrays.items():
            self.group[name][index] = block
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


def stop_reason_codes(reasons: list[str]) -> np.ndarray:
    return np.array([STOP_REASONS.index(r) for r in reasons], dtype=np.int8)
