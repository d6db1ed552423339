"""Did training with augmentation stop the prior from memorising where digits sit? The same solver on the plain
and the perturbed held-out digits, with the prior before (trained without augmentation, from git history) and
after (the bundled digits16, trained with `--augment`).

MPGD with its defaults is the probe: it is cheap enough to run on every task for both priors, and it leans on the
prior at every step. The full tables of every solver on the bundled prior are in the solvers section.

    python benchmarks/augmentation.py run --before PRIOR --after PRIOR   # without and with --augment
    python benchmarks/augmentation.py report
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import typer
from common import problem, scores
from results import write_section

from priorflow.bundled import BUNDLED_PRIORS
from priorflow.presets import MPGD_STEPS, TASKS

OUT = Path(__file__).resolve().parent / "out"
app = typer.Typer(add_completion=False)


@app.command()
def run(before: Path = typer.Option(..., help="The prior trained without augmentation."),
        after: Path = typer.Option(BUNDLED_PRIORS["digits16"], help="The prior trained with augmentation."),
        n_test: int = 50, threads: int = 1) -> None:
    """MPGD (defaults, auto scale per operator) on the plain and perturbed test digits, for both priors."""
    from priorflow.solvers import build_solver, load_prior

    torch.set_num_threads(threads)
    priors = {"before": load_prior(before), "after": load_prior(after)}
    solver = build_solver("mpgd", steps=MPGD_STEPS)
    rows: dict = {}
    for task in TASKS:
        for variant in ("plain", "perturbed"):
            truth, test, seeds = problem(task, "test", n_test, perturbed=variant == "perturbed")
            for name, prior in priors.items():
                result = solver.solve(prior, test, seeds)
                rows[f"{task}/{variant}/{name}"] = scores(result.x, truth, result.seconds)
                print(f"{task} {variant} {name}: {rows[f'{task}/{variant}/{name}']['psnr']:.2f} dB", file=sys.stderr)
    record = {"n_test": n_test, "before": str(before), "priors": {k: p.identity["sha256"][:12] for k, p in priors.items()},
              "training": {k: p.identity["metadata"].get("reproduce", "") for k, p in priors.items()}, "rows": rows}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "augmentation.json").write_text(json.dumps(record, indent=1))
    report()


@app.command()
def report() -> None:
    record = json.loads((OUT / "augmentation.json").read_text())
    rows = record["rows"]
    lines = [
        "## Training with augmentation: plain versus perturbed digits", "",
        f"`python benchmarks/augmentation.py run --before PRIOR --after PRIOR`: before, the bundled digits16 (trained "
        f"without augmentation); after, the same training with `--augment shift=1.5,rotate=12,scale=0.1`. MPGD w/o projection ({MPGD_STEPS} steps, default "
        f"scale per operator) on the first {record['n_test']} test digits, plain and perturbed (`load_digits(split, "
        "perturbed=True)`: each digit moved by a fixed shift up to ±1.5 px, rotation up to ±12°, scale 0.9-1.1). "
        f"Priors (sha256 prefix): {', '.join(f'{k} {v}' for k, v in record['priors'].items())}.", "",
        f"- before: `{record['training']['before']}`", f"- after: `{record['training']['after']}`", "",
        "| task | before: plain | before: perturbed | before: Δ | after: plain | after: perturbed | after: Δ |",
        "|---|---|---|---|---|---|---|",
    ]
    for task in TASKS:
        cells = []
        for name in ("before", "after"):
            plain, moved = rows[f"{task}/plain/{name}"]["psnr"], rows[f"{task}/perturbed/{name}"]["psnr"]
            cells += [f"{plain:.2f}", f"{moved:.2f}", f"{moved - plain:+.2f}"]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    delta = {task: {name: rows[f"{task}/perturbed/{name}"]["psnr"] - rows[f"{task}/plain/{name}"]["psnr"]
                    for name in ("before", "after")} for task in TASKS}
    plain_loss = [rows[f"{t}/plain/before"]["psnr"] - rows[f"{t}/plain/after"]["psnr"] for t in TASKS]
    moved_gain = [rows[f"{t}/perturbed/after"]["psnr"] - rows[f"{t}/perturbed/before"]["psnr"] for t in TASKS]
    met = all(abs(d["after"]) <= 1.0 for d in delta.values())
    lines += [
        "", f"The gap between plain and perturbed digits is {'within' if met else 'not within'} 1 dB after training with "
        f"augmentation, but it closed mostly from above: on plain digits the augmented prior loses "
        f"{min(plain_loss):.1f} to {max(plain_loss):.1f} dB, on perturbed ones it gains only {min(moved_gain):.1f} to "
        f"{max(moved_gain):.1f} dB. The likely reason: a plain 16 px digit is a bilinear upsampling of 8x8 values, so "
        "the plain digits lie in one 64-dimensional linear subspace of the 256 pixels, which the prior trained without "
        "augmentation learnt and exploits; a moved digit (sub-pixel shift, rotation, scale) leaves that subspace, and so "
        "does the augmented prior's support. Because of that loss the bundled digits16 is still the one trained without "
        "augmentation; the augmented candidate is reproduced by the 'after' command.",
    ]
    section = "\n".join(lines) + "\n"
    write_section("augmentation", section)
    print(section)


if __name__ == "__main__":
    app()
