"""Solver benchmark on the bundled digits priors' held-out images, plain and perturbed.

Hyper-parameters are tuned on the validation split (never on the test split); the test split is then solved
once with the chosen values, as it is and moved slightly (`load_digits(..., perturbed=True)`: small shifts,
rotations and scales, inside the priors' training augmentation). Two groups of rows per task:
- pixel: the classical baseline, DDIM (prior only), DPS, MPGD, DMPlug with ES-WMV and DMPlug's oracle best iterate
  (chosen with the ground truth, as the official DMPlug code reports: not deployable), on digits16;
- latent: MPGD-AE and MPGD-Z (digits16 with the autoencoder digits16-ae), and on the latent prior digits16-latent
  DDIM, MPGD-LDM, DPS and DMPlug (ES-WMV and its oracle).

    python benchmarks/solvers.py run --task sr_x4 --group pixel   # -> benchmarks/out/<task>.<group>.json
    python benchmarks/solvers.py report                          # all of them -> benchmarks/RESULTS.md
    python benchmarks/solvers.py defaults                        # every solver with no options -> RESULTS.md
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
from common import OracleTracker, problem, replay_es, scores
from results import write_section
from tables import DDIM_STEPS, DMPLUG_CAP, DPS_STEPS, MPGD_STEPS, classical_baseline, solver_options

from priorflow.bundled import BUNDLED_PRIORS
from priorflow.presets import NOISE, TASKS, bundled_prior, bundled_prior_kind

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
PRIOR = BUNDLED_PRIORS["digits16"]

GROUPS = {  # row: (solver, prior)
    "pixel": {"ddim": ("ddim", "pixel"), "dps": ("dps", "pixel"), "mpgd": ("mpgd", "pixel"), "dmplug": ("dmplug", "pixel")},
    "latent": {"mpgd": ("mpgd", "pixel"), "mpgd_ae": ("mpgd_ae", "projection"), "mpgd_ae_tuned": ("mpgd_ae", "projection"),
               "mpgd_z": ("mpgd_z", "projection"), "mpgd_z_tuned": ("mpgd_z", "projection"), "ddim_latent": ("ddim", "latent"),
               "dps_latent": ("dps_latent", "latent"), "mpgd_ldm": ("mpgd_ldm", "latent"), "dmplug_latent": ("dmplug_latent", "latent")},
}
SCALES = [1.0, 2.0, 4.0, 8.0, 16.0]
TUNED_PROJECTION = {"scale": SCALES[:4], "multiplier": ["official", 0.1, 1.0, 3.0]}  # official: 0.0075 (AE), 0.01 (Z)
GRIDS = {  # per row, the options tuned on validation, each over its values (every combination)
    # DPS's scale was tuned over 0.25, 0.5, 1 on the first digits16 (0.5 best on every task); its 1000 steps are the
    # benchmark's largest cost, so the retrained prior is scored at that value only
    "dps": {"scale": [0.5]}, "dps_latent": {"scale": [0.5, 1.0, 2.0]},
    "mpgd": {"scale": SCALES}, "mpgd_ldm": {"scale": [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0]},
    "mpgd_ae": {"scale": SCALES}, "mpgd_z": {"scale": SCALES},  # the official multipliers
    "mpgd_ae_tuned": TUNED_PROJECTION, "mpgd_z_tuned": TUNED_PROJECTION,
}
DMPLUG_LRS = [1e-2, 3e-2]
ES_GRID = [(w, p) for w in (10, 20, 50) for p in (25, 50, 100, 200)]
CAPS = [150, 300, DMPLUG_CAP]  # the iteration cap is tuned too: where ES-WMV never fires, it is the stop
VARIANTS = {"plain": False, "perturbed": True}

app = typer.Typer(add_completion=False)


def _priors(group: str) -> dict:
    """The bundled priors a group's rows take, by kind (presets.bundled_prior_kind). The latent group repeats MPGD
    w/o projection on digits16, the reference of MPGD-AE and MPGD-Z."""
    return {kind: bundled_prior(kind) for _, kind in GROUPS[group].values()}


def _tune_dmplug(name: str, prior, task: str, n_val: int, log) -> dict:
    from priorflow.solvers import FixedIterations, build_solver

    truth, val, seeds = problem(task, "val", n_val)
    grid = {}
    for lr in DMPLUG_LRS:
        oracle = OracleTracker(truth, keep_trajectory=True)
        build_solver(name, lr=lr, max_iters=DMPLUG_CAP, stopping=FixedIterations(), seed_on_sphere=False).solve(
            prior, val, seeds, callback=oracle)
        for (window, patience), cap in itertools.product(ES_GRID, CAPS):
            grid[(lr, window, patience, cap)] = replay_es(oracle.trajectory, truth, window, patience, cap)
        log(f"  val {task} {name} lr={lr}: oracle {float(oracle.best_psnr.mean()):.2f} dB, best ES "
            f"{max(v for k, v in grid.items() if k[0] == lr):.2f} dB")
    lr, window, patience, cap = max(grid, key=grid.get)
    return {"lr": lr, "window": window, "patience": patience, "max_iters": cap,
            "val_psnr": {f"lr={k[0]} W={k[1]} P={k[2]} cap={k[3]}": v for k, v in grid.items()}}


def _tune(group: str, priors: dict, task: str, n_val: int, log) -> dict:
    """Each tunable solver's options, chosen on the validation digits (plain) by PSNR."""
    from priorflow.solvers import build_solver

    truth, val, seeds = problem(task, "val", n_val)
    tuned: dict = {}
    for row, (name, prior_kind) in GROUPS[group].items():
        if row in GRIDS:
            psnr = {}
            for values in itertools.product(*GRIDS[row].values()):
                options = {k: v for k, v in zip(GRIDS[row], values) if v != "official"}
                result = build_solver(name, **solver_options(name, options)).solve(priors[prior_kind], val, seeds)
                psnr[values] = scores(result.x, truth, 0)["psnr"]
                log(f"  val {task} {name} {options}: {psnr[values]:.2f} dB")
            best = max(psnr, key=psnr.get)
            tuned[row] = dict(zip(GRIDS[row], best)) | {"val_psnr": {" ".join(map(str, k)): v for k, v in psnr.items()}}
        elif name.startswith("dmplug"):
            tuned[row] = _tune_dmplug(name, priors[prior_kind], task, n_val, log)
    return tuned


