"""Solve one shard: read its samples, run the solver, score (benchmark mode), write every array, mark it done."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import numpy as np
import torch
from prefect import get_run_logger, task

from priorflow.config import RunConfig
from priorflow.errors import PriorflowError
from priorflow.solvers import InverseProblem, build_noise, build_operator, simulate_measurements
from priorflow.solvers.algorithms.coupling import DepthCoupling
from priorflow.solvers.metrics import image_metrics
from priorflow.solvers.algorithms.tiling import solve_tiled
from priorflow.storage.inputs import open_input
from priorflow.storage.layout import Shard
from priorflow.storage.outputs import OutputGroup, stop_reason_codes
from priorflow.storage.urls import StorageError
from priorflow.tasks.geometry import run_geometry, with_halo
from priorflow.tasks.plan import pipeline_solver
from priorflow.tasks.prior_cache import run_prior


def worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"


def transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry storage hiccups, not bad input or bad configuration (those fail the same way every time)."""
    exc = state.result(raise_on_failure=False)
    return isinstance(exc, (StorageError, OSError, TimeoutError)) or not isinstance(exc, (PriorflowError, ValueError))


def restore_shard(config: RunConfig, shard: Shard) -> dict[str, Any]:
    """The work of one shard; returns a small report (no tensors).

    A coupled volume's shard solves `coupling.halo` slices beyond each end of its slab as context and writes only
    its own; samples larger than the prior are solved as tiles, each a batch row with its own seed."""
    start = time.perf_counter()
    if config.device == "cpu" or not torch.cuda.is_available():
        torch.set_num_threads(int(os.environ.get("PRIORFLOW_THREADS", "1")))
    prior = run_prior(config, config.device)
    source = open_input(config.input, prior.channels, config.layout, measurements=config.mode == "measured")
    layout = source.layout
    geometry = run_geometry(config, prior, layout)
    restored_layout = layout.with_sample_shape(geometry.image_shape)
    output = OutputGroup.open(config.output, read_only=False)
    if output.shard_done(restored_layout, shard):  # written by a worker that was lost before it reported
        return {"shard": shard.index, "samples": shard.size, "worker": worker_name(), "read_s": 0.0, "solve_s": 0.0,
                "write_s": 0.0, "total_s": time.perf_counter() - start, "skipped": True}
    coupling = config.coupling.weight  # run_geometry refused it for images
    solved = with_halo(layout, shard, config.coupling.halo) if coupling else shard
    ids = layout.sample_ids(solved)
    seeds = [config.seed + i for i in ids]
    tiles = geometry.tiles
    row_seeds = [config.seed + i * tiles + t for i in ids for t in range(tiles)]  # = seeds without tiles
    operator = build_operator(config.operator.name, geometry.image_shape, seeds, **config.operator.params)
    data = source.read(solved).to(prior.device)
    truth = None
    if config.mode == "benchmark":
        truth = data
        data = simulate_measurements(truth, operator, build_noise(config.noise.name, **config.noise.params), seeds).y
    read_done = time.perf_counter()
    solver = pipeline_solver(config)
    problem = InverseProblem(data, operator)
    link = DepthCoupling.chain(coupling, len(ids), tiles) if coupling else None
    if geometry.grid is None:
        result = solver.solve(prior, problem, row_seeds, coupling=link)
        x = result.x
    else:
        tiled = solve_tiled(solver, prior, problem, row_seeds, geometry.grid, config.tiling.window, coupling=link)
        x, result = tiled.x, tiled.tiles
    solve_done = time.perf_counter()

    own = slice(shard.d0 - solved.d0, shard.d0 - solved.d0 + shard.size) if solved is not shard else slice(None)
    rows = slice(own.start * tiles, own.stop * tiles) if solved is not shard else slice(None)

    def per_sample(values: torch.Tensor) -> np.ndarray:
        """Per-row values of the shard's own samples; with tiles, a (samples, tiles, ...) block."""
        values = values[rows].cpu()
        values = values.float() if values.dtype in (torch.bfloat16, torch.float16) else values
        return (values.reshape(-1, tiles, *values.shape[1:]) if geometry.grid else values).numpy()

    arrays: dict[str, np.ndarray] = {
        "restored": restored_layout.from_samples(x[own].float().cpu().numpy()),
        "latents": per_sample(result.latent),
        "metrics/iterations": per_sample(result.iterations),
        "metrics/stop_reason": per_sample(torch.from_numpy(stop_reason_codes(result.stop_reason))),
        "metrics/seconds": per_sample(result.seconds),
        "metrics/nfe": per_sample(result.nfe),
    }
    if result.trace is not None:
        arrays["trace"] = per_sample(result.trace)
    if truth is not None:
        arrays["measurement"] = data[own].float().cpu().numpy()
        arrays["ground_truth"] = restored_layout.from_samples(truth[own].float().cpu().numpy())
        for name, values in image_metrics(x[own], truth[own]).items():
            if values is not None:
                arrays[f"metrics/{name}"] = values.numpy()
    output.write_shard(restored_layout, shard, arrays)
    end = time.perf_counter()
    return {
        "shard": shard.index,
        "samples": shard.size,
        "worker": worker_name(),
        "read_s": read_done - start,
        "solve_s": solve_done - read_done,
        "write_s": end - solve_done,
        "total_s": end - start,
        "skipped": False,
    }


@task(name="solve-shard", retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=transient, tags=["priorflow-solve"])
def solve_shard(config: RunConfig, shard: Shard) -> dict[str, Any]:
    report = restore_shard(config, shard)
    if report["skipped"]:
        get_run_logger().info("shard %d: already written (its worker was lost before reporting), not solved again",
                              report["shard"])
        return report
    get_run_logger().info(
        "shard %d: %d samples on %s in %.1f s (%.2f samples/s; read %.2f s, solve %.1f s, write %.2f s)",
        report["shard"], report["samples"], report["worker"], report["total_s"], report["samples"] / report["total_s"],
        report["read_s"], report["solve_s"], report["write_s"],
    )
    return report
