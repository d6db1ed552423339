"""Did training with augmentation stop the prior from memorising where digits sit? The same solver on the plain
and the perturbed held-out digits, for priors trained the same way but for `--augment` (the first is the reference:
trained without it).

MPGD is the probe: it is cheap enough to run on every task for every prior, and it leans on the prior at every
step. Its scale is tuned for each prior and task on the plain validation digits (the default scales were tuned
on the prior trained without augmentation, which would favour it). The full tables of every solver on the
bundled prior are in the solvers section.

    python benchmarks/augmentation.py run --prior none=PRIOR --prior p05=PRIOR --prior all=PRIOR
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
from solvers import GRIDS, VARIANTS
from tables import MPGD_STEPS

from priorflow.bundled import BUNDLED_PRIORS
from priorflow.presets import TASKS

OUT = Path(__file__).resolve().parent / "out"
SCALES = GRIDS["mpgd"]["scale"]  # the solver tables' grid
app = typer.Typer(add_completion=False)


def _labelled(spec: str) -> tuple[str, Path]:
    label, sep, path = spec.partition("=")
    if not sep or not label or not Path(path).exists():
        raise typer.BadParameter(f"{spec!r}: expected LABEL=PATH of an existing prior")
    return label, Path(path)


@app.command()
def run(prior: list[str] = typer.Option(..., help="LABEL=PATH, repeated; the first one trained without --augment."),
        n_test: int = 50, n_val: int = 20, threads: int = 1) -> None:
    """MPGD on the plain and perturbed test digits for every prior, its scale tuned on the plain validation digits."""
    from priorflow.solvers import build_solver, load_prior

    torch.set_num_threads(threads)
    priors = {label: load_prior(path) for label, path in map(_labelled, prior)}
    rows: dict = {}
    tuned: dict = {}
    for task in TASKS:
        truth, val, seeds = problem(task, "val", n_val)
        for label, loaded in priors.items():
            psnr = {scale: scores(build_solver("mpgd", steps=MPGD_STEPS, scale=scale).solve(loaded, val, seeds).x,
                                  truth, 0.0)["psnr"] for scale in SCALES}
            tuned[f"{task}/{label}"] = max(psnr, key=psnr.get)
        for variant, perturbed in VARIANTS.items():
            truth, test, seeds = problem(task, "test", n_test, perturbed)
            for label, loaded in priors.items():
                solver = build_solver("mpgd", steps=MPGD_STEPS, scale=tuned[f"{task}/{label}"])
                result = solver.solve(loaded, test, seeds)
                rows[f"{task}/{variant}/{label}"] = scores(result.x, truth, result.seconds)
                print(f"{task} {variant} {label}: {rows[f'{task}/{variant}/{label}']['psnr']:.2f} dB", file=sys.stderr)
    record = {"n_test": n_test, "n_val": n_val, "scales": SCALES, "tuned_scale": tuned,
              "priors": {k: p.identity["sha256"][:12] for k, p in priors.items()},
              "training": {k: p.identity["metadata"].get("reproduce", "") for k, p in priors.items()}, "rows": rows}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "augmentation.json").write_text(json.dumps(record, indent=1))
    report()


@app.command()
def report() -> None:
    from priorflow.solvers import load_prior

    record = json.loads((OUT / "augmentation.json").read_text())
    rows, labels = record["rows"], list(record["priors"])
    reference = labels[0]

    def psnr(task: str, variant: str, label: str) -> float:
        return rows[f"{task}/{variant}/{label}"]["psnr"]

    bundled_sha = load_prior(BUNDLED_PRIORS["digits16"]).identity["sha256"][:12]
    bundled = [label for label, sha in record["priors"].items() if sha == bundled_sha]
    lines = [
        "## Training with augmentation: plain versus perturbed digits", "",
        f"`python benchmarks/augmentation.py run {' '.join(f'--prior {k}=PRIOR' for k in labels)}`: priors trained the "
        f"same way but for `--augment` (commands below). MPGD w/o projection ({MPGD_STEPS} steps, eta 0.5, its scale "
        f"tuned for each prior and task over {', '.join(f'{s:g}' for s in record['scales'])} on the first "
        f"{record['n_val']} plain validation digits) on the first {record['n_test']} test digits, plain and "
        "perturbed (`load_digits(split, "
        "perturbed=True)`: each digit moved by a fixed shift up to ±1.5 px, rotation up to ±12°, scale 0.9-1.1). "
        f"PSNR in dB; Δ = perturbed - plain. The bundled digits16 is {', '.join(bundled) or 'none of these'}.", "",
        *[f"- {k} (sha256 {record['priors'][k]}): `{record['training'][k]}`" for k in labels], "",
        "| task | " + " | ".join(f"{k}: plain | {k}: perturbed | {k}: Δ" for k in labels) + " |",
        "|---|" + "---|---|---|" * len(labels),
    ]
    for task in TASKS:
        cells = []
        for label in labels:
            plain, moved = psnr(task, "plain", label), psnr(task, "perturbed", label)
            cells += [f"{plain:.2f}", f"{moved:.2f}", f"{moved - plain:+.2f}"]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    chosen = ", ".join(f"{t} " + "/".join(f"{record['tuned_scale'][f'{t}/{k}']:g}" for k in labels) for t in TASKS)
    lines += ["", f"Tuned scales ({'/'.join(labels)}): {chosen}.", ""]
    for label in labels:
        gaps = [psnr(t, "perturbed", label) - psnr(t, "plain", label) for t in TASKS]
        line = f"- {label}: perturbed vs plain {min(gaps):+.2f} to {max(gaps):+.2f} dB " + (
            "(within 1 dB)" if all(abs(g) <= 1.0 for g in gaps) else "(not within 1 dB)")
        if label != reference:
            plain = [psnr(t, "plain", label) - psnr(t, "plain", reference) for t in TASKS]
            moved = [psnr(t, "perturbed", label) - psnr(t, "perturbed", reference) for t in TASKS]
            line += (f"; against {reference}: plain {min(plain):+.2f} to {max(plain):+.2f} dB, perturbed "
                     f"{min(moved):+.2f} to {max(moved):+.2f} dB")
        lines.append(line + ".")
    lines += [
        "", "Why no prior is best on both: a plain 16 px digit is a bilinear upsampling of 8x8 values, so the plain "
        "digits lie in one 64-dimensional linear subspace of the 256 pixels, which a prior trained without "
        "augmentation learns and exploits; a moved digit (sub-pixel shift, rotation, scale) leaves that subspace. A "
        "prior that covers the moved digits spreads its mass beyond the subspace, and a measurement of a plain digit "
        "is then also explained by moved ones (partial augmentation, p < 1, lands in between on both). That the moved "
        "digits gain so little is likely the same effect from the other side: a prior wide enough to hold them says "
        "less about each of them.",
    ]
    section = "\n".join(lines) + "\n"
    write_section("augmentation", section)
    print(section)


if __name__ == "__main__":
    app()