def _test(group: str, priors: dict, tuned: dict, task: str, n_test: int, perturbed: bool, log) -> dict:
    """Every row of the group on the test digits (plain or perturbed), DMPlug's oracle rows included."""
    from priorflow.solvers import FixedIterations, build_solver

    truth, test, seeds = problem(task, "test", n_test, perturbed)
    rows = {"baseline": scores(classical_baseline(task, test.y), truth, 0.0)}
    for row, (name, prior_kind) in GROUPS[group].items():
        chosen = {k: v for k, v in tuned.get(row, {}).items() if v != "official" and k != "val_psnr"}
        solver = build_solver(name, **solver_options(name, chosen))
        result = solver.solve(priors[prior_kind], test, seeds)
        rows[row] = scores(result.x, truth, result.seconds) | {"options": solver.model_dump(mode="json")}
        log(f"test {task} {'perturbed' if perturbed else 'plain'} {row}: {rows[row]['psnr']:.2f} dB, "
            f"{rows[row]['sec_per_image']:.2f} s/img")
        if name.startswith("dmplug"):
            rows[row]["iterations_mean"] = float(result.iterations.float().mean())
            rows[row]["stop_reasons"] = {r: result.stop_reason.count(r) for r in sorted(set(result.stop_reason))}
            oracle = OracleTracker(truth)
            full = solver.model_copy(update={"stopping": FixedIterations()})
            capped = full.solve(priors[prior_kind], test, seeds, callback=oracle)
            rows[f"{row}_oracle"] = scores(oracle.best_x, truth, capped.seconds)
            log(f"test {task} {row} oracle over {full.max_iters} iterations: {rows[f'{row}_oracle']['psnr']:.2f} dB")
    return rows


