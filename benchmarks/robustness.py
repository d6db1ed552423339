"""DMPlug's robustness table (its Table 5) on the bundled digits16 prior: SR x4 and Gaussian deblurring, each under
Gaussian, impulse (salt and pepper), shot (Poisson) and speckle noise at a low and a high level
(tables.ROBUSTNESS_NOISE).

Every method's options are tuned once, on validation digits with the low Gaussian noise, and left alone for the
other noise types: the claim under test is robustness to noise of UNKNOWN type and level. DPS's and MPGD's scales
are tuned here; DMPlug runs with its defaults (their stopping rule was chosen on the Gaussian cells of the
validation recordings, benchmarks/stopping.py). DMPlug's rows are replayed from the test recordings of
`stopping.py record` made with DMPlug's defaults: a sample's trajectory does not depend on its batch nor on when it
stops, so the replayed pick is the one a live run returns (up to float rounding of batched kernels).

    python benchmarks/robustness.py run --task sr_x4          # -> out/robustness.<task>.json
    python benchmarks/robustness.py report                    # -> RESULTS.md
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import torch
import typer
from common import problem, scores
from results import write_section
from stopping import load_run, oracle, replay, run_name
from tables import ROBUSTNESS_NOISE, classical_baseline, solver_options

from priorflow.presets import bundled_prior

OUT = Path(__file__).resolve().parent / "out"
TASKS = ("sr_x4", "deblur_gauss")
TUNING_CELL = "gaussian_low"
GRIDS = {"dps": [0.25, 0.5, 1.0], "mpgd": [1.0, 2.0, 4.0, 8.0, 16.0]}

app = typer.Typer(add_completion=False, no_args_is_help=True)


@app.callback()
def main() -> None:
    """DMPlug's robustness table on digits16."""


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def dmplug_rows(task: str, split: str) -> dict[str, dict]:
    """DMPlug with its defaults on every noise cell, replayed from the recordings made with those defaults."""
    from priorflow.solvers import build_solver

    solver = build_solver("dmplug")
    run = run_name(solver.lr, solver.seed_on_sphere)
    recordings = load_run(run, split)
    rows = {}
    for noise in ROBUSTNESS_NOISE:
        data = recordings[f"{task}.{noise}"]
        if data["cap"] < solver.max_iters:
            raise SystemExit(f"{run} recordings stop at {data['cap']} iterations, before DMPlug's cap {solver.max_iters}")
        picked = replay(solver.stopping, data)
        best = oracle(data)
        rows[noise] = {"es": float(picked["psnr"].mean()), "oracle": float(best.mean()),
                       "gap": float((best - picked["psnr"]).mean()), "stopped": float(picked["stopped"].float().mean()),
                       "iterations": float(picked["iterations"].float().mean()), "n": len(best), "run": run}
    return rows


@app.command()
def run(task: str = typer.Option(..., help=" or ".join(TASKS)), n_test: int = 20, n_val: int = 12) -> None:
    """Tune DPS and MPGD on validation digits with the low Gaussian noise, then score them and the classical
    baseline on every noise cell of the test digits (DMPlug's rows come from its recordings, at `report`)."""
    from priorflow.solvers import build_solver

    torch.set_num_threads(1)
    prior = bundled_prior("pixel")
    truth, val, seeds = problem(task, "val", n_val, noise=ROBUSTNESS_NOISE[TUNING_CELL])
    tuned = {}
    for name, grid in GRIDS.items():
        psnr = {}
        for scale in grid:
            result = build_solver(name, **solver_options(name, {"scale": scale})).solve(prior, val, seeds)
            psnr[scale] = scores(result.x, truth, 0)["psnr"]
            _log(f"val {task} {name} scale {scale}: {psnr[scale]:.2f} dB")
        tuned[name] = max(psnr, key=psnr.get)
    cells = {}
    for noise, spec in ROBUSTNESS_NOISE.items():
        truth, test, seeds = problem(task, "test", n_test, noise=spec)
        rows = {"baseline": scores(classical_baseline(task, test.y), truth, 0.0)["psnr"]}
        for name, scale in tuned.items():
            result = build_solver(name, **solver_options(name, {"scale": scale})).solve(prior, test, seeds)
            rows[name] = scores(result.x, truth, result.seconds)["psnr"]
        cells[noise] = rows
        _log(f"test {task} {noise}: {rows}")
    record = {"task": task, "n_test": n_test, "n_val": n_val, "tuned_on": TUNING_CELL, "tuned": tuned, "cells": cells,
              "noise": ROBUSTNESS_NOISE, "torch": torch.__version__,
              "machine": platform.machine()}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"robustness.{task}.json").write_text(json.dumps(record, indent=1))


