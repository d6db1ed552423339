"""The physics operators (ct, mri, phase_retrieval: tables.PHYSICS_TASKS) on the bundled digits prior: each task's
classical baseline, DPS, MPGD and DMPlug with their defaults, on held-out test digits.

DPS's and MPGD's default scales were chosen on super-resolution, inpainting and deblurring. On each physics task
their scale is checked once over a small grid on validation digits (never the test digits); where another scale
wins there, it is run on the test digits too, as a "tuned" row beside the default.

    python benchmarks/physics.py run      # -> benchmarks/out/physics.json
    python benchmarks/physics.py report   # -> the physics section of benchmarks/RESULTS.md
"""

from __future__ import annotations

import json
import platform
import sys
import textwrap
from pathlib import Path

import torch
import typer
from common import problem, scores
from results import write_section
from tables import PHYSICS_TASKS, classical_baseline

from priorflow.presets import NOISE, bundled_prior

OUT = Path(__file__).resolve().parent / "out" / "physics.json"
SCALES = {"dps": [0.25, 0.5, 1.0, 2.0], "mpgd": [0.5, 1.0, 2.0, 4.0, 8.0]}
"""The scales checked on validation digits; each grid holds the solver's default (auto) scale for these operators."""
COMMAND = "OMP_NUM_THREADS=1 python benchmarks/physics.py run && python benchmarks/physics.py report"

app = typer.Typer(add_completion=False, no_args_is_help=True)


@app.callback()
def main() -> None:
    """CT, MRI and phase retrieval on the bundled digits prior."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _tune(task: str, prior, n_val: int) -> dict:
    """Per solver, its default scale for the task's operator, the validation PSNR of each scale, and the best."""
    from priorflow.solvers import build_solver, operator_name

    truth, val, seeds = problem(task, "val", n_val)
    tuning = {}
    for name, grid in SCALES.items():
        default = build_solver(name).resolved(operator_name(val)).scale
        psnr = {}
        for scale in grid:
            psnr[scale] = scores(build_solver(name, scale=scale).solve(prior, val, seeds).x, truth, 0)["psnr"]
            log(f"  val {task} {name} scale {scale}: {psnr[scale]:.2f} dB")
        tuning[name] = {"default": default, "best": max(psnr, key=psnr.get), "val_psnr": psnr}
    return tuning


def _test(task: str, prior, tuning: dict, n_test: int) -> dict:
    from priorflow.solvers import build_solver, operator_name

    truth, test, seeds = problem(task, "test", n_test)
    rows = {"baseline": scores(classical_baseline(task, test.y, test.operator), truth, 0.0)}
    solvers = {"dps": build_solver("dps"), "mpgd": build_solver("mpgd"), "dmplug": build_solver("dmplug")}
    for name, t in tuning.items():
        if t["best"] != t["default"]:
            solvers[f"{name}_tuned"] = build_solver(name, scale=t["best"])
    for row, solver in solvers.items():
        result = solver.solve(prior, test, seeds)
        rows[row] = scores(result.x, truth, result.seconds) | {
            "options": solver.resolved(operator_name(test)).model_dump(mode="json"),
            "iterations_mean": float(result.iterations.float().mean()),
            "stop_reasons": {r: result.stop_reason.count(r) for r in sorted(set(result.stop_reason))},
        }
        log(f"test {task} {row}: {rows[row]['psnr']:.2f} dB (baseline {rows['baseline']['psnr']:.2f}), "
            f"{rows[row]['sec_per_image']:.2f} s/img")
    return rows


@app.command()
def run(n_test: int = 20, n_val: int = 12, threads: int = 1) -> None:
    """Tune DPS's and MPGD's scale on validation digits, then solve the test digits; write out/physics.json."""
    torch.set_num_threads(threads)
    prior = bundled_prior("pixel")
    record: dict = {"n_test": n_test, "n_val": n_val, "noise": NOISE, "threads": threads, "torch": torch.__version__,
                    "machine": platform.machine(), "prior": prior.identity["sha256"][:12], "tasks": {}}
    for task, preset in PHYSICS_TASKS.items():
        tuning = _tune(task, prior, n_val)
        record["tasks"][task] = {"operator": preset["operator"], "baseline": preset["baseline"], "tuning": tuning,
                                 "rows": _test(task, prior, tuning, n_test)}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(record, indent=1))


LABELS = {"baseline": "classical baseline", "dps": "DPS (defaults)", "dps_tuned": "DPS, scale tuned on validation",
          "mpgd": "MPGD (defaults)", "mpgd_tuned": "MPGD, scale tuned on validation",
          "dmplug": "DMPlug (defaults, ES-WMV)"}


def _options(row: str, data: dict) -> str:
    options = data.get("options")
    if options is None:
        return "-"
    if row.startswith("dmplug"):
        stopping = options["stopping"]
        return (f"lr {options['lr']}, max {options['max_iters']} iterations, ES-WMV W={stopping['window']} "
                f"P={stopping['patience']}; {data['iterations_mean']:.0f} iterations on average")
    return f"{options['steps']} steps, eta {options['eta']}, scale {options['scale']}"


@app.command()
def report() -> None:
    """Write the physics section of benchmarks/RESULTS.md from out/physics.json."""
    record = json.loads(OUT.read_text())
    intro = (
        f"Made by `{COMMAND}`. The first {record['n_test']} held-out test digits (16x16, seeds 0..{record['n_test'] - 1}) "
        f"with the bundled prior digits16 (sha256 {record['prior']}), noise {record['noise'][0]} {record['noise'][1]} on "
        "every task (sinograms are divided by the image width, so sigma means the same on them). Solvers run with "
        "their defaults (`build_solver(name)`); DPS's and MPGD's scale was also checked on the first "
        f"{record['n_val']} validation digits over {SCALES['dps']} (DPS) and {SCALES['mpgd']} (MPGD), and where "
        "another scale won there it is run on the test digits as a tuned row. PSNR in dB, mean ± std over images; "
        f"seconds are wall time per image in a batch of all test digits, machine {record['machine']}, torch "
        f"{record['torch']}, {record['threads']} thread(s)."
    )
    lines = ["## Physics operators: CT, MRI, phase retrieval", "", textwrap.fill(intro, 116), ""]
    for task, data in record["tasks"].items():
        lines.append(f"- {task}: operator {data['operator'][0]} {data['operator'][1]}; baseline: {data['baseline']}")
    lines += ["", "| task | method | options | PSNR | SSIM | s / image |", "|---|---|---|---|---|---|"]
    for task, data in record["tasks"].items():
        for row, label in LABELS.items():
            if row in data["rows"]:
                r = data["rows"][row]
                lines.append(f"| {task} | {label} | {_options(row, r)} | {r['psnr']:.2f} ± {r['psnr_std']:.2f} | {r['ssim']:.3f} "
                             f"| {r['sec_per_image']:.2f} |")
    lines += ["", "Validation PSNR per scale (the default in bold):", ""]
    for task, data in record["tasks"].items():
        for name, t in data["tuning"].items():
            cells = ", ".join(f"**{s}: {p:.2f}**" if float(s) == t["default"] else f"{s}: {p:.2f}" for s, p in t["val_psnr"].items())
            lines.append(f"- {task} {name}: {cells}")
    section = "\n".join(lines) + "\n"
    write_section("physics", section)
    print(section)


if __name__ == "__main__":
    app()