@app.command()
def run(task: str = typer.Option(..., help=f"One of {', '.join(TASKS)}"), group: str = typer.Option("pixel", help="pixel or latent"),
        n_test: int = 50, n_val: int = 20, threads: int = 1) -> None:
    """Tune the group's solvers on the validation split, then solve the test split, plain and perturbed;
    write out/<task>.<group>.json."""
    torch.set_num_threads(threads)
    if group not in GROUPS:
        raise typer.BadParameter(f"group must be one of {', '.join(GROUPS)}")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    priors = _priors(group)
    tuned = _tune(group, priors, task, n_val, log)
    results = {variant: _test(group, priors, tuned, task, n_test, perturbed, log) for variant, perturbed in VARIANTS.items()}
    OUT.mkdir(parents=True, exist_ok=True)
    record = {"task": task, "group": group, "operator": TASKS[task]["operator"], "noise": NOISE, "baseline": TASKS[task]["baseline"],
              "n_test": n_test, "n_val": n_val, "tuned": tuned, "results": results, "threads": threads,
              "priors": {kind: p.identity["sha256"][:12] for kind, p in priors.items()},
              "torch": torch.__version__, "machine": platform.machine()}
    (OUT / f"{task}.{group}.json").write_text(json.dumps(record, indent=1))


