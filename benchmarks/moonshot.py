"""The moonshot: dmplug_warm (DMPlug from MPGD's answer, inverted through R) against DMPlug's oracle, at a fifth of
DMPlug's compute, on the sigma 0.05 tasks.

    python benchmarks/moonshot.py tune     # validation digits: the grid below -> out/moonshot.tune.json
    python benchmarks/moonshot.py run      # test digits: dmplug_warm's defaults -> out/moonshot.json
    python benchmarks/moonshot.py report   # -> RESULTS.md (section "moonshot")

DMPlug's numbers (its defaults' deployable output, its oracle best iterate, its mean NFE) are replayed from the
recordings of `stopping.py record --sphere` on the same digits and seeds; run those first.
"""

from __future__ import annotations

import itertools
import json

import torch
import typer
from common import problem
from results import write_section
from stopping import OUT, load_run, oracle, replay

from priorflow.presets import bundled_prior
from priorflow.solvers import build_solver
from priorflow.solvers.algorithms.base import to_unit
from priorflow.solvers.algorithms.stopping import ESWMV
from priorflow.solvers.metrics import psnr

TASKS = ("sr_x4", "inpaint_70", "deblur_gauss")
GRID = {"warm_steps": (20, 30, 50), "inversion_iterations": (5, 8), "lr": (3e-3, 1e-2, 3e-2)}
ITERATES = (6, 11, 21)  # max_iters tried: one run of the longest gives the others (Adam is per element, the rule fixed)
RUN = "lr0.03-sphere"  # DMPlug's default, as recorded
DEFAULT_RULE = ESWMV(window=20, patience=10)

app = typer.Typer(add_completion=False, no_args_is_help=True)


@app.callback()
def main() -> None:
    """dmplug_warm against DMPlug's oracle."""


def dmplug_reference(split: str) -> dict[str, dict]:
    """Per task, from the recordings: DMPlug's default (deployable PSNR, mean NFE) and its oracle PSNR."""
    out = {}
    for cell, data in load_run(RUN, split).items():
        task, noise = cell.split(".", 1)
        if noise == "sigma0.05":
            deployed = replay(DEFAULT_RULE, data)
            out[task] = {"psnr": float(deployed["psnr"].mean()), "oracle": float(oracle(data).mean()),
                         "nfe": 3 * float(deployed["iterations"].float().mean()), "n": int(data["x"].shape[0])}
    return out


def warm_iterates(task: str, split: str, n: int, options: dict, iterates: int) -> tuple[list[float], float]:
    """Mean PSNR of each iterate of one dmplug_warm run with `options` and its NFE per image before the refinement."""
    truth, measured, seeds = problem(task, split, n)
    curve: list[float] = []

    def watch(step: int, x: torch.Tensor, index: torch.Tensor) -> None:
        curve.append(float(psnr(x.cpu(), truth[index.cpu()]).mean()))

    result = build_solver("dmplug_warm", max_iters=iterates, **options).solve(bundled_prior("pixel"), measured, seeds, watch)
    return curve, float(result.nfe.float().mean()) - 3 * iterates


@app.command()
def tune(n: int = 12, threads: int = 1) -> None:
    """Every grid point on the first n validation digits of each task; the choice: best mean PSNR over the tasks
    among settings within a fifth of DMPlug's validation NFE on every task."""
    torch.set_num_threads(threads)
    reference = dmplug_reference("val")
    rows = []
    for values in itertools.product(*GRID.values()):
        options = dict(zip(GRID, values))
        per_task = {task: warm_iterates(task, "val", n, options, max(ITERATES)) for task in TASKS}
        for iterates in ITERATES:
            rows.append({**options, "max_iters": iterates, "nfe": per_task[TASKS[0]][1] + 3 * iterates,
                         "psnr": {task: curve[iterates - 1] for task, (curve, _) in per_task.items()}})
        print(rows[-1], flush=True)
    budget = min(r["nfe"] for r in reference.values()) / 5
    within = [r for r in rows if r["nfe"] <= budget]
    best = max(within, key=lambda r: sum(r["psnr"].values()))
    record = {"n": n, "reference": reference, "budget_nfe": budget, "rows": rows, "best": best}
    (OUT / "moonshot.tune.json").write_text(json.dumps(record, indent=1))
    print("best:", best)


def inversion_scores(prior, x: torch.Tensor) -> dict[str, float]:
    """Mean PSNR of R(z) against the clean images x it was inverted from: plain DDIM inversion (eps taken at x_prev
    and the lower timestep) and dmplug_warm's fixed point with 1 iteration and with its default."""
    warm = build_solver("dmplug_warm")
    schedule, timesteps = prior.schedule, prior.schedule.ddim_timesteps(warm.steps)
    with torch.no_grad():
        plain = x * 2 - 1
        for j in range(len(timesteps) - 2, -1, -1):
            x0, eps = prior.denoise(plain, timesteps[j + 1])
            ab = schedule.alpha_bar(timesteps[j])
            plain = ab**0.5 * x0 + (1 - ab) ** 0.5 * eps
        seeds = {"plain DDIM inversion": plain,
                 "fixed point, 1 iteration": warm.model_copy(update={"inversion_iterations": 1}).invert(prior, x * 2 - 1),
                 f"fixed point, {warm.inversion_iterations} iterations (default)": warm.invert(prior, x * 2 - 1)}
        return {k: float(psnr(to_unit(warm.reverse(prior, z)).cpu(), x).mean()) for k, z in seeds.items()}


