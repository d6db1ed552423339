"""DMPlug's stopping rules, studied on recorded trajectories.

A DMPlug run with a fixed iteration count is recorded once per cell (task x noise) and split: every iterate R(z),
its seed z and its data fit, per sample. Adam's update is per element, so a sample's trajectory does not depend on
the others in its batch nor on when a rule would have stopped it: replaying a stopping rule on the recording gives
exactly the iterate it would return in a live run, for a fraction of the cost. Rules are tuned on the validation
recordings and scored on the test recordings.

    python benchmarks/stopping.py record --split val --n 12 --sphere   # -> out/trajectories/lr0.03-sphere/<cell>.val.pt
    python benchmarks/stopping.py record --split test --n 20 --sphere
    python benchmarks/stopping.py study                                # replay every rule -> out/stopping.json
    python benchmarks/stopping.py report                               # -> benchmarks/RESULTS.md
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import torch
import typer
from common import problem
from tables import ROBUSTNESS_NOISE

from priorflow.presets import NOISE, bundled_prior

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
TRAJECTORIES = OUT / "trajectories"
CELLS = {f"{task}.sigma0.05": (task, NOISE) for task in ("sr_x4", "inpaint_70", "deblur_gauss")} | {
    f"{task}.{noise}": (task, ROBUSTNESS_NOISE[noise]) for task in ("sr_x4", "deblur_gauss") for noise in ROBUSTNESS_NOISE
}
LR, CAP = 3e-2, 1000
IMAGE_SHAPE = (1, 16, 16)  # digits16's images and seeds
TASK_LABELS = {"sr_x4": "SR", "deblur_gauss": "deblur", "inpaint_70": "inpaint"}


def run_name(lr: float, sphere: bool) -> str:
    """The folder of one DMPlug setting's recordings."""
    return f"lr{lr:g}" + ("-sphere" if sphere else "")


app = typer.Typer(add_completion=False, no_args_is_help=True)


@app.callback()
def main() -> None:
    """Record DMPlug trajectories and replay stopping rules on them."""


def record_task(task: str, cells: list[str], split: str, n: int, lr: float, cap: int, sphere: bool) -> dict[str, dict]:
    """Run DMPlug for `cap` iterations with no stopping on the first n digits of a split, for the cells of one
    task solved as one batch (rows independent); every iterate kept."""
    from priorflow.presets import TASKS
    from priorflow.solvers import InverseProblem, build_operator, build_solver

    problems = {cell: problem(task, split, n, noise=CELLS[cell][1]) for cell in cells}
    seeds = [s for _, _, cell_seeds in problems.values() for s in cell_seeds]
    name, params = TASKS[task]["operator"]
    batch = InverseProblem(torch.cat([p.y for _, p, _ in problems.values()]), build_operator(name, IMAGE_SHAPE, seeds, **params))
    objective = batch.objective("mse")
    xs, fits = [], []

    def keep(step: int, x: torch.Tensor, index: torch.Tensor) -> None:
        xs.append(x.detach().flatten(1).cpu())
        fits.append(objective(x.detach()).cpu())

    solver = build_solver("dmplug", lr=lr, max_iters=cap, stopping={"rule": "fixed"}, trace_every=1, seed_on_sphere=sphere)
    start = time.perf_counter()
    result = solver.solve(bundled_prior("pixel"), batch, seeds, callback=keep)
    seconds = (time.perf_counter() - start) / len(cells)
    x, fit, z = torch.stack(xs, 1), torch.stack(fits, 1), result.trace.flatten(2)
    out = {}
    for i, (cell, (truth, prob, cell_seeds)) in enumerate(problems.items()):
        rows = slice(i * n, (i + 1) * n)
        out[cell] = {
            "cell": cell, "task": task, "noise": CELLS[cell][1], "split": split, "lr": lr, "cap": cap, "sphere": sphere,
            "seeds": cell_seeds, "truth": truth.flatten(1), "y": prob.y, "x": x[rows].clone(), "fit": fit[rows].clone(),
            "z": z[rows].clone(), "seconds": seconds,
        }
    return out


