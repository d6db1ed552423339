"""Solver benchmark on the bundled digits prior's held-out images.

Hyper-parameters are tuned on the validation split (never on the test split); the test split is then solved
once with the chosen values. Reported per task: PSNR / SSIM (LPIPS where available) and seconds per image for
the classical baseline, DDIM (prior only), DPS, MPGD, DMPlug with ES-WMV, and DMPlug's oracle best iterate
(chosen with the ground truth, as the official DMPlug code reports: not deployable).

    python benchmarks/solvers.py run --task sr_x4       # one task -> benchmarks/out/<task>.json
    python benchmarks/solvers.py report                 # all task JSONs -> benchmarks/RESULTS.md
    python benchmarks/solvers.py defaults               # every solver with no options, every task -> RESULTS.md
"""

from __future__ import annotations

import itertools
import json
import platform
import subprocess
import sys
from pathlib import Path

import torch
import typer
from results import write_section

from priorflow.bundled import BUNDLED_PRIORS
from priorflow.presets import DMPLUG_CAP, DPS_STEPS, MPGD_STEPS, DDIM_STEPS, NOISE, TASKS, classical_baseline, solver_options

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
PRIOR = BUNDLED_PRIORS["digits16"]

SCALES = {"dps": [0.25, 0.5, 1.0], "mpgd": [1.0, 2.0, 4.0, 8.0, 16.0]}
DMPLUG_LRS = [1e-2, 3e-2]
ES_GRID = [(w, p) for w in (10, 20, 50) for p in (25, 50, 100, 200)]
CAPS = [150, 300, DMPLUG_CAP]  # the iteration cap is tuned too: where ES-WMV never fires, it is the stop

app = typer.Typer(add_completion=False)


def _problem(task: str, split: str, count: int):
    from priorflow.datasets import load_digits
    from priorflow.presets import simulate

    x, _ = load_digits(split, 16)
    seeds = list(range(count))
    return x[:count], simulate(task, x[:count], seeds), seeds


def _scores(x: torch.Tensor, truth: torch.Tensor, seconds: float | torch.Tensor) -> dict:
    from priorflow.solvers.metrics import image_metrics

    m = image_metrics(x, truth)
    secs = torch.as_tensor(seconds, dtype=torch.float64)
    return {
        "psnr": float(m["psnr"].mean()), "psnr_std": float(m["psnr"].std()), "ssim": float(m["ssim"].mean()),
        "lpips": None if m["lpips"] is None else float(m["lpips"].mean()),
        "sec_per_image": float(secs.mean()) if secs.ndim else float(secs),
    }


class OracleTracker:
    """Callback that keeps each sample's best PSNR over DMPlug's iterates, using the ground truth (oracle)."""

    def __init__(self, truth: torch.Tensor, keep_trajectory: bool = False) -> None:
        self.truth = truth
        self.best_psnr = torch.full((len(truth),), -1.0, dtype=torch.float64)
        self.best_x = torch.zeros_like(truth)
        self.trajectory: list[list[torch.Tensor]] = [[] for _ in range(len(truth))] if keep_trajectory else []

    def __call__(self, step: int, x: torch.Tensor, index: torch.Tensor) -> None:
        x = x.detach().cpu()
        mse = (x - self.truth[index]).pow(2).flatten(1).mean(1).double()
        p = 10 * torch.log10(1 / mse.clamp_min(1e-20))
        better = p > self.best_psnr[index]
        self.best_psnr[index[better]] = p[better]
        self.best_x[index[better]] = x[better]
        for row, i in enumerate(index.tolist()):
            if self.trajectory:
                self.trajectory[i].append(x[row].clone())


def _replay_es(trajectories: list[list[torch.Tensor]], truth: torch.Tensor, window: int, patience: int, cap: int) -> float:
    """Mean PSNR of the iterates ES-WMV(window, patience) capped at `cap` would return on recorded trajectories."""
    from priorflow.solvers.metrics import psnr
    from priorflow.solvers.stopping import WindowedVarianceTracker

    chosen = []
    for traj in trajectories:
        tracker = WindowedVarianceTracker(window, patience)
        valid = torch.ones(1, dtype=torch.bool)
        for it, x in enumerate(traj[:cap]):
            if tracker.update(it, x[None], {}, torch.zeros(1), valid)[0]:
                break
        chosen.append(tracker.best_x[0])
    return float(psnr(torch.stack(chosen), truth).mean())


