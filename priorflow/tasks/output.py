"""The output group of a planned run: the arrays it holds, the run record in its attributes, and its preparation
under the lease (the authoritative check of the output location, and the shards left to solve)."""

from __future__ import annotations

import socket
from typing import Any

import torch
from prefect import task

import priorflow
from priorflow.solvers.algorithms.stopping import STOP_REASONS
from priorflow.storage.outputs import PER_SAMPLE_METRICS, ArraySpec, OutputGroup
from priorflow.tasks.plan import RunPlan

ROW_METRICS = ("iterations", "stop_reason", "seconds", "nfe")
"""The solver's own metrics, one per batch row: per tile when samples are tiled (the scores are per image)."""


def output_arrays(plan: RunPlan) -> dict[str, ArraySpec]:
    """The output arrays: `latents` and `trace` hold points of the prior's own space (latents of a latent prior);
    with tiles, they and the solver's per-row metrics gain a `tile` axis, while images and scores stay whole."""
    layout, geometry = plan.layout, plan.geometry
    restored = plan.restored_layout
    tile = ((geometry.tiles,), ("tile",)) if geometry.grid else ((), ())
    trailing, dims = restored.shape[len(layout.leading) :], layout.trailing_dims
    latent_dims = ("latent_channel", "latent_y", "latent_x")
    arrays = {"restored": ArraySpec(trailing, dims, "f4", 0.0),
              "latents": ArraySpec((*tile[0], *plan.prior_space), (*tile[1], *latent_dims), "f4", 0.0)}
    steps = plan.solver.trace_steps()
    if steps:
        arrays["trace"] = ArraySpec((*tile[0], len(steps), *plan.prior_space), (*tile[1], "snapshot", *latent_dims),
                                    "f4", float("nan"))
    if plan.config.mode == "benchmark":
        shape = geometry.measurement_shape
        measurement_dims = tuple(f"measurement_{d}" for d in ("channel", "y", "x")[-len(shape) :])
        arrays["measurement"] = ArraySpec(shape, measurement_dims, "f4", 0.0)
        arrays["ground_truth"] = ArraySpec(trailing, dims, "f4", 0.0)
    for name, dtype in PER_SAMPLE_METRICS.items():
        per_row = name in ROW_METRICS
        arrays[f"metrics/{name}"] = ArraySpec(tile[0] if per_row else (), tile[1] if per_row else (), dtype,
                                              float("nan") if dtype == "f8" else -1)
    return arrays


def run_record(plan: RunPlan) -> dict[str, Any]:
    """What the group's attributes say about the run: enough to reproduce it."""
    import diffusers
    import zarr

    grid = plan.geometry.grid
    return {
        "fingerprint": plan.fingerprint,
        "config": plan.config.model_dump(mode="json"),
        "layout": plan.layout.kind,
        "input_shape": list(plan.layout.shape),
        "samples_per_shard": plan.geometry.samples_per_shard,
        "tiles": [list(grid.tops), list(grid.lefts)] if grid else None,
        "operator": plan.operator,
        "solver": plan.solver.model_dump(mode="json") | {"trace_steps": plan.solver.trace_steps()},
        "prior": plan.prior,
        "stop_reasons": list(STOP_REASONS),
        "versions": {"priorflow": priorflow.__version__, "torch": torch.__version__, "zarr": zarr.__version__,
                     "diffusers": diffusers.__version__},
        "host": socket.gethostname(),
    }


@task(name="plan-shards")
def prepare_output(plan: RunPlan, overwrite: bool = False) -> RunPlan:
    """Create or reopen the output group (the caller holds its lease); the plan with the shards left to solve."""
    shards = plan.geometry.samples_per_shard
    output = OutputGroup.prepare(plan.output, plan.restored_layout, shards, output_arrays(plan), run_record(plan),
                                 input_url=plan.config.input, overwrite=overwrite, same_run=plan.same_run)
    pending = plan.layout.pending(plan.layout.plan(shards), output.done())
    return plan.model_copy(update={"pending": tuple(pending)})
