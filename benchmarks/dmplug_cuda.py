"""DMPlug on CUDA: the official loop beside the deployed solver, and what number formats, torch.compile,
channels-last and gradient checkpointing do to its speed and memory. Run on a GPU machine, in one go:

    python benchmarks/dmplug_cuda.py run [--out DIR] [--parts digits,adm]   # DIR/cuda.json, after every part
    python benchmarks/dmplug_cuda.py report [--src DIR]                    # the tables -> RESULTS.md

Parts:
- digits16, SR x4, the 200 test digits (seeds 0..199): priorflow's DMPlug as deployed (defaults: batched, early
  stopped, stopped samples leave the batch) in each variant, whole runs: images/hour, NFE, PSNR, peak memory. The
  official loop (batch 1, Adam 1e-2, fp32) is timed over its first `official_iters` iterations on one image and its
  images/hour extrapolated to its 5 000 iterations (stated so in the table: 5 000 iterations of one image take
  about a minute on the GPU, longer than this machine is lent for several images).
- ADM at 256 px (the FFHQ architecture of DPS/DMPlug, random weights: only speed and memory are measured), one
  DMPlug iteration (R(z) with 3 DDIM steps, MSE to a fixed target, backward to z) at batch 1 and 4 per variant
  (compiled variants at batch 4 only: each batch size compiles anew): seconds per iteration and peak memory per
  sample above the weights.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import torch
import typer

app = typer.Typer(add_completion=False, no_args_is_help=True)
DEVICE = "cuda"
OUT = Path(__file__).resolve().parent / "out" / "cuda"

FFHQ = {"image_size": 256, "num_channels": 128, "num_res_blocks": 1, "learn_sigma": True, "attention_resolutions": (16,),
        "num_heads": 4, "num_head_channels": 64, "use_scale_shift_norm": True, "resblock_updown": True}
VARIANTS: dict[str, dict[str, Any]] = {  # name -> solver options and network transforms
    "fp32 (naive)": {},
    "bf16 autocast": {"precision": "bf16"},
    "fp16 autocast": {"precision": "fp16"},
    "channels-last": {"channels_last": True},
    "bf16 + channels-last": {"precision": "bf16", "channels_last": True},
    "gradient checkpointing": {"checkpointing": True},
    "bf16 + checkpointing": {"precision": "bf16", "checkpointing": True},
    "torch.compile": {"compile": True},
    "bf16 + torch.compile": {"precision": "bf16", "compile": True},
}


@app.callback()
def main() -> None:
    """DMPlug's speed and memory on CUDA."""


def _prepared(prior, options: dict[str, Any], dynamic: bool):
    """A copy of `prior` whose network is channels-last and/or compiled as `options` say (`dynamic`: for a batch
    that shrinks as samples stop); the solver options left."""
    import copy

    options = dict(options)
    channels_last, compiled = options.pop("channels_last", False), options.pop("compile", False)
    prior = copy.copy(prior)
    network = copy.deepcopy(prior.network)
    if channels_last:
        network = network.to(memory_format=torch.channels_last)
    if compiled:
        network = torch.compile(network, dynamic=dynamic)
    prior.network = network
    return prior, options


