"""Plan a run: check everything that can fail before work starts, prepare the output group, list pending shards."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

import torch
from prefect import task

import priorflow
from priorflow.config import RunConfig
from priorflow.solvers import DiffusionPrior, Solver, build_noise
from priorflow.solvers.device import resolve_device
from priorflow.solvers.algorithms.stopping import STOP_REASONS
from priorflow.storage.inputs import open_input
from priorflow.storage.layout import SampleLayout, Shard
from priorflow.storage.outputs import PER_SAMPLE_METRICS, ArraySpec, OutputGroup
from priorflow.tasks.geometry import Geometry, run_geometry
from priorflow.tasks.prior_cache import run_prior

ROW_METRICS = ("iterations", "stop_reason", "seconds", "nfe")
"""The solver's own metrics, one per batch row: per tile when samples are tiled (the scores are per image)."""


@dataclass(frozen=True)
class RunPlan:
    layout: SampleLayout  # of the input
    pending: list[Shard]  # what is left to solve of each shard (new samples only, when the input grew)


def pipeline_solver(config: RunConfig) -> Solver:
    """The configured solver with its "auto" options resolved for the operator (so the run record says what was
    used), and a trace of about `snapshots` latents unless it sets trace_every itself."""
    solver = config.solver.resolved(config.operator.name)
    if solver.trace_every or config.snapshots <= 0:
        return solver
    return solver.model_copy(update={"trace_every": max(1, solver.last_step // config.snapshots)})


def output_arrays(config: RunConfig, layout: SampleLayout, prior: DiffusionPrior, geometry: Geometry) -> dict[str, ArraySpec]:
    """The output arrays: `latents` and `trace` hold points of the prior's own space (latents of a latent prior);
    with tiles, they and the solver's per-row metrics gain a `tile` axis, while images and scores stay whole."""
    restored = layout.with_sample_shape(geometry.image_shape)
    tile = ((geometry.tiles,), ("tile",)) if geometry.grid else ((), ())
    prior_shape = prior.space_shape
    trailing, dims = restored.shape[len(layout.leading) :], layout.trailing_dims
    latent_dims = ("latent_channel", "latent_y", "latent_x")
    arrays = {"restored": ArraySpec(trailing, dims, "f4", 0.0),
              "latents": ArraySpec((*tile[0], *prior_shape), (*tile[1], *latent_dims), "f4", 0.0)}
    steps = pipeline_solver(config).trace_steps()
    if steps:
        arrays["trace"] = ArraySpec((*tile[0], len(steps), *prior_shape), (*tile[1], "snapshot", *latent_dims), "f4",
                                    float("nan"))
    if config.mode == "benchmark":
        shape = geometry.measurement_shape
        measurement_dims = tuple(f"measurement_{d}" for d in ("channel", "y", "x")[-len(shape) :])
        arrays["measurement"] = ArraySpec(shape, measurement_dims, "f4", 0.0)
        arrays["ground_truth"] = ArraySpec(trailing, dims, "f4", 0.0)
    for name, dtype in PER_SAMPLE_METRICS.items():
        per_row = name in ROW_METRICS
        arrays[f"metrics/{name}"] = ArraySpec(tile[0] if per_row else (), tile[1] if per_row else (), dtype,
                                              float("nan") if dtype == "f8" else -1)
    return arrays


def run_record(config: RunConfig, layout: SampleLayout, geometry: Geometry, prior_identity: dict[str, Any],
               fingerprint: str) -> dict[str, Any]:
    """What the group's attributes say about the run: enough to reproduce it."""
    import diffusers
    import zarr

    solver = pipeline_solver(config)
    return {
        "fingerprint": fingerprint,
        "config": config.model_dump(mode="json"),
        "layout": layout.kind,
        "input_shape": list(layout.shape),
        "samples_per_shard": geometry.samples_per_shard,
        "tiles": [list(geometry.grid.tops), list(geometry.grid.lefts)] if geometry.grid else None,
        "solver": solver.model_dump(mode="json") | {"trace_steps": solver.trace_steps()},
        "prior": {k: prior_identity[k] for k in ("name", "path", "sha256", "kind")}
        | ({"autoencoder": prior_identity["autoencoder"]} if "autoencoder" in prior_identity else {}),
        "stop_reasons": list(STOP_REASONS),
        "versions": {"priorflow": priorflow.__version__, "torch": torch.__version__, "zarr": zarr.__version__,
                     "diffusers": diffusers.__version__},
        "host": socket.gethostname(),
    }


@dataclass(frozen=True)
class Checked:
    """A configuration checked against its input, prior and output, before any server, cluster or group exists."""

    prior: DiffusionPrior
    layout: SampleLayout
    geometry: Geometry
    fingerprint: str
    has_work: bool  # whether the output lacks any sample (as far as can be told before the run takes the lease)


def check_run(config: RunConfig, overwrite: bool = False) -> Checked:
    """Fail fast, with a message naming the problem: device or GPUs that are not there, a missing prior or input,
    shapes that do not fit (an image smaller than the prior, larger images with an operator that cannot tile, a
    coupling of images), bad operator or noise parameters, NaN or infinite input values, an output that holds
    someone else's data or overlaps the input, or another configuration's results."""
    from priorflow.flows.clusters import check_cluster

    resolve_device(config.device)
    check_cluster(config.cluster)
    prior = run_prior(config, "cpu")
    pipeline_solver(config).check_prior(prior)
    source = open_input(config.input, prior.channels, config.layout, measurements=config.mode == "measured")
    layout = source.layout
    build_noise(config.noise.name, **config.noise.params)
    geometry = run_geometry(config, prior, layout)
    source.check_values()
    fingerprint = config.result_fingerprint(prior.identity["sha256"])
    found = OutputGroup.check(config.output, config.input, fingerprint, overwrite)
    return Checked(prior, layout, geometry, fingerprint, _has_work(found, fingerprint, layout, geometry))


def _has_work(found: OutputGroup | None, fingerprint: str, layout: SampleLayout, geometry: Geometry) -> bool:
    if found is None or found.run["fingerprint"] != fingerprint or "_done" not in found.group:
        return True
    done = found.done()
    return done.shape != layout.leading or bool(layout.pending(layout.plan(geometry.samples_per_shard), done))


@task(name="plan-shards")
def plan_shards(config: RunConfig, overwrite: bool = False) -> RunPlan:
    """Check the run, create or reopen the output group (the caller holds its lease), list what is left to solve."""
    checked = check_run(config, overwrite)
    prior, layout, geometry = checked.prior, checked.layout, checked.geometry
    arrays = output_arrays(config, layout, prior, geometry)
    output = OutputGroup.prepare(
        config.output, layout.with_sample_shape(geometry.image_shape), geometry.samples_per_shard, arrays,
        run_record(config, layout, geometry, prior.identity, checked.fingerprint), input_url=config.input,
        overwrite=overwrite,
    )
    return RunPlan(layout, layout.pending(layout.plan(geometry.samples_per_shard), output.done()))