@app.command()
def run(n: int = 20, threads: int = 1) -> None:
    """dmplug_warm's defaults and its MPGD warm start alone on the first n test digits of each task."""
    torch.set_num_threads(threads)
    prior = bundled_prior("pixel")
    reference = dmplug_reference("test")
    warm = build_solver("dmplug_warm")
    record = {"n": n, "options": warm.model_dump(mode="json"), "tasks": {},
              "inversion": inversion_scores(prior, problem("sr_x4", "test", n)[0].to(prior.device))}
    for task in TASKS:
        truth, measured, seeds = problem(task, "test", n)
        result = warm.solve(prior, measured, seeds)
        start = build_solver("mpgd", steps=warm.warm_steps).solve(prior, measured, seeds)
        record["tasks"][task] = {
            "dmplug": reference[task],
            "warm": {"psnr": float(psnr(result.x.cpu(), truth).mean()), "nfe": float(result.nfe.float().mean()),
                     "seconds_per_image": float(result.seconds.mean())},
            "mpgd": {"psnr": float(psnr(start.x.cpu(), truth).mean()), "nfe": float(start.nfe.float().mean())},
        }
        print(task, record["tasks"][task], flush=True)
    (OUT / "moonshot.json").write_text(json.dumps(record, indent=1))


@app.command()
def report() -> None:
    """The moonshot rows -> RESULTS.md."""
    r = json.loads((OUT / "moonshot.json").read_text())
    t = json.loads((OUT / "moonshot.tune.json").read_text())
    o = r["options"]
    lines = ["## The moonshot: dmplug_warm against DMPlug's oracle", "",
             "`python benchmarks/moonshot.py tune`, `run`, then `report`. dmplug_warm: MPGD "
             f"({o['warm_steps']} steps) -> R inverted by fixed point ({o['inversion_iterations']} iterations per step) -> "
             f"{o['max_iters'] - 1} Adam steps (lr {o['lr']:g}) on y -> the last iterate; no ground truth anywhere. "
             f"DMPlug: its defaults (seed on its sphere, ES-WMV W=20 P=10, cap 1000), replayed from the `{RUN}` "
             f"recordings of the same digits and seeds; its oracle is the best iterate of the 1000 (picked with the "
             f"ground truth). {r['n']} test digits per task, seeds 0..{r['n'] - 1}, sigma 0.05, 1 CPU thread.", "",
             "| task | DMPlug + ES: PSNR / NFE | DMPlug oracle: PSNR | MPGD warm start alone: PSNR / NFE | "
             "**dmplug_warm**: PSNR / NFE | dmplug_warm - DMPlug oracle | NFE vs DMPlug |", "|---|---|---|---|---|---|---|"]
    for task, row in r["tasks"].items():
        d, w, m = row["dmplug"], row["warm"], row["mpgd"]
        lines.append(f"| {task} | {d['psnr']:.2f} / {d['nfe']:.0f} | {d['oracle']:.2f} | {m['psnr']:.2f} / {m['nfe']:.0f} | "
                     f"{w['psnr']:.2f} / {w['nfe']:.0f} | {w['psnr'] - d['oracle']:+.2f} dB | 1/{d['nfe'] / w['nfe']:.1f} |")
    lines += ["", f"R(z) of a seed inverted from each of the {r['n']} clean test digits, PSNR against the digit: " + ", ".join(
        f"{k} {v:.2f} dB" for k, v in r["inversion"].items()) + "."]
    best = t["best"]
    lines += ["", f"Tuning ({t['n']} validation digits per task; budget: a fifth of DMPlug's smallest mean NFE, "
              f"{t['budget_nfe']:.0f}): warm_steps x inversion_iterations x lr x iterations = {len(t['rows'])} settings. "
              f"Chosen: {best['warm_steps']} steps, {best['inversion_iterations']} inversion iterations, lr {best['lr']:g}, "
              f"{best['max_iters']} iterates, NFE {best['nfe']:.0f}: " + ", ".join(
                  f"{task} {p:.2f} (oracle {t['reference'][task]['oracle']:.2f})" for task, p in best["psnr"].items()) + ".",
              "", "Best of the whole grid per task, whatever its NFE (validation): " + "; ".join(
                  f"{task} {max(r['psnr'][task] for r in t['rows']):.2f} at NFE "
                  f"{max(t['rows'], key=lambda r: r['psnr'][task])['nfe']:.0f}" for task in TASKS) + ".", ""]
    write_section("moonshot", "\n".join(lines))


if __name__ == "__main__":
    app()