def _tune(task: str, n_val: int, log) -> dict:
    from priorflow.solvers import FixedIterations, build_solver, load_prior

    prior = load_prior(PRIOR)
    truth, problem, seeds = _problem(task, "val", n_val)
    tuned: dict = {}
    for name in ("dps", "mpgd"):
        scores = {}
        for scale in SCALES[name]:
            result = build_solver(name, **solver_options(name, {"scale": scale})).solve(prior, problem, seeds)
            scores[scale] = _scores(result.x, truth, 0)["psnr"]
            log(f"  val {task} {name} scale={scale}: {scores[scale]:.2f} dB")
        tuned[name] = {"scale": max(scores, key=scores.get), "val_psnr": scores}
    dmplug = {}
    for lr in DMPLUG_LRS:
        oracle = OracleTracker(truth, keep_trajectory=True)
        build_solver("dmplug", lr=lr, max_iters=DMPLUG_CAP, stopping=FixedIterations()).solve(prior, problem, seeds, callback=oracle)
        for (window, patience), cap in itertools.product(ES_GRID, CAPS):
            dmplug[(lr, window, patience, cap)] = _replay_es(oracle.trajectory, truth, window, patience, cap)
        log(f"  val {task} dmplug lr={lr}: oracle {float(oracle.best_psnr.mean()):.2f} dB, best ES "
            f"{max(v for k, v in dmplug.items() if k[0] == lr):.2f} dB")
    lr, window, patience, cap = max(dmplug, key=dmplug.get)
    tuned["dmplug"] = {"lr": lr, "window": window, "patience": patience, "max_iters": cap,
                       "val_psnr": {f"lr={k[0]} W={k[1]} P={k[2]} cap={k[3]}": v for k, v in dmplug.items()}}
    return tuned


@app.command()
def run(task: str = typer.Option(..., help=f"One of {', '.join(TASKS)}"), n_test: int = 50, n_val: int = 20,
        threads: int = 1) -> None:
    """Tune on the validation split, then solve the test split with every solver; write out/<task>.json."""
    torch.set_num_threads(threads)
    from priorflow.solvers import FixedIterations, build_solver, load_prior

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    tuned = _tune(task, n_val, log)
    prior = load_prior(PRIOR)
    truth, problem, seeds = _problem(task, "test", n_test)
    rows = {"baseline": _scores(classical_baseline(task, problem.y), truth, 0.0)}
    solvers = {name: build_solver(name, **solver_options(name, tuned.get(name, {}))) for name in ("ddim", "dps", "mpgd", "dmplug")}
    for name, solver in solvers.items():
        result = solver.solve(prior, problem, seeds)
        rows[name] = _scores(result.x, truth, result.seconds) | {"options": solver.model_dump(mode="json")}
        log(f"test {task} {name}: {rows[name]['psnr']:.2f} dB, {rows[name]['sec_per_image']:.2f} s/img")
    rows["dmplug"]["iterations_mean"] = float(result.iterations.float().mean())
    rows["dmplug"]["stop_reasons"] = {r: result.stop_reason.count(r) for r in sorted(set(result.stop_reason))}
    oracle = OracleTracker(truth)
    full = solvers["dmplug"].model_copy(update={"stopping": FixedIterations()})
    result = full.solve(prior, problem, seeds, callback=oracle)
    rows["dmplug_oracle"] = _scores(oracle.best_x, truth, result.seconds)
    log(f"test {task} dmplug oracle over {full.max_iters} iterations: {rows['dmplug_oracle']['psnr']:.2f} dB")
    OUT.mkdir(parents=True, exist_ok=True)
    record = {"task": task, "operator": TASKS[task]["operator"], "noise": NOISE, "baseline": TASKS[task]["baseline"],
              "n_test": n_test, "n_val": n_val, "tuned": tuned, "results": rows, "threads": threads,
              "torch": torch.__version__, "machine": platform.machine(), "cpus": torch.get_num_threads()}
    (OUT / f"{task}.json").write_text(json.dumps(record, indent=1))


@app.command()
def load_time() -> None:
    """Time a cold import of the network code and the load of the bundled prior, in fresh processes."""
    code = ("import time; t=time.perf_counter(); from priorflow.solvers.priors.prior import load_prior; "
            "import diffusers.models.unets.unet_2d; t1=time.perf_counter(); p=load_prior({!r}); t2=time.perf_counter(); "
            "print(t1-t, t2-t1)").format(str(PRIOR))
    runs = [tuple(map(float, subprocess.check_output([sys.executable, "-c", code], text=True).split())) for _ in range(3)]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "load_time.json").write_text(json.dumps({"import_s": [r[0] for r in runs], "load_s": [r[1] for r in runs]}))
    print(runs)


