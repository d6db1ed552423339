"""Coherent volumes: slices solved together with the adjacent-slice penalty (priorflow.solvers.algorithms.coupling) against
independent slices, on volumes of held-out digits that drift and morph along depth.

    python benchmarks/volumes.py run      # tune the weight on validation volumes, then test -> out/volumes.json
    python benchmarks/volumes.py report   # -> RESULTS.md (section "volumes")

Flicker: the mean absolute difference of adjacent slices of the result over the ground truth's (1: as much change
along depth as the truth; above 1: slices disagree more than the object changes).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import typer
from results import write_section

from priorflow.datasets import digit_volumes
from priorflow.presets import BENCHMARK_NOISE_SEED_OFFSET, NOISE, bundled_prior, task
from priorflow.solvers import build_noise, build_operator, build_solver, simulate_measurements
from priorflow.solvers.algorithms.coupling import DepthCoupling
from priorflow.solvers.metrics import psnr

OUT = Path(__file__).resolve().parent / "out" / "volumes.json"
TASKS = ("sr_x4", "inpaint_70")
WEIGHTS = {"dmplug": (0.01, 0.03, 0.1, 0.3, 1.0), "mpgd": (0.1, 0.3, 1.0)}  # each solver with its defaults otherwise
DEPTH = 12

app = typer.Typer(add_completion=False, no_args_is_help=True)


@app.callback()
def main() -> None:
    """Coupled against independent slices."""


def flicker(x: torch.Tensor, truth: torch.Tensor) -> float:
    """(volumes, depth, H, W): adjacent-slice change of x over the truth's."""
    return float((x[:, 1:] - x[:, :-1]).abs().mean() / (truth[:, 1:] - truth[:, :-1]).abs().mean())


def solve(solver_name: str, task_name: str, volumes: torch.Tensor, weight: float) -> dict:
    prior = bundled_prior("pixel", "cpu")
    count, depth = volumes.shape[:2]
    slices = volumes.reshape(count * depth, 1, *volumes.shape[2:])
    seeds = list(range(len(slices)))
    name, params = task(task_name)["operator"]
    operator = build_operator(name, slices.shape[1:], seeds, **params)
    problem = simulate_measurements(slices, operator, build_noise(NOISE[0], **NOISE[1]), seeds,
                                    BENCHMARK_NOISE_SEED_OFFSET)
    coupling = DepthCoupling(weight, tuple(i - 1 if i % depth else -1 for i in range(len(slices))))
    start = time.perf_counter()
    result = build_solver(solver_name).solve(prior, problem, seeds, coupling=coupling)
    x = result.x.cpu().reshape(volumes.shape)
    return {"weight": weight, "psnr": float(psnr(x.reshape(slices.shape), slices).mean()), "flicker": flicker(x, volumes),
            "nfe": float(result.nfe.float().mean()), "seconds": time.perf_counter() - start}


@app.command()
def run(val_count: int = 3, test_count: int = 6, solvers: str = ",".join(WEIGHTS)) -> None:
    """Per task and solver: the weight with the best mean PSNR on `val_count` validation volumes, then weight 0
    and that weight on `test_count` test volumes. `--solvers` reruns some, keeping the others' records."""
    val, test = digit_volumes("val", val_count, DEPTH), digit_volumes("test", test_count, DEPTH)
    records = json.loads(OUT.read_text())["records"] if OUT.exists() else {}
    for task_name in TASKS:
        for solver_name in solvers.split(","):
            grid = WEIGHTS[solver_name]
            tuning = [solve(solver_name, task_name, val, w) for w in grid]
            best = max(tuning, key=lambda r: r["psnr"])["weight"]
            records[f"{task_name}.{solver_name}"] = {
                "tuning": tuning, "weight": best,
                "independent": solve(solver_name, task_name, test, 0.0), "coupled": solve(solver_name, task_name, test, best),
            }
            print(task_name, solver_name, json.dumps(records[f"{task_name}.{solver_name}"]), flush=True)
            OUT.parent.mkdir(exist_ok=True)
            OUT.write_text(json.dumps({"val_count": val_count, "test_count": test_count, "depth": DEPTH,
                                       "records": records}, indent=1))


@app.command()
def report() -> None:
    data = json.loads(OUT.read_text())
    lines = [
        "## Coherent volumes: coupled against independent slices",
        "",
        (f"`python benchmarks/volumes.py run` then `report`: {data['test_count']} test volumes of {data['depth']} "
         "slices of 16x16 (`priorflow.datasets.digit_volumes`: a held-out digit drifts 4 pixels across the volume "
         "while it fades into another), sigma 0.05, the bundled digits16 prior, each solver with its defaults. The "
         f"coupling weight was chosen on {data['val_count']} validation volumes (best mean PSNR; grid in the last "
         "column). Flicker: adjacent-slice change of the result over the truth's (1 is the truth's)."),
        "",
        ("| task | solver | PSNR independent | PSNR coupled | flicker independent | flicker coupled "
         "| weight (validation PSNR per weight) |"),
        "|---|---|---|---|---|---|---|",
    ]
    for key, r in data["records"].items():
        task_name, solver = key.split(".")
        grid = ", ".join(f"{t['weight']}: {t['psnr']:.2f}" for t in r["tuning"])
        lines.append(f"| {task_name} | {solver} | {r['independent']['psnr']:.2f} | {r['coupled']['psnr']:.2f} | "
                     f"{r['independent']['flicker']:.2f} | {r['coupled']['flicker']:.2f} | {r['weight']} ({grid}) |")
    write_section("volumes", "\n".join(lines))


if __name__ == "__main__":
    app()
