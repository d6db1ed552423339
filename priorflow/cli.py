"""The `priorflow` command line."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from priorflow.errors import PriorflowError

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


if __name__ == "__main__":
    app()