@app.command()
def record(split: str = "val", n: int = 12, task: list[str] = typer.Option(None), lr: float = LR, cap: int = CAP,
           sphere: bool = typer.Option(False, help="DMPlug's seed_on_sphere")) -> None:
    """Record the trajectories of every cell of the tasks (all by default) on a split."""
    folder = TRAJECTORIES / run_name(lr, sphere)
    folder.mkdir(parents=True, exist_ok=True)
    for name in task or sorted({t for t, _ in CELLS.values()}):
        cells = [c for c, (t, _) in CELLS.items() if t == name and not (folder / f"{c}.{split}.pt").exists()]
        if not cells:
            continue
        for cell, data in record_task(name, cells, split, n, lr, cap, sphere).items():
            path = folder / f"{cell}.{split}.pt"
            torch.save(data, path.with_suffix(".tmp"))
            path.with_suffix(".tmp").rename(path)
            print(f"{cell} {split}: {data['seconds']:.0f} s per cell", flush=True)


def load_run(run: str, split: str) -> dict[str, dict]:
    """The recordings of one DMPlug setting on a split, by cell; z at iteration 0 (the seed's draw) put back."""
    from priorflow.solvers.physics.noise import randn, sample_generators

    out = {}
    for cell in CELLS:
        path = TRAJECTORIES / run / f"{cell}.{split}.pt"
        if path.exists():
            data = torch.load(path)
            z0 = randn(sample_generators(data["seeds"]), IMAGE_SHAPE, torch.device("cpu")).flatten(1)
            data["z"] = torch.cat([z0[:, None], data["z"]], 1)
            out[cell] = data
    return out


def replay(rule, data: dict) -> dict:
    """What a stopping rule returns on a cell's recording, per sample: the chosen iterate's PSNR, the iteration at
    which it stopped (the cap if it never did) and whether it stopped before the cap. The rule's tracker sees the
    whole batch, as in a live run; a sample's answer is frozen when it stops."""
    x, z, fit = data["x"], data["z"], data["fit"]
    n, steps = x.shape[:2]
    tracker = rule.tracker()
    valid = torch.ones(n, dtype=torch.bool)
    chosen = torch.zeros(n, x.shape[2])
    stopped_at = torch.full((n,), -1)
    for t in range(steps):
        stop = tracker.update(t, x[:, t].view(n, *IMAGE_SHAPE), {"z": z[:, t]}, fit[:, t], valid) & (stopped_at < 0)
        if stop.any():
            chosen[stop] = tracker.best_x[stop].flatten(1)
            stopped_at[stop] = t
    never = stopped_at < 0
    chosen[never] = tracker.best_x[never].flatten(1)
    return {"psnr": flat_psnr(chosen, data["truth"]), "stopped": ~never,
            "iterations": torch.where(never, torch.full_like(stopped_at, steps), stopped_at + 1)}


