"""Plan a run: validate the input against the prior and operator, prepare the output group, list pending shards."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

import torch
from prefect import task

import priorflow
from priorflow.config import RunConfig
from priorflow.errors import ShapeError
from priorflow.solvers import DiffusionPrior, Solver, build_operator
from priorflow.solvers.device import resolve_device
from priorflow.solvers.stopping import STOP_REASONS
from priorflow.storage.inputs import open_input
from priorflow.storage.layout import SampleLayout, Shard
from priorflow.storage.outputs import PER_SAMPLE_METRICS, ArraySpec, OutputGroup
from priorflow.tasks.prior_cache import cached_prior


@dataclass(frozen=True)
class RunPlan:
    layout: SampleLayout  # of the input
    pending: list[Shard]  # what is left to solve of each shard (new samples only, when the input grew)
    lock_id: str


def pipeline_solver(config: RunConfig) -> Solver:
    """The configured solver, with a trace of about `snapshots` latents unless it sets trace_every itself."""
    solver = config.solver
    if solver.trace_every or config.snapshots <= 0:
        return solver
    return solver.model_copy(update={"trace_every": max(1, solver.last_step // config.snapshots)})


def output_arrays(
    config: RunConfig, layout: SampleLayout, prior_shape: tuple[int, int, int], measurement_shape: tuple[int, ...]
) -> dict[str, ArraySpec]:
    restored = layout.with_sample_shape(prior_shape)
    trailing = restored.shape[len(layout.leading) :]
    arrays = {"restored": ArraySpec(trailing, "f4", 0.0), "latents": ArraySpec(prior_shape, "f4", 0.0)}
    steps = pipeline_solver(config).trace_steps()
    if steps:
        arrays["trace"] = ArraySpec((len(steps), *prior_shape), "f4", float("nan"))
    if config.mode == "benchmark":
        arrays["measurement"] = ArraySpec(measurement_shape, "f4", 0.0)
        arrays["ground_truth"] = ArraySpec(trailing, "f4", 0.0)
    for name, dtype in PER_SAMPLE_METRICS.items():
        arrays[f"metrics/{name}"] = ArraySpec((), dtype, float("nan") if dtype == "f8" else -1)
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
        "prior": {k: prior_identity[k] for k in ("name", "path", "sha256")},
        "stop_reasons": list(STOP_REASONS),
        "versions": {"priorflow": priorflow.__version__, "torch": torch.__version__, "zarr": zarr.__version__,
                     "diffusers": diffusers.__version__},
        "host": socket.gethostname(),
    }


@dataclass(frozen=True)
class Checked:
    """A configuration checked against its input and prior, before any cluster or output exists."""

    prior: DiffusionPrior
    layout: SampleLayout
    measurement_shape: tuple[int, ...]


def check_run(config: RunConfig) -> Checked:
    """Fail fast, with a message naming the problem: missing prior or input, shapes that do not fit."""
    resolve_device(config.device)
    prior = cached_prior(config.prior, "cpu")
    layout = open_input(config.input, prior.channels, config.layout).layout
    operator = build_operator(config.operator.name, prior.image_shape, [0], **config.operator.params)
    measurement_shape = operator.measurement_shape()[1:]
    expected = prior.image_shape if config.mode == "benchmark" else measurement_shape
    if layout.sample_shape != tuple(expected):
        what = "clean images at the prior's size" if config.mode == "benchmark" else f"measurements of {config.operator.name}"
        raise ShapeError(f"{config.input}: samples have shape {layout.sample_shape}, expected {tuple(expected)} ({what})")
    return Checked(prior, layout, tuple(measurement_shape))


@task(name="plan-shards")
def plan_shards(config: RunConfig, overwrite: bool = False) -> RunPlan:
    checked = check_run(config)
    prior, layout = checked.prior, checked.layout
    fingerprint = config.result_fingerprint(prior.identity["sha256"])
    arrays = output_arrays(config, layout, prior.image_shape, checked.measurement_shape)
    output, lock_id = OutputGroup.prepare(
        config.output, layout.with_sample_shape(prior.image_shape), config.shard_size, arrays,
        run_record(config, layout, prior.identity, fingerprint), owner=f"{socket.gethostname()}:{os.getpid()}",
        overwrite=overwrite,
    )
    shards = layout.plan(config.shard_size)
    return RunPlan(layout, layout.pending(shards, output.done()), lock_id)
