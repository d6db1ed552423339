"""The `priorflow` command line."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from priorflow.errors import PriorflowError

BUNDLED_PRIOR = Path(__file__).resolve().parent / "assets" / "priors" / "digits16"

app = typer.Typer(help="Restore image and volume datasets with pretrained diffusion priors.", no_args_is_help=True)
console = Console(stderr=True, soft_wrap=True)


@app.callback()
def main() -> None:
    """Restore image and volume datasets with pretrained diffusion priors."""


def _fail(exc: Exception) -> None:
    console.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(code=2)


@app.command()
def train(
    out: Path = typer.Option(..., help="Folder for checkpoints; the prior is exported to OUT/prior."),
    data: str = typer.Option("digits", help="'digits' (scikit-learn's bundled digits, train split) or a .npy of images."),
    image_size: int = typer.Option(16, help="Side of the square training images."),
    steps: int = typer.Option(4000, help="Optimiser steps."),
    batch_size: int = typer.Option(64),
    lr: float = typer.Option(1e-3, help="Peak AdamW learning rate (warm-up, then cosine decay)."),
    seed: int = typer.Option(0),
    name: str = typer.Option("prior", help="Name recorded in the prior's metadata."),
    checkpoint_every: int = typer.Option(250, help="Steps between resumable checkpoints."),
) -> None:
    """Train a small DDPM prior; rerunning with the same OUT resumes from its checkpoint."""
    from priorflow.training.ddpm import TrainConfig, train_prior

    try:
        config = TrainConfig(data=data, image_size=image_size, steps=steps, batch_size=batch_size, lr=lr, seed=seed)
        with Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                      TimeRemainingColumn(), console=console) as progress:
            task = progress.add_task("train", total=config.steps, loss="-")

            def on_step(step: int, loss: float) -> None:
                progress.update(task, completed=step, loss=f"{loss:.4f}")

            folder = train_prior(config, out, name=name, checkpoint_every=checkpoint_every, on_step=on_step)
    except (PriorflowError, ValueError) as exc:
        _fail(exc)
    console.print(f"prior written to {folder}")


@app.command()
def demo(
    task: str = typer.Option("sr_x4", help="Degradation preset: sr_x4, inpaint_70 or deblur_gauss."),
    solvers: str = typer.Option("mpgd,dps,dmplug", help="Comma-separated solvers to compare."),
    count: int = typer.Option(8, min=1, max=200, help="Held-out test digits to restore (of 200)."),
    out: Path = typer.Option(Path("priorflow-demo"), help="Folder for the PNG grid."),
    threads: int = typer.Option(1, help="CPU threads for torch."),
    device: str = typer.Option("auto", help="auto (CUDA when available), cpu, cuda or cuda:N."),
) -> None:
    """Restore held-out digits with the bundled prior, print PSNR/SSIM per solver and write a PNG grid."""
    from rich.table import Table

    from priorflow.datasets import load_digits
    from priorflow.presets import TUNED, classical_baseline, simulate, solver_options, task as task_preset
    from priorflow.solvers import build_solver, load_prior
    from priorflow.solvers.device import set_cpu_threads
    from priorflow.solvers.metrics import image_metrics
    from priorflow.viz import save_grid

    try:
        set_cpu_threads(threads)
        preset = task_preset(task)
        names = [n.strip() for n in solvers.split(",") if n.strip()]
        built = {n: build_solver(n, **solver_options(n, TUNED[task].get(n, {}))) for n in names}
        prior = load_prior(BUNDLED_PRIOR, device)
        x, _ = load_digits("test", prior.image_size)
        x, seeds = x[:count].to(prior.device), list(range(count))
        problem = simulate(task, x, seeds)
    except (PriorflowError, ValueError) as exc:
        _fail(exc)
    table = Table(title=f"{task}: {count} held-out digits, {preset['operator']}")
    for column in ("method", "PSNR (dB)", "SSIM", "s / image"):
        table.add_column(column)
    columns = {"truth": x, "baseline": classical_baseline(task, problem.y)}
    m = image_metrics(columns["baseline"], x)
    table.add_row(preset["baseline"], f"{m['psnr'].mean():.2f}", f"{m['ssim'].mean():.3f}", "-")
    for name, solver in built.items():
        with console.status(f"running {name}"):
            result = solver.solve(prior, problem, seeds)
        columns[name] = result.x
        m = image_metrics(result.x, x)
        table.add_row(name, f"{m['psnr'].mean():.2f}", f"{m['ssim'].mean():.3f}", f"{result.seconds.mean():.2f}")
    Console().print(table)
    console.print(f"grid (truth, baseline, {', '.join(built)}) written to {save_grid(columns, out / f'{task}.png')}")


if __name__ == "__main__":
    app()
