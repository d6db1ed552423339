"""One shard of a planned run: read its samples, make the problem, solve its rows, turn them into arrays, write.

A coupled volume's shard also solves `coupling.halo` slices beyond each end of its slab as context and writes only
its own; samples larger than the prior are solved as tiles, each a batch row with its own seed.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from priorflow.errors import PriorflowError
from priorflow.solvers.algorithms.base import Callback, reporting
from priorflow.solvers.algorithms.coupling import DepthCoupling
from priorflow.solvers.algorithms.stopping import STOP_REASONS
from priorflow.solvers.algorithms.tiling import TiledResult, solve_tiled
from priorflow.solvers.metrics import image_metrics
from priorflow.solvers.physics.noise import build_noise
from priorflow.solvers.physics.registry import build_operator
from priorflow.solvers.priors.prior import DiffusionPrior
from priorflow.solvers.problem import InverseProblem, simulate_measurements
from priorflow.storage.inputs import open_input
from priorflow.storage.layout import Shard
from priorflow.storage.outputs import OutputGroup
from priorflow.tasks.geometry import with_halo
from priorflow.tasks.plan import RunPlan
from priorflow.tasks.priors import run_prior


@dataclass(frozen=True)
class ShardReport:
    """What a shard task tells the flow: where and how fast it ran (no tensors)."""

    shard: int
    samples: int
    worker: str
    read_s: float = 0.0
    solve_s: float = 0.0
    write_s: float = 0.0
    total_s: float = 0.0
    skipped: bool = False  # written already, by a worker that was lost before it reported


@dataclass(frozen=True)
class ShardRows:
    """What a shard solves: its samples widened by a coupled volume's halo, with their seeds and their problem."""

    solved: Shard  # the samples solved: the shard's own, and the halo's
    own: slice  # the shard's own samples among them
    seeds: list[int]  # one per solved sample: seed + its number, whatever the sharding
    row_seeds: list[int]  # one per solver row: the sample's seed, or seed + sample * tiles + tile for tiles
    problem: InverseProblem  # of whole samples
    truth: Tensor | None  # the clean samples (benchmark mode)


def worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"


def worker_prior(plan: RunPlan) -> DiffusionPrior:
    """The plan's prior on this worker's device; refused when this machine's files are not the ones the driver
    checked (a cluster whose nodes see different priors under one path)."""
    if plan.device == "cpu" or not torch.cuda.is_available():
        torch.set_num_threads(int(os.environ.get("PRIORFLOW_THREADS", "1")))
    prior = run_prior(plan.config, plan.device)
    if prior.identity["sha256"] != plan.prior["sha256"]:
        raise PriorflowError(f"the prior at {prior.identity['path']} on {socket.gethostname()} is not the one the run "
                             f"was planned with (sha256 {prior.identity['sha256'][:12]}, planned "
                             f"{plan.prior['sha256'][:12]}): give every machine the same prior files")
    return prior


def read_rows(plan: RunPlan, shard: Shard, device: torch.device) -> ShardRows:
    """The shard's samples (and halo) as a problem: measurements as read, or simulated from clean images."""
    config, layout, tiles = plan.config, plan.layout, plan.geometry.tiles
    solved = with_halo(layout, shard, config.coupling.halo) if config.coupling.weight else shard
    ids = layout.sample_ids(solved)
    seeds = [config.seed + i for i in ids]
    row_seeds = [config.seed + i * tiles + t for i in ids for t in range(tiles)]  # = seeds without tiles
    operator = build_operator(config.operator.name, plan.geometry.image_shape, seeds, **config.operator.params)
    source = open_input(config.input, plan.geometry.image_shape[0], config.layout,
                        measurements=config.mode == "measured")
    data = source.read(solved).to(device)
    truth = None
    if config.mode == "benchmark":
        truth = data
        data = simulate_measurements(truth, operator, build_noise(config.noise.name, **config.noise.params), seeds).y
    own = slice(shard.d0 - solved.d0, shard.d0 - solved.d0 + shard.size)
    return ShardRows(solved, own, seeds, row_seeds, InverseProblem(data, operator), truth)


def solve_rows(plan: RunPlan, prior: DiffusionPrior, rows: ShardRows, callback: Callback | None = None) -> TiledResult:
    """Every row the shard solves, tiles and coupling included: whole restored samples and the per-row result."""
    weight, tiles = plan.config.coupling.weight, plan.geometry.tiles
    coupling = DepthCoupling.chain(weight, len(rows.seeds), tiles) if weight else None
    return solve_tiled(plan.solver, prior, rows.problem, rows.row_seeds, plan.geometry.grid,
                       plan.config.tiling.window, callback, coupling)


def shard_arrays(plan: RunPlan, rows: ShardRows, solved: TiledResult) -> dict[str, np.ndarray]:
    """The shard's own samples as blocks of every output array (a halo's are dropped)."""
    tiles, tiled, restored = plan.geometry.tiles, plan.geometry.grid is not None, plan.restored_layout
    own = rows.own
    result = solved.tiles

    def per_row(values: Tensor) -> np.ndarray:
        """Per-row values of the shard's own samples; with tiles, a (samples, tiles, ...) block."""
        values = values[own.start * tiles : own.stop * tiles].cpu()
        values = values.float() if values.dtype in (torch.bfloat16, torch.float16) else values
        return (values.reshape(-1, tiles, *values.shape[1:]) if tiled else values).numpy()

    codes = torch.tensor([STOP_REASONS.index(r) for r in result.stop_reason], dtype=torch.int8)
    arrays: dict[str, np.ndarray] = {
        "restored": restored.from_samples(solved.x[own].float().cpu().numpy()),
        "latents": per_row(result.latent),
        "metrics/iterations": per_row(result.iterations),
        "metrics/stop_reason": per_row(codes),
        "metrics/seconds": per_row(result.seconds),
        "metrics/nfe": per_row(result.nfe),
    }
    if result.trace is not None:
        arrays["trace"] = per_row(result.trace)
    if rows.truth is not None:
        truth = rows.truth[own]
        arrays["measurement"] = rows.problem.y[own].float().cpu().numpy()
        arrays["ground_truth"] = restored.from_samples(truth.float().cpu().numpy())
        for name, values in image_metrics(solved.x[own], truth).items():
            if values is not None:
                arrays[f"metrics/{name}"] = values.numpy()
    return arrays


def restore_shard(plan: RunPlan, shard: Shard, progress: Callable[[float], None] | None = None) -> ShardReport:
    """The work of one shard, from reading to the done marker; `progress` is told the fraction solved."""
    start = time.perf_counter()
    prior = worker_prior(plan)
    output = OutputGroup.open(plan.output, read_only=False)
    if output.shard_done(plan.restored_layout, shard):
        return ShardReport(shard.index, shard.size, worker_name(), total_s=time.perf_counter() - start, skipped=True)
    rows = read_rows(plan, shard, prior.device)
    read = time.perf_counter()
    with reporting(progress) if progress else contextlib.nullcontext():
        solved = solve_rows(plan, prior, rows)
    solve = time.perf_counter()
    output.write_shard(plan.restored_layout, shard, shard_arrays(plan, rows, solved))
    end = time.perf_counter()
    return ShardReport(shard.index, shard.size, worker_name(), read - start, solve - read, end - solve, end - start)
