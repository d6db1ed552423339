"""DMPlug's throughput: the official loop and priorflow's DMPlug as deployed, side by side in one run, on the same
prior and images.

- official: the loop of DMPlug's sr_inp_nonlinear.py (../shared/reference/algorithms.md, 3.2): one image at a time,
  z ~ N(0, I), Adam with lr 1e-2 on z, 5 000 iterations of MSE(A(R(z)), y), fp32. The official code reports the
  iterate of best PSNR against the ground truth (oracle, shown as such); what a user without the ground truth gets
  from it is the last iterate, or the published ES-WMV (DIP's W=100, P=1000) watching the same run.
- deployed: `build_solver("dmplug")` with its defaults on the whole batch (early stopped, stopped samples leave the
  batch), as a restore worker runs it on a shard.

    python benchmarks/throughput.py run --task sr_x4 --n 8
    python benchmarks/throughput.py report
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch
import typer
from common import problem
from results import write_section

from priorflow.presets import bundled_prior
from priorflow.solvers import build_solver
from priorflow.solvers.algorithms.base import to_unit
from priorflow.solvers.algorithms.dmplug import DMPlug
from priorflow.solvers.algorithms.stopping import ESWMV
from priorflow.solvers.metrics import psnr
from priorflow.solvers.physics.noise import randn, sample_generators

OUT = Path(__file__).resolve().parent / "out"
OFFICIAL_ITERS, OFFICIAL_LR = 5000, 1e-2
OFFICIAL_ES = ESWMV(window=100, patience=1000)

app = typer.Typer(add_completion=False, no_args_is_help=True)


@app.callback()
def main() -> None:
    """Images per hour of the official DMPlug loop and of priorflow's DMPlug."""


def official_loop(prior, objective, seed: int, truth: torch.Tensor) -> dict:
    """The official loop on one image (`objective`: its MSE data fit): its last iterate, the published ES-WMV's
    pick and the oracle best iterate."""
    reverse = DMPlug(steps=3).reverse
    z = randn(sample_generators([seed]), prior.space_shape, prior.device).requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=OFFICIAL_LR)
    tracker = OFFICIAL_ES.tracker()
    valid = torch.ones(1, dtype=torch.bool, device=prior.device)
    best_psnr, best_x = -1.0, None
    for it in range(OFFICIAL_ITERS):
        x = to_unit(reverse(prior, z))
        loss = objective(x)
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        optimizer.step()
        tracker.update(it, x, {}, loss, valid)  # watches the same run; the official loop never stops early
        p = float(psnr(x.detach().cpu(), truth[None]))
        if p > best_psnr:
            best_psnr, best_x = p, x.detach().cpu()
    return {"last": x.detach().cpu()[0], "es_wmv": tracker.best_x.cpu()[0], "oracle": best_x[0]}


@app.command()
def run(task: str = "sr_x4", n: int = 8, threads: int = 1) -> None:
    """Both methods on the first n test digits of a task; writes out/throughput.<task>.json."""
    torch.set_num_threads(threads)
    prior = bundled_prior("pixel")
    truth, measured, seeds = problem(task, "test", n)

    start = time.perf_counter()
    fit = measured.objective("mse")
    official = [official_loop(prior, fit.take(torch.tensor([i])), seeds[i], truth[i]) for i in range(n)]
    official_s = time.perf_counter() - start

    start = time.perf_counter()
    deployed = build_solver("dmplug").solve(prior, measured, seeds)  # the defaults: what a restore worker runs
    deployed_s = time.perf_counter() - start

    def score(x: torch.Tensor) -> float:
        return float(psnr(x.cpu(), truth).mean())

    rows = {
        "official": {"seconds": official_s, "images_per_hour": n * 3600 / official_s, "nfe_per_image": OFFICIAL_ITERS * 3,
                     "psnr_last": score(torch.stack([o["last"] for o in official])),
                     "psnr_es_wmv": score(torch.stack([o["es_wmv"] for o in official])),
                     "psnr_oracle": score(torch.stack([o["oracle"] for o in official]))},
        "deployed": {"seconds": deployed_s, "images_per_hour": n * 3600 / deployed_s,
                     "nfe_per_image": float(deployed.nfe.float().mean()), "psnr": score(deployed.x),
                     "stopped": sum(r != "max_iters" for r in deployed.stop_reason), "options": build_solver("dmplug").model_dump(mode="json")},
    }
    record = {"task": task, "n": n, "seeds": seeds, "threads": threads, "rows": rows, "torch": torch.__version__,
              "machine": platform.machine(), "device": str(prior.device)}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"throughput.{task}.json").write_text(json.dumps(record, indent=1))
    print(json.dumps(record, indent=1))


@app.command()
def report() -> None:
    """The speed-ratio table -> RESULTS.md."""
    lines = ["## DMPlug throughput: the official loop against priorflow's DMPlug", "",
             "`python benchmarks/throughput.py run --task T --n N`, then `report`. Both methods in one run, on the same "
             "prior (digits16), images and seeds; wall time of the whole run of each.", ""]
    for path in sorted(OUT.glob("throughput.*.json")):
        r = json.loads(path.read_text())
        o, d = r["rows"]["official"], r["rows"]["deployed"]
        lines += [f"### {r['task']}: {r['n']} test digits (seeds {r['seeds'][0]}..{r['seeds'][-1]}), {r['device']}, "
                  f"{r['machine']}, {r['threads']} thread(s), torch {r['torch']}", "",
                  "| method | images / hour | NFE / image | PSNR (deployable) | PSNR (oracle) |", "|---|---|---|---|---|",
                  f"| official loop: batch 1, 5000 Adam iterations, fp32, last iterate | {o['images_per_hour']:.0f} | "
                  f"{o['nfe_per_image']:.0f} | {o['psnr_last']:.2f} | {o['psnr_oracle']:.2f} |",
                  f"| same run, published ES-WMV (W=100, P=1000) picking the iterate | - | - | {o['psnr_es_wmv']:.2f} | - |",
                  f"| priorflow DMPlug, defaults, one batch ({d['stopped']}/{r['n']} stopped early) | "
                  f"{d['images_per_hour']:.0f} | {d['nfe_per_image']:.0f} | {d['psnr']:.2f} | - |", "",
                  f"Speed ratio: **{d['images_per_hour'] / o['images_per_hour']:.1f}x** the official loop's images per hour.", ""]
    write_section("throughput", "\n".join(lines))


if __name__ == "__main__":
    app()
