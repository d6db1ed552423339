"""Plan a run: check everything that can fail before work starts, prepare the output group, list pending shards."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

import torch
from prefect import task

import priorflow
from priorflow.config import RunConfig
from priorflow.errors import ShapeError
from priorflow.solvers import DiffusionPrior, Solver, build_noise, build_operator
from priorflow.solvers.device import resolve_device
from priorflow.solvers.stopping import STOP_REASONS
from priorflow.storage.inputs import open_input
from priorflow.storage.layout import SampleLayout, Shard
from priorflow.storage.outputs import PER_SAMPLE_METRICS, ArraySpec, OutputGroup
from priorflow.tasks.prior_cache import run_prior


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


def output_arrays(
    config: RunConfig, layout: SampleLayout, prior: DiffusionPrior, measurement_shape: tuple[int, ...]
) -> dict[str, ArraySpec]:
    """The output arrays: `latents` and `trace` hold points of the prior's own space (latents of a latent prior)."""
    restored = layout.with_sample_shape(prior.image_shape)
    prior_shape = prior.space_shape
    trailing, dims = restored.shape[len(layout.leading) :], layout.trailing_dims
    latent_dims = ("latent_channel", "latent_y", "latent_x")
    arrays = {"restored": ArraySpec(trailing, dims, "f4", 0.0), "latents": ArraySpec(prior_shape, latent_dims, "f4", 0.0)}
    steps = pipeline_solver(config).trace_steps()
    if steps:
        arrays["trace"] = ArraySpec((len(steps), *prior_shape), ("snapshot", *latent_dims), "f4", float("nan"))
    if config.mode == "benchmark":
        measurement_dims = tuple(f"measurement_{d}" for d in ("channel", "y", "x")[-len(measurement_shape) :])
        arrays["measurement"] = ArraySpec(measurement_shape, measurement_dims, "f4", 0.0)
        arrays["ground_truth"] = ArraySpec(trailing, dims, "f4", 0.0)
    for name, dtype in PER_SAMPLE_METRICS.items():
        arrays[f"metrics/{name}"] = ArraySpec((), (), dtype, float("nan") if dtype == "f8" else -1)
    return arrays


def run_record(config: RunConfig, layout: SampleLayout, prior_identity: dict[str, Any], fingerprint: str) -> dict[str, Any]:
    """What the group's attributes say about the run: enough to reproduce it."""
    import diffusers
    import zarr

    solver = pipeline_solver(config)
    return {
        "fingerprint": fingerprint,
        "config": config.model_dump(mode="json"),
        "layout": layout.kind,
        "input_shape": list(layout.shape),
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
    measurement_shape: tuple[int, ...]
    fingerprint: str
    has_work: bool  # whether the output lacks any sample (as far as can be told before the run takes the lease)


def check_run(config: RunConfig, overwrite: bool = False) -> Checked:
    """Fail fast, with a message naming the problem: device or GPUs that are not there, a missing prior or input,
    shapes that do not fit, bad operator or noise parameters, NaN or infinite input values, an output that holds
    someone else's data or overlaps the input, or another configuration's results."""
    from priorflow.flows.clusters import check_cluster

    resolve_device(config.device)
    check_cluster(config.cluster)
    prior = run_prior(config, "cpu")
    pipeline_solver(config).check_prior(prior)
    source = open_input(config.input, prior.channels, config.layout, measurements=config.mode == "measured")
    layout = source.layout
    operator = build_operator(config.operator.name, prior.image_shape, [0], **config.operator.params)
    build_noise(config.noise.name, **config.noise.params)
    measurement_shape = operator.measurement_shape()[1:]
    expected = prior.image_shape if config.mode == "benchmark" else measurement_shape
    if layout.sample_shape != tuple(expected):
        what = "clean images at the prior's size" if config.mode == "benchmark" else f"measurements of {config.operator.name}"
        raise ShapeError(f"{config.input}: samples have shape {layout.sample_shape}, expected {tuple(expected)} ({what})")
    source.check_values()
    fingerprint = config.result_fingerprint(prior.identity["sha256"])
    found = OutputGroup.check(config.output, config.input, fingerprint, overwrite)
    return Checked(prior, layout, tuple(measurement_shape), fingerprint, _has_work(found, fingerprint, layout, config))


def _has_work(found: OutputGroup | None, fingerprint: str, layout: SampleLayout, config: RunConfig) -> bool:
    if found is None or found.run["fingerprint"] != fingerprint or "_done" not in found.group:
        return True
    done = found.done()
    return done.shape != layout.leading or bool(layout.pending(layout.plan(config.shard_size), done))


@task(name="plan-shards")
def plan_shards(config: RunConfig, overwrite: bool = False) -> RunPlan:
    """Check the run, create or reopen the output group (the caller holds its lease), list what is left to solve."""
    checked = check_run(config, overwrite)
    prior, layout = checked.prior, checked.layout
    arrays = output_arrays(config, layout, prior, checked.measurement_shape)
    output = OutputGroup.prepare(
        config.output, layout.with_sample_shape(prior.image_shape), config.shard_size, arrays,
        run_record(config, layout, prior.identity, checked.fingerprint), input_url=config.input, overwrite=overwrite,
    )
    return RunPlan(layout, layout.pending(layout.plan(config.shard_size), output.done()))