@app.command()
def defaults(n_test: int = 32, threads: int = 1,
             note: str = typer.Option("", help="A sentence for the section, e.g. what else ran on the machine.")) -> None:
    """Every solver with its defaults (no options: what `priorflow restore --solver NAME` runs) on every task,
    against the classical baseline, on the test digits; writes out/defaults.json and the defaults section."""
    torch.set_num_threads(threads)
    from priorflow.presets import BLIND, problem_for
    from priorflow.solvers import SOLVERS, build_solver, format_value, load_prior, operator_name

    prior = load_prior(PRIOR)
    record: dict = {"n_test": n_test, "threads": threads, "torch": torch.__version__, "machine": platform.machine(),
                    "note": note, "tasks": {}}
    for task in TASKS:
        truth, problem, seeds = _problem(task, "test", n_test)
        rows = {"baseline": _scores(classical_baseline(task, problem.y), truth, 0.0)}
        for name in SOLVERS:
            if name == "dmplug_blind" and task not in BLIND:
                continue
            given = problem_for(name, task, problem, seeds)
            solver = build_solver(name)
            result = solver.solve(prior, given, seeds)
            resolved = solver.resolved(operator_name(given))
            auto = {k: format_value(getattr(resolved, k)) for k in type(solver).auto_options}
            rows[name] = _scores(result.x, truth, result.seconds) | {
                "auto": auto, "operator": operator_name(given), "iterations_mean": float(result.iterations.float().mean()),
                "defaults": {k: "auto" if v is None and k in solver.auto_options else format_value(v)
                             for k, v in solver if k not in ("name", "trace_every")}}
            print(f"test {task} {name} defaults {auto}: {rows[name]['psnr']:.2f} dB "
                  f"(baseline {rows['baseline']['psnr']:.2f}), {rows[name]['sec_per_image']:.2f} s/img", file=sys.stderr, flush=True)
        record["tasks"][task] = rows
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "defaults.json").write_text(json.dumps(record, indent=1))
    defaults_report(note=None)


@app.command()
def defaults_report(note: str = typer.Option(None, help="Replace the recorded note (kept in out/defaults.json).")) -> None:
    """Write the defaults section of benchmarks/RESULTS.md from out/defaults.json (made by `defaults`)."""
    record = json.loads((OUT / "defaults.json").read_text())
    if note is not None:
        record["note"] = note
        (OUT / "defaults.json").write_text(json.dumps(record, indent=1))
    section = _defaults_section(record)
    write_section("defaults", section)
    print(section)