def _peak_above(base: int) -> float:
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def digits_part(record: dict, n: int, official_iters: int, save: Callable[[], None]) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import problem

    from priorflow.presets import bundled_prior
    from priorflow.solvers import build_solver
    from priorflow.solvers.algorithms.base import to_unit
    from priorflow.solvers.algorithms.dmplug import DMPlug
    from priorflow.solvers.metrics import psnr
    from priorflow.solvers.physics.noise import randn, sample_generators
    from priorflow.solvers.problem import InverseProblem

    prior = bundled_prior("pixel", DEVICE)
    truth, measured, seeds = problem("sr_x4", "test", n)
    measured = InverseProblem(measured.y.to(DEVICE), measured.operator)

    fit = measured.objective("mse").take(torch.tensor([0]))
    z = randn(sample_generators([seeds[0]]), prior.space_shape, prior.device).requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=1e-2)
    reverse = DMPlug(steps=3).reverse
    for it in range(official_iters + 20):
        if it == 20:
            torch.cuda.synchronize()
            start = time.perf_counter()
        loss = fit(to_unit(reverse(prior, z)))
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        optimizer.step()
    torch.cuda.synchronize()
    per_iteration = (time.perf_counter() - start) / official_iters
    record["digits"] = {"n": n, "official": {"seconds_per_iteration": per_iteration, "timed_iterations": official_iters,
                                             "images_per_hour": 3600 / (5000 * per_iteration), "nfe_per_image": 15000}}
    save()

    rows = record["digits"]["variants"] = {}
    for name, options in VARIANTS.items():
        try:
            variant, solver_options = _prepared(prior, options, dynamic=True)
            solver = build_solver("dmplug", **solver_options)
            if options.get("compile"):  # compile time is not throughput: warm up on a few samples first
                warm = time.perf_counter()
                solver.model_copy(update={"max_iters": 3}).solve(variant, measured, seeds)
                rows.setdefault("_compile_seconds", {})[name] = time.perf_counter() - warm
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            start = time.perf_counter()
            result = solver.solve(variant, measured, seeds)
            torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            rows[name] = {"seconds": seconds, "images_per_hour": n * 3600 / seconds,
                          "nfe_per_image": float(result.nfe.float().mean()),
                          "psnr": float(psnr(result.x.cpu(), truth).mean()),
                          "stopped": sum(r != "max_iters" for r in result.stop_reason),
                          "peak_mib_per_sample": _peak_above(base) / n}
        except Exception as exc:  # one variant failing (a compiler missing, say) must not cost the others
            rows[name] = {"error": f"{type(exc).__name__}: {exc}"[:400]}
        print(name, rows[name], flush=True)
        save()


def adm_part(record: dict, batches: list[int], save: Callable[[], None]) -> None:
    from diffusers import UNet2DModel

    from priorflow.solvers.algorithms.dmplug import DMPlug
    from priorflow.solvers.priors.adm import AdmConfig, adm_to_diffusers
    from priorflow.solvers.priors.diffusion import NoiseSchedule
    from priorflow.solvers.priors.prior import DiffusionPrior

    torch.manual_seed(0)
    network = UNet2DModel(**adm_to_diffusers(AdmConfig(**FFHQ))).eval().requires_grad_(False).to(DEVICE)
    prior = DiffusionPrior(network, NoiseSchedule.linear(), (3, 256, 256))
    rows = record["adm256"] = {"parameters": sum(p.numel() for p in network.parameters())}
    for name, options in VARIANTS.items():
        rows[name] = {}
        try:
            variant, solver_options = _prepared(prior, options, dynamic=False)
            reverse = DMPlug(**solver_options).reverse
            for batch in batches[-1:] if options.get("compile") else batches:  # each batch size compiles anew
                z = torch.randn(batch, 3, 256, 256, device=DEVICE, requires_grad=True)
                target = torch.rand(batch, 3, 256, 256, device=DEVICE) * 2 - 1

                def iteration() -> None:
                    loss = (reverse(variant, z) - target).pow(2).flatten(1).mean(1).sum()
                    z.grad = None
                    loss.backward()

                warm = time.perf_counter()
                for _ in range(2):
                    iteration()
                torch.cuda.synchronize()
                warm = time.perf_counter() - warm
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                start = time.perf_counter()
                for _ in range(5):
                    iteration()
                torch.cuda.synchronize()
                rows[name][str(batch)] = {"seconds_per_iteration": (time.perf_counter() - start) / 5,
                                          "peak_mib_per_sample": _peak_above(base) / batch, "warmup_seconds": warm}
        except Exception as exc:
            rows[name]["error"] = f"{type(exc).__name__}: {exc}"[:400]
        print(name, rows[name], flush=True)
        save()
        torch.cuda.empty_cache()