@app.command()
def report() -> None:
    """The robustness table in DMPlug's layout -> RESULTS.md (DMPlug's rows replayed now, with its defaults)."""
    records = [json.loads((OUT / f"robustness.{t}.json").read_text()) for t in TASKS if (OUT / f"robustness.{t}.json").exists()]
    for record in records:
        record["dmplug"] = dmplug_rows(record["task"], "test")
    levels = [(noise, noise.replace("_", " ")) for noise in ROBUSTNESS_NOISE]
    lines = [
        "## Robustness to unknown noise (DMPlug's Table 5, on digits16)",
        "",
        "`python benchmarks/stopping.py record --split test --n 20 --sphere` (DMPlug's trajectories with its defaults), "
        "then `python benchmarks/robustness.py run --task T` for each task and `report`. PSNR in dB, mean over the "
        f"first {records[0]['n_test']} test digits (seeds 0..{records[0]['n_test'] - 1}; noise seeds offset by 10 000). "
        f"Every method tuned once on {records[0]['n_val']} validation digits with the low Gaussian noise, then left "
        "alone. Noise on [0, 1] (`tables.ROBUSTNESS_NOISE`): " + "; ".join(
            f"{cell.replace('_', ' ')}: {name} {', '.join(f'{k} {v}' for k, v in params.items())}"
            for cell, (name, params) in ROBUSTNESS_NOISE.items()) + ".",
        "",
    ]
    for record in records:
        tuned = ", ".join(f"{k} scale {v}" for k, v in record["tuned"].items())
        lines += [f"### {record['task']} ({tuned}; DMPlug: defaults, recordings `{next(iter(record['dmplug'].values()))['run']}`)", "",
                  "| method | " + " | ".join(label for _, label in levels) + " |", "|---|" + "---|" * len(levels)]
        cells, dm = record["cells"], record["dmplug"]
        lines.append("| classical baseline | " + " | ".join(f"{cells[c]['baseline']:.2f}" for c, _ in levels) + " |")
        lines.append("| DPS | " + " | ".join(f"{cells[c]['dps']:.2f}" for c, _ in levels) + " |")
        lines.append("| MPGD | " + " | ".join(f"{cells[c]['mpgd']:.2f}" for c, _ in levels) + " |")
        lines.append("| DMPlug + ES (deployable) | " + " | ".join(f"{dm[c]['es']:.2f}" for c, _ in levels) + " |")
        lines.append("| DMPlug best iterate (**oracle**) | " + " | ".join(f"{dm[c]['oracle']:.2f}" for c, _ in levels) + " |")
        lines.append("| PSNR gap (oracle - ES) | " + " | ".join(f"{dm[c]['gap']:.2f}" for c, _ in levels) + " |")
        lines.append("| stopped before the cap | " + " | ".join(f"{dm[c]['stopped']:.0%}" for c, _ in levels) + " |")
        lines.append("| mean iterations | " + " | ".join(f"{dm[c]['iterations']:.0f}" for c, _ in levels) + " |")
        lines.append("")
    write_section("robustness", "\n".join(lines))


if __name__ == "__main__":
    app()
