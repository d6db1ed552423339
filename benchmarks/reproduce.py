"""One row of each deterministic section of RESULTS.md, rerun with today's code on the same digits, seeds and options
through the same benchmark functions, and set beside the recorded numbers (as printed there).

    OMP_NUM_THREADS=1 python benchmarks/reproduce.py run      # -> out/reproduce.json and the 'reproduce' section

Sections of wall times, fault injection, kill moments and CUDA runs are not rerun: their numbers are measurements of
a machine at a moment, not functions of the seeds. The digits priors `none` and `p05` of the augmentation section
are not bundled (only `all`, the bundled digits16, is rerun).
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import typer
from common import problem, scores
from results import write_section
from tables import MPGD_STEPS, classical_baseline, solver_options

from priorflow.presets import bundled_prior

OUT = Path(__file__).resolve().parent / "out" / "reproduce.json"
app = typer.Typer(add_completion=False, no_args_is_help=True)


@app.callback()
def main() -> None:
    """Rerun one row of each deterministic RESULTS.md section."""


def _mean_std(values: dict, key: str = "psnr") -> str:
    return f"{values[key]:.2f} ± {values[key + '_std']:.2f}"


def _solved(name: str, options: dict, task: str, count: int, kind: str = "pixel", perturbed: bool = False, **extra) -> dict:
    from priorflow.solvers import build_solver

    truth, measured, seeds = problem(task, "test", count, perturbed, **extra)
    result = build_solver(name, **options).solve(bundled_prior(kind), measured, seeds)
    return scores(result.x, truth, result.seconds) | {"iterations": result.iterations.float(), "nfe": result.nfe.float(),
                                                      "stopped": [r != "max_iters" for r in result.stop_reason]}


def solvers_row() -> dict[str, str]:
    plain = _solved("mpgd", solver_options("mpgd", {"scale": 4.0}), "sr_x4", 50)
    perturbed = _solved("mpgd", solver_options("mpgd", {"scale": 4.0}), "sr_x4", 50, perturbed=True)
    return {"PSNR plain": _mean_std(plain), "PSNR perturbed": _mean_std(perturbed), "SSIM plain": f"{plain['ssim']:.3f}"}


def latent_row() -> dict[str, str]:
    options = solver_options("mpgd_z", {"scale": 4.0, "multiplier": 1.0})
    plain = _solved("mpgd_z", options, "sr_x4", 20, "projection")
    ldm = _solved("mpgd_ldm", solver_options("mpgd_ldm", {"scale": 4.0}), "sr_x4", 20, "latent")
    return {"MPGD-Z tuned: PSNR plain": _mean_std(plain), "MPGD-Z tuned: SSIM plain": f"{plain['ssim']:.3f}",
            "MPGD-LDM: PSNR plain": _mean_std(ldm)}


def defaults_row() -> dict[str, str]:
    truth, measured, _ = problem("sr_x4", "test", 32)
    baseline = scores(classical_baseline("sr_x4", measured.y), truth, 0.0)
    row = {"baseline": _mean_std(baseline)}
    for name, kind in (("mpgd", "pixel"), ("mpgd_ldm", "latent"), ("mpgd_z", "projection")):
        solved = _solved(name, {}, "sr_x4", 32, kind)
        row[name] = f"{_mean_std(solved)} ({solved['psnr'] - baseline['psnr']:+.2f})"
    return row


def augmentation_row() -> dict[str, str]:
    options = {"steps": MPGD_STEPS, "scale": 4.0}
    plain, perturbed = (_solved("mpgd", options, "sr_x4", 50, perturbed=p) for p in (False, True))
    return {"all: plain": f"{plain['psnr']:.2f}", "all: perturbed": f"{perturbed['psnr']:.2f}",
            "all: Δ": f"{perturbed['psnr'] - plain['psnr']:.2f}"}


def robustness_row() -> dict[str, str]:
    from tables import ROBUSTNESS_NOISE

    noise = ROBUSTNESS_NOISE["gaussian_low"]
    truth, measured, _ = problem("sr_x4", "test", 20, noise=noise)
    row = {"classical baseline": f"{scores(classical_baseline('sr_x4', measured.y), truth, 0.0)['psnr']:.2f}"}
    for name, scale in (("dps", 0.25), ("mpgd", 4.0)):
        row[name.upper()] = f"{_solved(name, solver_options(name, {'scale': scale}), 'sr_x4', 20, noise=noise)['psnr']:.2f}"
    return row


def _dmplug_defaults(count: int) -> dict:
    return _solved("dmplug", {}, "sr_x4", count)


def stopping_row() -> dict[str, str]:
    solved = _dmplug_defaults(20)
    return {"PSNR (dB)": f"{solved['psnr']:.2f}",
            "stopped": f"{100 * sum(solved['stopped']) / len(solved['stopped']):.0f}%",
            "mean iterations": f"{solved['iterations'].mean():.0f}"}


def throughput_row() -> dict[str, str]:
    solved = _dmplug_defaults(16)
    return {"NFE / image": f"{solved['nfe'].mean():.0f}", "PSNR (deployable)": f"{solved['psnr']:.2f}",
            "stopped early": f"{sum(solved['stopped'])}/16"}


def moonshot_row() -> dict[str, str]:
    warm = _solved("dmplug_warm", {}, "sr_x4", 20)
    start = _solved("mpgd", {"steps": 50}, "sr_x4", 20)
    return {"MPGD warm start alone: PSNR / NFE": f"{start['psnr']:.2f} / {start['nfe'].mean():.0f}",
            "dmplug_warm: PSNR / NFE": f"{warm['psnr']:.2f} / {warm['nfe'].mean():.0f}"}


def physics_row() -> dict[str, str]:
    truth, measured, _ = problem("ct_8", "test", 20)
    baseline = scores(classical_baseline("ct_8", measured.y, measured.operator), truth, 0.0)
    mpgd = _solved("mpgd", {}, "ct_8", 20)
    return {"classical baseline: PSNR": _mean_std(baseline), "MPGD (defaults): PSNR": _mean_std(mpgd),
            "MPGD (defaults): SSIM": f"{mpgd['ssim']:.3f}"}


def tiling_row() -> dict[str, str]:
    from tiling import task_rows

    row = task_rows("sr_x4", ("mpgd",))["mpgd"]
    return {"tiles/page (overlap)": f"{row['tiles_per_image']} ({row['overlap']})",
            "PSNR per tile: tiled": f"{row['tiled_tile_psnr']:.2f}", "alone": f"{row['alone_tile_psnr']:.2f}",
            "PSNR page: tiled": f"{row['tiled_psnr']:.2f}", "uniform": f"{row['tiled_uniform_psnr']:.2f}",
            "alone stitched": f"{row['alone_stitched_psnr']:.2f}", "seam: truth": f"{row['truth_seam']:.2f}",
            "seam: tiled": f"{row['tiled_seam']:.2f}", "seam: uniform": f"{row['tiled_uniform_seam']:.2f}",
            "NFE/tile": f"{row['nfe_per_tile']:.0f}"}


def volumes_row() -> dict[str, str]:
    from volumes import DEPTH, solve

    from priorflow.datasets import digit_volumes

    test = digit_volumes("test", 6, DEPTH)
    independent, coupled = solve("mpgd", "sr_x4", test, 0.0), solve("mpgd", "sr_x4", test, 0.3)
    return {"PSNR independent": f"{independent['psnr']:.2f}", "PSNR coupled": f"{coupled['psnr']:.2f}",
            "flicker independent": f"{independent['flicker']:.2f}", "flicker coupled": f"{coupled['flicker']:.2f}"}


# section: (the row rerun, what RESULTS.md records for it, how it is rerun)
ROWS: dict[str, tuple[str, dict[str, str], Callable[[], dict[str, str]]]] = {
    "solvers": ("sr_x4, MPGD w/o projection (scale 4.0), 50 digits", {
        "PSNR plain": "18.53 ± 2.00", "PSNR perturbed": "18.07 ± 2.01", "SSIM plain": "0.847"}, solvers_row),
    "solvers_latent": ("sr_x4, MPGD-Z tuned (scale 4.0, multiplier 1.0) and MPGD-LDM (scale 4.0), 20 digits", {
        "MPGD-Z tuned: PSNR plain": "19.18 ± 2.00", "MPGD-Z tuned: SSIM plain": "0.880",
        "MPGD-LDM: PSNR plain": "18.72 ± 2.46"}, latent_row),
    "defaults": ("sr_x4, 32 digits, defaults", {
        "baseline": "16.69 ± 1.16", "mpgd": "18.82 ± 2.08 (+2.13)", "mpgd_ldm": "18.89 ± 2.39 (+2.21)",
        "mpgd_z": "18.53 ± 2.27 (+1.84)"}, defaults_row),
    "augmentation": ("sr_x4, prior all (the bundled digits16)", {
        "all: plain": "18.53", "all: perturbed": "18.07", "all: Δ": "-0.46"}, augmentation_row),
    "robustness": ("sr_x4, gaussian low", {"classical baseline": "15.38", "DPS": "15.27", "MPGD": "15.08"},
                   robustness_row),
    "stopping": ("default: seed on its sphere, ES-WMV W=20 P=10, SR sigma0.05 (recorded by replay, rerun live)", {
        "PSNR (dB)": "19.75", "stopped": "95%", "mean iterations": "237"}, stopping_row),
    "throughput": ("sr_x4, priorflow DMPlug, defaults, one batch of 16", {
        "NFE / image": "707", "PSNR (deployable)": "19.32", "stopped early": "15/16"}, throughput_row),
    "moonshot": ("sr_x4, 20 digits", {"MPGD warm start alone: PSNR / NFE": "19.10 / 50",
                                      "dmplug_warm: PSNR / NFE": "20.44 / 123"}, moonshot_row),
    "physics": ("ct_8, 20 digits", {"classical baseline: PSNR": "14.78 ± 0.64", "MPGD (defaults): PSNR": "21.44 ± 2.25",
                                    "MPGD (defaults): SSIM": "0.917"}, physics_row),
    "tiling": ("sr_x4, mpgd, 4 pages of 40x40", {
        "tiles/page (overlap)": "16 (8)", "PSNR per tile: tiled": "17.81", "alone": "16.58", "PSNR page: tiled": "17.15",
        "uniform": "17.42", "alone stitched": "17.34", "seam: truth": "1.73", "seam: tiled": "0.76",
        "seam: uniform": "1.50", "NFE/tile": "50"}, tiling_row),
    "volumes": ("sr_x4, mpgd, 6 test volumes, weight 0.3", {
        "PSNR independent": "18.60", "PSNR coupled": "22.01", "flicker independent": "2.63",
        "flicker coupled": "0.87"}, volumes_row),
}


@app.command()
def run(sections: str = typer.Option(",".join(ROWS), help="Comma-separated sections to rerun.")) -> None:
    """Rerun the chosen rows, write out/reproduce.json (kept across partial reruns) and the RESULTS.md section."""
    torch.set_num_threads(1)
    unknown = set(sections.split(",")) - set(ROWS)
    if unknown:
        raise typer.BadParameter(f"no section {', '.join(sorted(unknown))}; the sections: {', '.join(ROWS)}")
    record = json.loads(OUT.read_text()) if OUT.exists() else {}
    for section in sections.split(","):
        label, recorded, rerun = ROWS[section]
        start = time.perf_counter()
        values = rerun()
        record[section] = {"row": label, "recorded": recorded, "rerun": values, "seconds": time.perf_counter() - start}
        same = sum(values[k] == v for k, v in recorded.items())
        print(f"{section}: {same}/{len(recorded)} as recorded ({record[section]['seconds']:.0f} s)", file=sys.stderr, flush=True)
        OUT.parent.mkdir(exist_ok=True)
        OUT.write_text(json.dumps(record, indent=1, ensure_ascii=False))
    report()


@app.command()
def report() -> None:
    """The 'reproduce' section of RESULTS.md from out/reproduce.json."""
    record = json.loads(OUT.read_text())
    lines = ["## Reproduced after the structure refactor (issue 19)", "",
             "`OMP_NUM_THREADS=1 python benchmarks/reproduce.py run`: one row of each section whose numbers are "
             "functions of the seeds, rerun with this checkout through the same benchmark functions, the same digits, "
             "seeds and options, and compared as printed (two decimals). Not rerun: the pipeline, storage faults, "
             "kill trials, small runs, demo and CUDA sections (wall times, injected faults and kill moments of a "
             "machine at a moment), and the augmentation priors `none` and `p05` (not bundled). The stopping row "
             "was recorded by replaying recorded trajectories and is rerun live. "
             f"Machine: {platform.machine()}, torch {torch.__version__}, 1 thread.", "",
             "| section | row | quantity | recorded | rerun | same |", "|---|---|---|---|---|---|"]
    total = same = 0
    for section, entry in record.items():
        for quantity, value in entry["recorded"].items():
            now = entry["rerun"].get(quantity, "-")
            total, same = total + 1, same + (now == value)
            lines.append(f"| {section} | {entry['row']} | {quantity} | {value} | {now} | {'yes' if now == value else '**no**'} |")
    lines += ["", f"{same} of {total} numbers as recorded."]
    write_section("reproduce", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    app()