def _defaults_section(record: dict) -> str:
    import textwrap

    from priorflow.solvers import SOLVERS

    names = [n for n in SOLVERS if any(n in rows for rows in record["tasks"].values())]
    intro = (
        f"`python benchmarks/solvers.py defaults --n-test {record['n_test']}`: each solver built with no options "
        "(`build_solver(name)`, i.e. `priorflow restore --solver NAME` without `-s`), on the first "
        f"{record['n_test']} test digits (seeds 0..{record['n_test'] - 1}, measurements as in the solver tables above), against "
        "the classical baseline. Options that default to auto were resolved for the task's operator (`priorflow "
        "solvers` lists their tables); all defaults were chosen on the validation digits, never on these. "
        "dmplug_blind is given deblur_gauss's measurements with the kernel unknown (blind_blur, kernel_size 7); it "
        "has no other built-in task. DDIM ignores the measurements (the prior alone): it is the unconditional "
        "reference, not held to the baseline. PSNR in dB, mean ± std over images, (margin over the baseline's mean). "
        f"Machine: {record['machine']}, torch {record['torch']}, {record['threads']} thread(s). {record.get('note', '')}"
    )
    lines = ["## Solver defaults on the bundled digits prior", "", textwrap.fill(intro, 116), ""]
    shown: dict = {}
    for rows in record["tasks"].values():
        for name in names:
            if name in rows:
                shown.setdefault(name, rows[name]["defaults"])
    for name, defaults in shown.items():  # (a record from before "auto" was written as such shows None)
        values = {k: "auto" if v == "None" and k in SOLVERS[name].auto_options else v for k, v in defaults.items()}
        lines.append(f"- {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    lines += ["", "| task | baseline | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for task, rows in record["tasks"].items():
        base = rows["baseline"]["psnr"]
        cells = []
        for name in names:
            row = rows.get(name)
            cells.append("n/a" if row is None else f"{row['psnr']:.2f} ± {row['psnr_std']:.2f} ({row['psnr'] - base:+.2f})")
        lines.append(f"| {task} ({TASKS[task]['baseline']}) | {base:.2f} ± {rows['baseline']['psnr_std']:.2f} | " + " | ".join(cells) + " |")
    lines += ["", "Resolved auto options, iterations and seconds per image (batch of all test digits):", "",
              "| task | solver | operator | auto options | iterations (mean) | s / image |", "|---|---|---|---|---|---|"]
    for task, rows in record["tasks"].items():
        for name in names:
            if name in rows:
                row = rows[name]
                auto = ", ".join(f"{k}={v}" for k, v in row["auto"].items()) or "-"
                lines.append(f"| {task} | {name} | {row['operator']} | {auto} | {row['iterations_mean']:.0f} | "
                             f"{row['sec_per_image']:.2f} |")
    worst = {n: min(rows[n]["psnr"] - rows["baseline"]["psnr"] for rows in record["tasks"].values() if n in rows)
             for n in names if n != "ddim"}
    lines += ["", "Smallest margin over the baseline per solver: " + ", ".join(f"{n} {m:+.2f} dB" for n, m in worst.items()) + "."]
    return "\n".join(lines) + "\n"


def _fmt(row: dict) -> str:
    lp = "n/a" if row["lpips"] is None else f"{row['lpips']:.3f}"
    return f"{row['psnr']:.2f} ± {row['psnr_std']:.2f} | {row['ssim']:.3f} | {lp} | {row['sec_per_image']:.2f}"


@app.command()
def report() -> None:
    """Assemble benchmarks/out/*.json into the solver section of benchmarks/RESULTS.md."""
    labels = {"baseline": "classical baseline", "ddim": f"DDIM, {DDIM_STEPS} steps (prior only, ignores y)",
              "dps": f"DPS, DDPM {DPS_STEPS} steps", "mpgd": f"MPGD w/o projection, {MPGD_STEPS} DDIM steps, eta 0.5",
              "dmplug": "DMPlug + ES-WMV (deployable)", "dmplug_oracle": "DMPlug best iterate of the same capped run (**oracle**: picked with the ground truth)"}
    lines = [
        "## Solvers on the bundled digits prior", "",
        "Made by `make bench`, i.e. `python benchmarks/solvers.py run --task T` for T in sr_x4, inpaint_70, deblur_gauss,",
        "then `python benchmarks/solvers.py load-time` and `python benchmarks/solvers.py report`. Images are 16x16",
        "held-out digits the prior never saw; hyper-parameters were chosen on the validation split only. Mean ± std over",
        "images. LPIPS is n/a: AlexNet LPIPS needs images of at least 32 px (and its ImageNet weights are not on this",
        "machine). Seconds are wall time per image in a batch of all test images, one CPU thread.", "",
    ]
    load = OUT / "load_time.json"
    if load.exists():
        times = json.loads(load.read_text())
        lines += [f"Bundled prior load time (fresh process, 3 runs): `load_prior` {min(times['load_s']):.3f}-{max(times['load_s']):.3f} s "
                  f"after importing torch/diffusers, which itself took {min(times['import_s']):.1f}-{max(times['import_s']):.1f} s.", ""]
    for path in sorted(OUT.glob("*.json")):
        if path.stem not in TASKS:
            continue
        rec = json.loads(path.read_text())
        t = rec["tuned"]
        lines += [f"Machine: {rec['machine']}, torch {rec['torch']}, {rec['threads']} thread(s).", "",
                  f"### {rec['task']}: {rec['operator'][0]} {rec['operator'][1]}, noise {rec['noise'][0]} {rec['noise'][1]}", "",
                  f"{rec['n_test']} test images (one seed each, seeds 0..{rec['n_test'] - 1}); tuned on {rec['n_val']} validation images: "
                  f"DPS scale {t['dps']['scale']}, MPGD scale {t['mpgd']['scale']}, DMPlug lr {t['dmplug']['lr']}, "
                  f"ES-WMV W={t['dmplug']['window']} P={t['dmplug']['patience']}, cap {t['dmplug']['max_iters']} iterations. "
                  f"Baseline: {rec['baseline']}.", "",
                  "| method | PSNR (dB) | SSIM | LPIPS | s / image |", "|---|---|---|---|---|"]
        for key, label in labels.items():
            lines.append(f"| {label} | {_fmt(rec['results'][key])} |")
        d = rec["results"]["dmplug"]
        lines += ["", f"DMPlug stops: {d['stop_reasons']}, mean {d['iterations_mean']:.0f} iterations. "
                  f"ES-WMV vs oracle: {d['psnr'] - rec['results']['dmplug_oracle']['psnr']:+.2f} dB.", ""]
    section = "\n".join(lines)
    write_section("solvers", section)
    print(section)


if __name__ == "__main__":
    app()