@app.command()
def load_time() -> None:
    """Time a cold import of the network code and the load of the bundled prior, in fresh processes."""
    code = ("import time; t=time.perf_counter(); from priorflow.solvers.priors.loading import load_prior; "
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
    from tables import BLIND, problem_for

    from priorflow.solvers import SOLVERS, build_solver, operator_name
    from priorflow.solvers.options import format_value

    priors = _priors("pixel") | _priors("latent")
    record: dict = {"n_test": n_test, "threads": threads, "torch": torch.__version__, "machine": platform.machine(),
                    "note": note, "tasks": {}}
    for task in TASKS:
        truth, measured, seeds = problem(task, "test", n_test)
        rows = {"baseline": scores(classical_baseline(task, measured.y), truth, 0.0)}
        for name in SOLVERS:
            if name == "dmplug_blind" and task not in BLIND:
                continue
            given = problem_for(name, task, measured, seeds)
            solver = build_solver(name)
            result = solver.solve(priors[bundled_prior_kind(name)], given, seeds)
            resolved = solver.resolved(operator_name(given))
            auto = {k: format_value(getattr(resolved, k)) for k in type(solver).auto_options}
            rows[name] = scores(result.x, truth, result.seconds) | {
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


LABELS = {
    "baseline": "classical baseline",
    "ddim": f"DDIM, {DDIM_STEPS} steps (prior only, ignores y)",
    "dps": f"DPS, DDPM {DPS_STEPS} steps",
    "mpgd": f"MPGD w/o projection, {MPGD_STEPS} DDIM steps, eta 0.5",
    "mpgd_ae": "MPGD-AE (digits16 + digits16-ae), official step multiplier 0.0075",
    "mpgd_ae_tuned": "MPGD-AE, step multiplier tuned",
    "mpgd_z": "MPGD-Z (digits16 + digits16-ae), official step multiplier 0.01",
    "mpgd_z_tuned": "MPGD-Z, step multiplier tuned",
    "dmplug": "DMPlug + ES-WMV (deployable)",
    "dmplug_oracle": "DMPlug best iterate of the same capped run (**oracle**: picked with the ground truth)",
    "ddim_latent": f"latent DDIM, {DDIM_STEPS} steps (digits16-latent alone, ignores y)",
    "dps_latent": f"DPS over digits16-latent (dps_latent), {DPS_STEPS} steps",
    "mpgd_ldm": f"MPGD-LDM (mpgd_ldm), {MPGD_STEPS} latent DDIM steps, eta 0.5",
    "dmplug_latent": "latent DMPlug (dmplug_latent) + ES-WMV (deployable)",
    "dmplug_latent_oracle": "latent DMPlug best iterate (**oracle**: picked with the ground truth)",
}


def _cells(plain: dict, perturbed: dict | None) -> str:
    if perturbed is None:
        return f"{plain['psnr']:.2f} ± {plain['psnr_std']:.2f} | n/a | n/a | {plain['ssim']:.3f} | n/a | {plain['sec_per_image']:.2f}"
    return (f"{plain['psnr']:.2f} ± {plain['psnr_std']:.2f} | {perturbed['psnr']:.2f} ± {perturbed['psnr_std']:.2f} | "
            f"{perturbed['psnr'] - plain['psnr']:+.2f} | {plain['ssim']:.3f} | {perturbed['ssim']:.3f} | {plain['sec_per_image']:.2f}")


def _tuned_text(tuned: dict) -> str:
    parts = []
    for row, t in tuned.items():
        if "lr" not in t:
            parts.append(f"{row} " + ", ".join(f"{k} {v}" for k, v in t.items() if k != "val_psnr"))
        else:
            parts.append(f"{row} lr {t['lr']}, ES-WMV W={t['window']} P={t['patience']}, cap {t['max_iters']}")
    return "; ".join(parts)


def _projection_verdict(results: dict) -> str:
    """Whether MPGD's projections help on this task: each projected variant against MPGD w/o projection."""
    plain = results["plain"]
    if not {"mpgd", "mpgd_ae", "mpgd_z"} <= set(plain):
        return ""
    deltas = {n: plain[n]["psnr"] - plain["mpgd"]["psnr"] for n in ("mpgd_ae", "mpgd_ae_tuned", "mpgd_z", "mpgd_z_tuned") if n in plain}
    return "Against MPGD w/o projection (plain digits): " + ", ".join(f"{n} {d:+.2f} dB" for n, d in deltas.items()) + "."


TITLES = {"pixel": "Solvers on the bundled digits prior", "latent": "Latent and projected solvers on the bundled digits priors"}
SECTIONS = {"pixel": "solvers", "latent": "solvers_latent"}


@app.command()
def report(group: str = typer.Option("pixel", help="pixel or latent: which group's section to write")) -> None:
    """Assemble benchmarks/out/<task>.<group>.json into the group's section of benchmarks/RESULTS.md."""
    lines = [
        f"## {TITLES[group]}", "",
        f"Made by `python benchmarks/solvers.py run --task T --group {group} [--n-test N --n-val M]` for T in sr_x4,",
        f"inpaint_70, deblur_gauss, then `python benchmarks/solvers.py report --group {group}` (`make bench` runs both",
        "groups with the defaults, 50 test and 20 validation digits). Images are 16x16 held-out digits the priors never",
        "saw, as they are (plain) and each moved by a fixed small shift, rotation and scale (perturbed;",
        "`load_digits(split, perturbed=True)`: shift up to ±1.5 px, rotation up to ±12°, scale 0.9-1.1).",
        "Hyper-parameters were chosen on the plain validation split only. Mean ± std over images; Δ is perturbed minus",
        "plain. LPIPS is not reported: AlexNet LPIPS needs images of at least 32 px. Seconds are wall time per image",
        "(plain run) in a batch of all test images, one CPU thread.", "",
    ]
    load = OUT / "load_time.json"
    if group == "pixel" and load.exists():
        times = json.loads(load.read_text())
        lines += [f"Bundled prior load time (fresh process, 3 runs): `load_prior` {min(times['load_s']):.3f}-{max(times['load_s']):.3f} s "
                  f"after importing torch/diffusers, which itself took {min(times['import_s']):.1f}-{max(times['import_s']):.1f} s.", ""]
    for task in TASKS:
        path = OUT / f"{task}.{group}.json"
        if not path.exists():
            continue
        rec = json.loads(path.read_text())
        merged = rec["results"]
        lines += [f"### {task}: {rec['operator'][0]} {rec['operator'][1]}, noise {rec['noise'][0]} {rec['noise'][1]}", "",
                  f"{rec['n_test']} test images (one seed each, seeds 0..{rec['n_test'] - 1}); tuned on {rec['n_val']} validation "
                  f"images: {_tuned_text(rec['tuned'])}. Baseline: {rec['baseline']}. Priors (sha256 prefix): "
                  f"{', '.join(f'{k} {v}' for k, v in rec.get('priors', {}).items())}. Machine: {rec['machine']}, "
                  f"torch {rec['torch']}, {rec['threads']} thread(s).", "",
                  "| method | PSNR plain | PSNR perturbed | Δ | SSIM plain | SSIM perturbed | s / image |",
                  "|---|---|---|---|---|---|---|"]
        for key, label in LABELS.items():
            if key in merged["plain"]:
                lines.append(f"| {label} | {_cells(merged['plain'][key], merged['perturbed'].get(key))} |")
        lines.append("")
        for key in ("dmplug", "dmplug_latent"):
            if key in merged["plain"]:
                d = merged["plain"][key]
                lines.append(f"- {key} (plain) stops: {d['stop_reasons']}, mean {d['iterations_mean']:.0f} iterations; ES-WMV vs "
                             f"oracle {d['psnr'] - merged['plain'][key + '_oracle']['psnr']:+.2f} dB.")
        verdict = _projection_verdict(merged)
        lines += [f"- {verdict}"] if verdict else []
        lines.append("")
    section = "\n".join(lines)
    write_section(SECTIONS[group], section)
    print(section)


if __name__ == "__main__":
    app()