@app.command()
def run(out: Path = OUT, n: int = 200, official_iters: int = 300,
        batches: str = "1,4", parts: str = "digits,adm") -> None:
    """All parts, on CUDA; out/cuda.json is rewritten after each measurement, so a cut-off run keeps what it had."""
    if not torch.cuda.is_available():
        raise typer.BadParameter("no CUDA device here: this benchmark is for a GPU machine")
    out.mkdir(parents=True, exist_ok=True)
    props = torch.cuda.get_device_properties(0)
    record: dict[str, Any] = {"device": props.name, "memory_gib": props.total_memory / 2**30, "torch": torch.__version__,
                              "cuda": torch.version.cuda}
    save = lambda: (out / "cuda.json").write_text(json.dumps(record, indent=1))  # noqa: E731
    save()
    if "digits" in parts:
        digits_part(record, n, official_iters, save)
    if "adm" in parts:
        adm_part(record, [int(b) for b in batches.split(",")], save)


@app.command()
def report(src: Path = OUT) -> None:
    """The CUDA tables -> RESULTS.md."""
    from results import write_section

    r = json.loads((src / "cuda.json").read_text())
    lines = ["## DMPlug on CUDA", "",
             f"`python benchmarks/dmplug_cuda.py run` on one {r['device']} ({r['memory_gib']:.0f} GiB), torch {r['torch']}, "
             f"CUDA {r['cuda']}; then `report`.", ""]
    d = r.get("digits")
    if d:
        o = d["official"]
        lines += [f"### digits16, SR x4, {d['n']} test digits (seeds 0..{d['n'] - 1}), one run each", "",
                  "| method | images / hour | NFE / image | PSNR | stopped early | peak MiB / sample |", "|---|---|---|---|---|---|",
                  f"| official loop: batch 1, 5000 Adam iterations, fp32 (timed over {o['timed_iterations']} "
                  f"iterations, {o['seconds_per_iteration'] * 1e3:.2f} ms each, extrapolated) | {o['images_per_hour']:.0f} | "
                  f"{o['nfe_per_image']} | - | - | - |"]
        for name, row in d["variants"].items():
            if name.startswith("_"):
                continue
            if "error" in row:
                lines.append(f"| priorflow DMPlug, {name} | failed: {row['error'][:120]} | | | | |")
                continue
            lines.append(f"| priorflow DMPlug, {name} | {row['images_per_hour']:.0f} "
                         f"({row['images_per_hour'] / o['images_per_hour']:.0f}x) | {row['nfe_per_image']:.0f} | "
                         f"{row['psnr']:.2f} | {row['stopped']}/{d['n']} | {row['peak_mib_per_sample']:.2f} |")
        compile_s = d["variants"].get("_compile_seconds", {})
        if compile_s:
            lines += ["", "Compilation (not counted above): " + ", ".join(f"{k} {v:.0f} s" for k, v in compile_s.items()) + "."]
        lines.append("")
    a = r.get("adm256")
    if a:
        batches = sorted({b for row in a.values() if isinstance(row, dict) for b in row if b != "error"}, key=int)
        lines += [f"### ADM 256 px (FFHQ architecture, {a['parameters'] / 1e6:.0f} M parameters, random weights), "
                  "one DMPlug iteration: R(z) with 3 DDIM steps, backward to z", "",
                  "| variant | " + " | ".join(f"batch {b}: ms / iteration | batch {b}: peak MiB / sample" for b in batches) + " |",
                  "|---|" + "---|---|" * len(batches)]
        for name, row in a.items():
            if not isinstance(row, dict):
                continue
            if "error" in row:
                lines.append(f"| {name} | failed: {row['error'][:120]} |" + " |" * (2 * len(batches) - 1))
                continue
            lines.append(f"| {name} | " + " | ".join(
                f"{row[b]['seconds_per_iteration'] * 1e3:.1f} | {row[b]['peak_mib_per_sample']:.0f}" if b in row else "- | -"
                for b in batches) + " |")
        lines.append("")
    write_section("cuda", "\n".join(lines))


if __name__ == "__main__":
    app()