def flat_psnr(x: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """PSNR (data range 1) of flattened images x (..., P) against truth (P) or (..., P), over the last dimension."""
    mse = (x - truth).pow(2).mean(-1).double()
    return 10 * torch.log10(1 / mse.clamp_min(1e-20))


def oracle(data: dict) -> torch.Tensor:
    """Each sample's best PSNR over the recorded iterates (chosen with the ground truth)."""
    return flat_psnr(data["x"], data["truth"][:, None]).max(1).values


def windowed_variance(traj: torch.Tensor, window: int) -> torch.Tensor:
    """(n, T) variance over the last `window` iterates of (n, T, P) trajectories, mean over P (NaN until full)."""
    c1 = torch.cumsum(traj.double(), 1)
    c2 = torch.cumsum(traj.double() ** 2, 1)
    pad = torch.zeros_like(c1[:, :1])
    c1, c2 = torch.cat([pad, c1], 1), torch.cat([pad, c2], 1)
    s1, s2 = c1[:, window:] - c1[:, :-window], c2[:, window:] - c2[:, :-window]
    v = (s2 / window - (s1 / window) ** 2).clamp_min(0).mean(2)
    return torch.cat([torch.full((traj.shape[0], window - 1), float("nan"), dtype=v.dtype), v], 1)


def min_with_patience(signal: torch.Tensor, patience: int, rel: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """ES-WMV's selection on a precomputed (n, T) signal: the iteration of its lowest value (an improvement must
    beat the best by the fraction `rel`), stopping `patience` iterations after the last improvement."""
    n, steps = signal.shape
    best = torch.full((n,), float("inf"), dtype=signal.dtype)
    pick = torch.zeros(n, dtype=torch.long)
    wait = torch.zeros(n, dtype=torch.long)
    stop = torch.full((n,), -1)
    for t in range(steps):
        value = signal[:, t]
        if torch.isnan(value).all():
            pick[:] = t
            continue
        better = (value < best * (1 - rel)) & (stop < 0)
        best = torch.where(better, value, best)
        pick = torch.where(better, torch.full_like(pick, t), pick)
        wait = torch.where(better, 0, wait + 1)
        stop[(wait >= patience) & (stop < 0)] = t
    return pick, stop


def first_true(hit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stop (and return the current iterate) at the first True of each row; never: the last iterate."""
    steps = hit.shape[1]
    stop = torch.where(hit.any(1), hit.float().argmax(1), torch.full((hit.shape[0],), -1))
    return torch.where(stop >= 0, stop, steps - 1), stop


def fit_plateau(data: dict, window: int, eps: float):
    """Stop once the data fit fell by less than the fraction eps over the last `window` iterations."""
    fit = data["fit"]
    rel = torch.full_like(fit, float("inf"))
    rel[:, window:] = (fit[:, :-window] - fit[:, window:]) / fit[:, window:].clamp_min(1e-12)
    return first_true(rel < eps)


def variance_plateau(data: dict, window: int, eps: float):
    """Stop once the windowed variance of R(z) fell by less than the factor 1 + eps over the last `window` iterations."""
    v = windowed_variance(data["x"], window)
    ratio = torch.full_like(v, float("inf"))
    ratio[:, window:] = v[:, :-window] / v[:, window:]
    return first_true(ratio < 1 + eps)


def seed_growth(data: dict, c: float):
    """Stop once mean(z^2) grew by c above its lowest value so far (z leaving the prior's typical set)."""
    zz = data["z"].pow(2).mean(2)
    return first_true(zz - zz.cummin(1).values > c)


FAMILIES = {  # label: (parameter grid, pick function(data, *params) -> (picked iteration, stop iteration or -1))
    "ES-WMV on R(z) (published)": ({"window": [10, 20, 50], "patience": [10, 25, 50, 100, 200]},
                                   lambda d, w, p: min_with_patience(windowed_variance(d["x"], w), p)),
    "ES-WMV on z": ({"window": [10, 20], "patience": [10, 25, 50, 100]},
                    lambda d, w, p: min_with_patience(windowed_variance(d["z"], w), p)),
    "ES-WMV, relative improvement": ({"window": [10, 20], "patience": [10, 25, 50], "rel": [0.1, 0.3, 0.5]},
                                     lambda d, w, p, r: min_with_patience(windowed_variance(d["x"], w), p, r)),
    "data-fit plateau": ({"window": [10, 20, 50], "eps": [0.003, 0.01, 0.02, 0.05, 0.1]}, fit_plateau),
    "variance plateau": ({"window": [10, 20], "eps": [0.1, 0.5, 1.0]}, variance_plateau),
    "seed growth": ({"c": [0.05, 0.1, 0.2, 0.3]}, seed_growth),
}
SETTINGS = {  # DMPlug as it shipped before this study and as it ships now: (recordings, ES-WMV window and patience)
    "former default: free seed, ES-WMV W=20 P=50": ("lr0.03", (20, 50)),
    "default: seed on its sphere, ES-WMV W=20 P=10": ("lr0.03-sphere", (20, 10)),
}
TUNING_CELLS = [c for c in CELLS if c.split(".")[1] in ("sigma0.05", "gaussian_low", "gaussian_high")]


def evaluate(family: str, params: tuple, recordings: dict[str, dict]) -> dict[str, dict]:
    """Per cell: mean PSNR gap to the oracle, fraction stopped before the cap, mean iterations run."""
    pick_fn = FAMILIES[family][1]
    out = {}
    for cell, data in recordings.items():
        pick, stop = pick_fn(data, *params)
        n, steps = data["x"].shape[:2]
        psnr = flat_psnr(data["x"][torch.arange(n), pick], data["truth"])
        iterations = torch.where(stop >= 0, stop + 1, torch.full_like(stop, steps))
        out[cell] = {"gap": float((oracle(data) - psnr).mean()), "stopped": float((stop >= 0).float().mean()),
                     "iterations": float(iterations.float().mean()), "psnr": float(psnr.mean())}
    return out


def tune(family: str, recordings: dict[str, dict]) -> tuple[tuple, dict]:
    """The family's parameters of smallest worst gap over the Gaussian validation cells, among those that stop at
    least 90 % of the samples in each (all of them if none does)."""
    grid = FAMILIES[family][0]
    tuning = {c: recordings[c] for c in TUNING_CELLS if c in recordings}
    scored = {}
    for values in itertools.product(*grid.values()):
        result = evaluate(family, values, tuning)
        stops = min(r["stopped"] for r in result.values())
        scored[values] = (stops >= 0.9, -max(r["gap"] for r in result.values()))
    best = max(scored, key=scored.get)
    return best, dict(zip(grid, best))


@app.command()
def study(runs: list[str] = typer.Option(["lr0.03", "lr0.03-sphere"], help="Recording folders to study.")) -> None:
    """Tune every rule family on the Gaussian validation cells of each run, score it on every test cell;
    writes out/stopping.json."""
    torch.set_num_threads(1)
    record: dict = {}
    for run in runs:
        val, test = load_run(run, "val"), load_run(run, "test")
        record[run] = {}
        for family in FAMILIES:
            values, params = tune(family, val)
            record[run][family] = {"params": params, "val": evaluate(family, values, val), "test": evaluate(family, values, test)}
            worst = max(r["gap"] for r in record[run][family]["test"].values())
            print(f"{run} {family} {params}: worst test gap {worst:.2f} dB", flush=True)
    published = next(iter(FAMILIES))
    record["settings"] = {label: evaluate(published, params, load_run(run, "test")) for label, (run, params) in SETTINGS.items()}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "stopping.json").write_text(json.dumps(record, indent=1))


def _short(cell: str) -> str:
    task, noise = cell.split(".", 1)
    return f"{TASK_LABELS[task]} {noise.replace('_', ' ')}"


@app.command()
def report(note: str = typer.Option("", help="A sentence for the section: what the runs were, what ran beside them.")) -> None:
    """The stopping-rule study -> RESULTS.md: per DMPlug setting and rule family, the tuned parameters and, on
    every test cell, the PSNR gap to the oracle and the fraction of samples stopped before the cap."""
    from results import write_section

    record = json.loads((OUT / "stopping.json").read_text())
    lines = ["## DMPlug's stopping rules, studied on recorded trajectories", "",
             "`python benchmarks/stopping.py record --split val --n 12 [--sphere] [--lr L]`, `record --split test --n 20 ...`, "
             "then `study` and `report`. DMPlug run for 1000 iterations with no stopping, every iterate recorded; "
             "each rule replayed on the recordings (exact: a sample's trajectory does not depend on when it stops). "
             "Each family's parameters were chosen on the Gaussian validation cells (sigma 0.05, 0.12, 0.18: the "
             "smallest worst gap among settings that stop >= 90 % of the samples in every cell), then scored on the "
             "test cells. Entry: mean PSNR gap to the oracle best iterate (dB) / samples stopped before the cap. "
             + note, ""]
    settings = record.pop("settings")
    cells = list(next(iter(settings.values())))
    lines += ["### DMPlug's default before and after, on the test cells", "",
              "| setting | " + " | ".join(_short(c) for c in cells) + " |", "|---|" + "---|" * len(cells)]
    for label, result in settings.items():
        lines.append(f"| {label}: PSNR (dB) | " + " | ".join(f"{result[c]['psnr']:.2f}" for c in cells) + " |")
        lines.append(f"| {label}: gap to its oracle / stopped / mean iterations | " + " | ".join(
            f"{result[c]['gap']:.2f} / {result[c]['stopped']:.0%} / {result[c]['iterations']:.0f}" for c in cells) + " |")
    lines.append("")
    for run, families in record.items():
        cells = list(next(iter(families.values()))["test"])
        lines += [f"### DMPlug `{run}`", "", "| rule (tuned parameters) | worst | " + " | ".join(_short(c) for c in cells) + " |",
                  "|---|---|" + "---|" * len(cells)]
        for family, result in families.items():
            test = result["test"]
            params = ", ".join(f"{k} {v}" for k, v in result["params"].items())
            worst = max(r["gap"] for r in test.values())
            lines.append(f"| {family} ({params}) | {worst:.2f} | " + " | ".join(
                f"{test[c]['gap']:.2f} / {test[c]['stopped']:.0%}" for c in cells) + " |")
        lines.append("")
    write_section("stopping", "\n".join(lines))


if __name__ == "__main__":
    app()
