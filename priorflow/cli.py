"""The `priorflow` command line."""

from __future__ import annotations

import contextlib
import os
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text

from priorflow.errors import PriorflowError

if TYPE_CHECKING:
    from priorflow.config import RunConfig

OPERATOR_NAMES = ("identity", "super_resolution", "inpainting", "gaussian_blur", "motion_blur", "blind_blur", "ct", "mri",
                  "phase_retrieval")
NOISE_NAMES = ("none", "gaussian", "poisson", "shot", "impulse", "speckle")
"""The registries' names, for the help texts without importing torch (tests/test_cli.py checks they are the same)."""

app = typer.Typer(help="Restore image and volume datasets with pretrained diffusion priors.", no_args_is_help=True)
console = Console(stderr=True, soft_wrap=True)


@app.callback()
def main() -> None:
    """Restore image and volume datasets with pretrained diffusion priors."""
    sys.unraisablehook = _drop_abandoned_coroutines
    for name, value in TELEMETRY_OFF.items():  # before Prefect is imported; a user's own setting wins
        os.environ.setdefault(name, value)


TELEMETRY_OFF = {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
"""Prefect's usage data and its first-run notice stay off in priorflow's commands (set DO_NOT_TRACK=0 to allow them)."""


def _drop_abandoned_coroutines(unraisable: Any) -> None:
    """When one of zarr's concurrent storage reads fails, it abandons the others; collected later with their own
    error, Python would print each as "Exception ignored in: <coroutine ...>" with a traceback, after the one-line
    error the user already has. Anything else that cannot be raised is reported as usual."""
    if isinstance(unraisable.object, types.CoroutineType):
        return
    sys.__unraisablehook__(unraisable)


def _fail(exc: Exception) -> None:
    console.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(code=2)


def _channels(spec: str) -> tuple[int, ...] | None:
    """'32,64' -> (32, 64); '' -> None (the trainer's default)."""
    try:
        return tuple(int(c) for c in spec.split(",")) if spec.strip() else None
    except ValueError:
        raise PriorflowError(f"--block-out-channels {spec!r}: expected comma-separated integers such as 32,64") from None


def _trained(what: str, make_config: Callable[[], Any], run: Callable[..., Path], **options: Any) -> None:
    """Train under a progress bar of its steps showing the running loss, and say where the result went; a bad
    option is one line and exit 2."""
    try:
        config = make_config()
        with Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                      TimeRemainingColumn(), console=console) as progress:
            task = progress.add_task("train", total=config.steps, loss="-")

            def on_step(step: int, loss: float) -> None:
                progress.update(task, completed=step, loss=f"{loss:.4f}")

            folder = run(config, on_step=on_step, **options)
    except (PriorflowError, ValueError) as exc:
        _fail(exc)
    console.print(f"{what} written to {folder}")


AUGMENT_HELP = ("Random affine transforms of each batch, e.g. 'shift=1.5,rotate=12,scale=0.1,p=0.5' (pixels, "
                "degrees, relative scale, probability that an image is moved; the digits are moved before they are "
                "drawn at --image-size, so they stay sharp).")


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
    augment: str = typer.Option("", help=AUGMENT_HELP),
    autoencoder: Path | None = typer.Option(None, help="A train-autoencoder folder: train a latent prior on its "
                                                       "scaled latents, exported as a latent pipeline folder."),
    block_out_channels: str = typer.Option("", help="UNet widths per level, e.g. 32,64,64 (default: 32,64,64 for "
                                                    "pixels, 32,64 for latents)."),
) -> None:
    """Train a small DDPM prior; rerunning with the same OUT resumes from its checkpoint."""
    from priorflow.training.augment import Augmentation
    from priorflow.training.ddpm import TrainConfig, train_prior

    def config() -> TrainConfig:
        widths = _channels(block_out_channels)
        return TrainConfig(data=data, image_size=image_size, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                           augment=Augmentation.parse(augment), autoencoder=str(autoencoder) if autoencoder else None,
                           **({"block_out_channels": widths} if widths else {}))

    _trained("prior", config, train_prior, out=out, name=name, checkpoint_every=checkpoint_every)


@app.command("train-autoencoder")
def train_autoencoder(
    out: Path = typer.Option(..., help="Folder for checkpoints; the autoencoder is exported to OUT/autoencoder."),
    kind: str = typer.Option("kl", help="kl (diffusers AutoencoderKL) or vq (VQModel)."),
    data: str = typer.Option("digits", help="'digits' (scikit-learn's bundled digits, train split) or a .npy of images."),
    image_size: int = typer.Option(16, help="Side of the square training images."),
    latent_channels: int = typer.Option(2, help="Channels of the latent."),
    block_out_channels: str = typer.Option("32,32", help="Widths per level; each level but the last halves the side."),
    steps: int = typer.Option(3000, help="Optimiser steps."),
    batch_size: int = typer.Option(64),
    lr: float = typer.Option(1e-3, help="Peak AdamW learning rate (warm-up, then cosine decay)."),
    loss: str = typer.Option("l1", help="Reconstruction loss: l1 or l2."),
    kl_weight: float = typer.Option(1e-4, help="Weight of the per-element KL beside the per-pixel loss (kl only)."),
    seed: int = typer.Option(0),
    name: str = typer.Option("autoencoder", help="Name recorded in the autoencoder's metadata."),
    checkpoint_every: int = typer.Option(250, help="Steps between resumable checkpoints."),
    augment: str = typer.Option("", help=AUGMENT_HELP),
) -> None:
    """Train a small autoencoder for latent priors; rerunning with the same OUT resumes from its checkpoint."""
    from priorflow.training.augment import Augmentation
    from priorflow.training.autoencoder import AutoencoderConfig
    from priorflow.training.autoencoder import train_autoencoder as run

    def config() -> AutoencoderConfig:
        return AutoencoderConfig(kind=kind, data=data, image_size=image_size, latent_channels=latent_channels,
                                 block_out_channels=_channels(block_out_channels), steps=steps, batch_size=batch_size,
                                 lr=lr, loss=loss, kl_weight=kl_weight, seed=seed, augment=Augmentation.parse(augment))

    _trained("autoencoder", config, run, out=out, name=name, checkpoint_every=checkpoint_every)


@app.command("convert-prior")
def convert_prior(
    checkpoint: Path = typer.Argument(..., help="A guided-diffusion (ADM) state dict, e.g. DPS's ffhq_10m.pt."),
    config: Path = typer.Option(None, help="Its model_config.yaml (default: CHECKPOINT.yaml, model_config.yaml or "
                                "CHECKPOINT.json beside it)."),
    out: Path = typer.Option(..., help="New folder for the prior; it must not exist or be empty."),
) -> None:
    """Convert an ADM checkpoint (DPS, MPGD, DMPlug) into a diffusers prior folder that `--prior` loads.

    Every key and shape is checked against the hyper-parameters first; nothing is written unless all of it succeeds.
    """
    from priorflow.solvers.priors.checkpoints import convert_checkpoint

    try:
        folder = convert_checkpoint(checkpoint, out, config)
    except PriorflowError as exc:
        _fail(exc)
    console.print(f"prior written to {folder}")


@app.command()
def compare(
    task: str = typer.Option("sr_x4", help="Degradation preset: sr_x4, inpaint_70 or deblur_gauss."),
    solvers: str = typer.Option("mpgd,dps,dmplug", help="Comma-separated solvers to compare, each with its defaults."),
    count: int = typer.Option(8, min=1, max=200, help="Held-out test digits to restore (of 200)."),
    out: Path = typer.Option(Path("priorflow-compare"), help="Folder for the PNG grid."),
    threads: int = typer.Option(1, help="CPU threads for torch."),
    device: str = typer.Option("auto", help="auto (CUDA when available), cpu, cuda or cuda:N."),
) -> None:
    """Compare solvers with their defaults on held-out digits with the bundled priors (each solver takes the one of
    its kind: digits16, with digits16-ae for mpgd_ae/mpgd_z, or digits16-latent): PSNR/SSIM per solver and a PNG grid."""
    from rich.table import Table

    from priorflow.datasets import load_digits
    from priorflow.presets import bundled_prior, bundled_prior_kind, classical_baseline, simulate
    from priorflow.presets import task as task_preset
    from priorflow.solvers import build_solver
    from priorflow.solvers.device import set_cpu_threads
    from priorflow.solvers.metrics import psnr, ssim
    from priorflow.viz import MEASUREMENT, TRUTH, png_bytes, render_grid

    try:
        set_cpu_threads(threads)
        preset = task_preset(task)
        names = [n.strip() for n in solvers.split(",") if n.strip()]
        built = {n: build_solver(n) for n in names}
        priors = {n: bundled_prior(bundled_prior_kind(n), device) for n in names}
        x, _ = load_digits("test", 16)
        x, seeds = x[:count].to(priors[names[0]].device), list(range(count))
        problem = simulate(task, x, seeds)
    except (PriorflowError, ValueError) as exc:
        _fail(exc)
    operator, params = preset["operator"]
    table = Table(title=f"{task}: {count} held-out digits, {operator}({', '.join(f'{k}={v}' for k, v in params.items())})")
    for column in ("method", "PSNR (dB)", "SSIM", "s / image"):
        table.add_column(column)
    baseline = classical_baseline(task, problem.y)
    columns = {MEASUREMENT: problem.y, preset["baseline"]: baseline}
    table.add_row(preset["baseline"], f"{psnr(baseline, x).mean():.2f}", f"{ssim(baseline, x).mean():.3f}", "-")
    for name, solver in built.items():
        with console.status(f"running {name}"):
            result = solver.solve(priors[name], problem, seeds)
        columns[name] = result.x
        table.add_row(name, f"{psnr(result.x, x).mean():.2f}", f"{ssim(result.x, x).mean():.3f}",
                      f"{result.seconds.mean():.2f}")
    Console().print(table)
    out.mkdir(parents=True, exist_ok=True)
    grid = out / f"{task}.png"
    grid.write_bytes(png_bytes(render_grid(columns | {TRUTH: x})))
    console.print(f"grid ({', '.join([*columns, TRUTH])}) written to {grid}")


@app.command()
def demo(
    out: Path = typer.Option(Path("priorflow-demo"), help="Local folder for the input array, the output group and the grid."),
    task: str = typer.Option("sr_x4", help="Degradation preset: sr_x4, inpaint_70 or deblur_gauss."),
    solver: str = typer.Option("dmplug", help="Any solver of `priorflow solvers` with a pixel prior (dmplug, mpgd, "
                               "dps, ...), with its defaults."),
    count: int = typer.Option(32, min=1, max=200, help="Held-out test digits to restore."),
    workers: int = typer.Option(2, min=1, help="Local Dask workers."),
) -> None:
    """The main job on embedded defaults: held-out digits -> local Zarr -> restore flow on a local Dask cluster.

    Benchmark mode: the digits are degraded as the task says (seeded per sample), restored with the bundled prior,
    and scored; rerunning resumes (finished shards are skipped).
    """
    from priorflow.datasets import write_digits_array
    from priorflow.presets import NOISE
    from priorflow.presets import task as task_preset
    from priorflow.storage.location import side_file

    try:
        operator, params = task_preset(task)["operator"]
        out.mkdir(parents=True, exist_ok=True)
        config = _run_config(None, {
            "input": write_digits_array(str(out / "input.zarr"), "test", count), "output": str(out / f"{task}.zarr"),
            "mode": "benchmark", "prior": "digits16", "operator": {"name": operator, "params": params},
            "noise": {"name": NOISE[0], "params": NOISE[1]}, "solver": {"name": solver},
            "cluster": {"workers": workers},
        })
        _restored(config, overwrite=True)
    except PriorflowError as exc:
        _fail(exc)
    console.print(f"grid (measurement, restored, ground truth) in {side_file(config.output, 'grid.png')}; "
                  f"outputs in {config.output}")


def _params(items: list[str] | None, what: str) -> dict[str, Any]:
    """KEY=VALUE options, values read as YAML scalars (4 -> int, 0.05 -> float, true -> bool)."""
    params: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise PriorflowError(f"{what} must be KEY=VALUE, got {item!r}")
        params[key.strip()] = yaml.safe_load(value)
    return params


def _given(**options: Any) -> dict[str, Any] | None:
    """The options given on the command line (None when none was): a section that overrides a file's, key by key."""
    given = {k: v for k, v in options.items() if v is not None}
    return given or None


def _run_config(config: Path | None, fields: dict[str, Any], cluster: Path | None = None, **cluster_fields: Any) -> RunConfig:
    """The run configuration from a file and/or the command line; a --cluster file and cluster options override
    the file's `cluster` section field by field."""
    from priorflow.config import load_cluster, load_config, validate_config

    given = {k: v for k, v in fields.items() if v is not None}
    run = load_config(config, **given) if config else validate_config(given, "command line")
    overrides = {k: v for k, v in cluster_fields.items() if v is not None}
    if cluster is None and not overrides:
        return run
    base = (load_cluster(cluster) if cluster else run.cluster).model_dump(exclude_unset=True)
    return validate_config({**run.model_dump(mode="json"), "cluster": {**base, **overrides}}, "command line")


@app.command()
def restore(
    input: str = typer.Argument(None, help="URL of the input Zarr array (path, file://, s3://, memory://)."),
    output: str = typer.Argument(None, help="URL of the output Zarr group."),
    config: Path = typer.Option(None, help="YAML or TOML run configuration; arguments and options override it."),
    solver: str = typer.Option(None, help="`priorflow solvers` lists each one's options (-s) and defaults. dmplug "
                               "(default), dmplug_blind, dmplug_warm, mpgd, mpgd_ae, mpgd_z, dps or ddim; with a latent prior "
                               "mpgd_ldm, dmplug_latent or dps_latent."),
    solver_param: list[str] = typer.Option(None, "--solver-param", "-s", help="Solver option KEY=VALUE (repeatable)."),
    operator: str = typer.Option(None, help=f"Forward operator (required): {', '.join(OPERATOR_NAMES)}; "
                                 "`-o KEY=VALUE` sets its parameters (README: Operators)."),
    operator_param: list[str] = typer.Option(None, "--operator-param", "-o", help="Operator parameter KEY=VALUE."),
    noise: str = typer.Option(None, help=f"Noise to simulate in benchmark mode: {', '.join(NOISE_NAMES)} (default none)."),
    noise_param: list[str] = typer.Option(None, "--noise-param", "-n", help="Noise parameter KEY=VALUE."),
    mode: str = typer.Option(None, help="measured (the default: the input holds measurements) or benchmark (the input "
                             "holds clean images, which priorflow degrades with the operator and noise, and scores)."),
    prior: str = typer.Option(None, help="Bundled prior name (digits16, digits16-latent), prior folder or ADM checkpoint "
                              "(default digits16)."),
    autoencoder: str = typer.Option(None, help="Autoencoder beside a pixel prior for mpgd_ae/mpgd_z: digits16-ae or a "
                                    "VQModel/AutoencoderKL folder."),
    scaling_factor: float = typer.Option(None, help="Override the autoencoder's latent scaling factor."),
    shard_size: int = typer.Option(None, help="Samples per shard (default 16); with tiles, tiles per shard (whole "
                                   "images, at least one)."),
    seed: int = typer.Option(None, help="Base seed (default 0)."),
    layout: str = typer.Option(None, help="images, volumes or volume (default: from the array)."),
    tile_overlap: int = typer.Option(None, help="Images larger than the prior are restored in tiles of its size: "
                                     "pixels adjacent tiles share (default: a quarter of the tile, at least twice the "
                                     "operator's margin)."),
    tile_window: str = typer.Option(None, help="Blending of overlapping tiles: cosine (default) or uniform."),
    coupling: float = typer.Option(None, help="Volumes: weight of the adjacent-slice penalty that makes slices agree "
                                   "(default 0: independent slices)."),
    coupling_halo: int = typer.Option(None, help="Volumes: slices solved beyond each shard's slab as coupling "
                                      "context (default 2)."),
    cluster: Path = typer.Option(None, help="YAML or TOML cluster spec, e.g. deployments/slurm.yaml."),
    address: str = typer.Option(None, help="Existing Dask scheduler (tcp://host:port); default a LocalCluster."),
    workers: int = typer.Option(None, help="LocalCluster workers (default one per GPU, else 2)."),
    gpu: bool = typer.Option(None, "--gpu/--no-gpu", help="One GPU per task (default: if the cluster has GPUs). "
                             "Workers of an existing cluster advertise them: dask worker --resources GPU=1."),
    overwrite: bool = typer.Option(False, help="Replace the results of another configuration in a priorflow output "
                                   "group (only priorflow's own arrays are deleted; anything else is never touched)."),
) -> None:
    """Restore every sample of a dataset that the output lacks: shards fan out to Dask workers, results go to Zarr."""
    try:
        solver_spec = {"name": solver, **_params(solver_param, "--solver-param")} if solver or solver_param else None
        if solver_spec and solver_spec.get("name") is None:
            solver_spec["name"] = "dmplug"
        fields = {
            "input": input, "output": output, "solver": solver_spec, "mode": mode, "prior": prior,
            "autoencoder": autoencoder, "scaling_factor": scaling_factor,
            "shard_size": shard_size, "seed": seed, "layout": layout,
            "operator": {"name": operator, "params": _params(operator_param, "--operator-param")} if operator else None,
            "noise": {"name": noise, "params": _params(noise_param, "--noise-param")} if noise else None,
            "tiling": _given(overlap=tile_overlap, window=tile_window),
            "coupling": _given(weight=coupling, halo=coupling_halo),
        }
        _restored(_run_config(config, fields, cluster, address=address, workers=workers, gpu=gpu), overwrite)
    except PriorflowError as exc:
        _fail(exc)


def _restored(run: RunConfig, overwrite: bool) -> None:
    """Plan the run and say what it will do, run it under a progress bar of samples, print its metrics table."""
    from priorflow.flows.console import quiet_console
    from priorflow.flows.restore import plan_run, run_restore

    quiet_console()
    plan = plan_run(run, overwrite)
    console.print(plan.describe())
    for note in plan.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    with _sample_progress():
        summary = run_restore(run, overwrite, plan)["summary"]
    _print_summary(plan.output, summary)


@app.command()
def serve(
    config: Path = typer.Option(..., help="YAML or TOML run configuration to keep restored."),
    cron: str = typer.Option(None, help="Cron schedule, e.g. '0 2 * * *' (02:00 every day)."),
    interval: float = typer.Option(None, help="Seconds between runs, instead of --cron."),
    timezone: str = typer.Option("UTC", help="Time zone of the schedule."),
    name: str = typer.Option("scheduled", help="Deployment name: the runs appear as restore/NAME."),
    cluster: Path = typer.Option(None, help="YAML or TOML cluster spec overriding the configuration's cluster."),
) -> None:
    """Serve the restore flow on a schedule from this process (no work pool or worker needed).

    Each run restores only the samples the output does not hold yet, so new samples appended to the input are
    picked up by the next run. Set PREFECT_API_URL to keep the runs on a server; stop with Ctrl-C.
    """
    from priorflow.flows.console import quiet_console
    from priorflow.flows.restore import plan_run
    from priorflow.flows.schedule import schedule_for, serve_restore

    quiet_console()
    try:
        schedule = schedule_for(cron, interval, timezone)
        run = _run_config(config, {}, cluster)
        plan_run(run)  # a configuration that cannot run fails now, not at 02:00
        serve_restore(run, schedule, name)
    except PriorflowError as exc:
        _fail(exc)


class _Samples(ProgressColumn):
    """solved/total samples and their rate, or nothing while the workers start."""

    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text("")
        rate = f", {task.speed:.2f}/s" if task.speed else ""
        return Text(f"{task.completed:.0f}/{task.total:.0f} samples{rate}")


@contextlib.contextmanager
def _sample_progress() -> Iterator[None]:
    """A bar of the samples solved, moving as shards report them (priorflow.flows.progress), with Prefect's log
    lines printed above it."""
    from priorflow.flows.console import above
    from priorflow.flows.progress import shown_by

    with Progress(TextColumn("{task.description}"), BarColumn(), _Samples(), TimeRemainingColumn(), console=console,
                  transient=True) as progress:
        task = progress.add_task("starting a Prefect server and the workers", total=None)

        def show(solved: float, total: int) -> None:
            progress.update(task, description="solving", completed=solved, total=total)

        with shown_by(show), above(sys.stderr):
            yield


def _print_summary(url: str, summary: dict[str, Any]) -> None:
    from rich.table import Table

    from priorflow.tasks.reduce import stop_reasons_line, summary_rows, summary_title

    table = Table(title=summary_title(url, summary))
    for column in ("metric", "mean", "median", "std", "count"):
        table.add_column(column)
    for row in summary_rows(summary):
        table.add_row(*row)
    Console().print(table)
    console.print(stop_reasons_line(summary))


@app.command("sample-data")
def sample_data(
    url: str = typer.Argument(..., help="URL of the Zarr array to write (only one this command wrote is replaced)."),
    kind: str = typer.Option("digits", help="digits (16x16 images), mosaics (pages of digits, larger than the "
                             "prior) or volumes (digits that drift and morph along depth)."),
    count: int = typer.Option(32, min=1, help="Images or volumes."),
    size: int = typer.Option(64, min=1, help="Side of a mosaic page."),
    depth: int = typer.Option(16, min=1, help="Slices per volume."),
) -> None:
    """Write held-out digits as an input array, to try `priorflow restore` on images, large images or volumes."""
    from priorflow.datasets import write_digits_array

    try:
        write_digits_array(url, "test", count, kind=kind, size=size, depth=depth)
    except PriorflowError as exc:
        _fail(exc)
    console.print(f"{url}: {count} {kind}")


@app.command()
def ingest(
    source: Path = typer.Argument(..., help="A folder of PNG/JPEG/TIFF images, or a TIFF stack (one volume)."),
    url: str = typer.Argument(..., help="URL of the Zarr array to create."),
    chunk: int = typer.Option(16, help="Images per chunk."),
    overwrite: bool = typer.Option(False, help="Replace an existing array."),
) -> None:
    """Turn images or a TIFF stack into an input array for `priorflow restore`."""
    from priorflow.storage.ingest import ingest as ingest_source

    try:
        array = ingest_source(source, url, chunk=chunk, overwrite=overwrite)
    except PriorflowError as exc:
        _fail(exc)
    console.print(f"{url}: {array.shape} {array.dtype} ({array.attrs['priorflow_layout']})")


@app.command()
def show(
    output: str = typer.Argument(..., help="URL of a restore output group."),
    png: Path = typer.Option(None, help="Where to write the grid (default: OUTPUT's grid beside it, OUT.grid.png)."),
    count: int = typer.Option(None, min=1, help="Samples in the grid (default: as many as the run's own grid)."),
) -> None:
    """Summarise an output group and write a PNG grid of measurement / restored / ground truth."""
    from priorflow.storage.location import write_side_file
    from priorflow.storage.outputs import SUMMARY_ATTRIBUTE, OutputGroup
    from priorflow.tasks.reduce import GRID_SAMPLES, summarize
    from priorflow.viz import output_grid, png_bytes

    try:
        group = OutputGroup.open(output)
        summary = group.group.attrs.get(SUMMARY_ATTRIBUTE) or summarize(group)
        run = group.run
        operator = run.get("operator") or {"name": run["config"]["operator"]["name"], **run["config"]["operator"]["params"]}
        spec = ", ".join(f"{k}={v}" for k, v in operator.items() if k != "name")
        console.print(f"solver {run['solver']['name']}, operator {operator['name']}({spec}), prior {run['prior']['name']} "
                      f"(sha256 {run['prior']['sha256'][:12]}), mode {run['config']['mode']}")
        _print_summary(group.url, summary)
        image = png_bytes(output_grid(group, count or GRID_SAMPLES))
        if png is None:
            written = write_side_file(output, "grid.png", image)
        else:
            png.parent.mkdir(parents=True, exist_ok=True)
            png.write_bytes(image)
            written = str(png)
        console.print(f"grid written to {written}")
    except PriorflowError as exc:
        _fail(exc)


@app.command()
def unlock(output: str = typer.Argument(..., help="URL of an output group whose writer died.")) -> None:
    """Release the writer lease of a run known to be dead, so the next run need not wait for it to go stale.

    Never needed: a killed run's lease goes stale on its own (PRIORFLOW_LEASE_TTL, 30 s) and the next run takes over.
    """
    from priorflow.storage.lease import break_lease

    try:
        released = break_lease(output)
    except PriorflowError as exc:
        _fail(exc)
    console.print(f"{output}: lease released" if released else f"{output}: no run holds it")


@app.command("solvers")
def solvers_command(
    name: str = typer.Argument(None, help="One solver (default: all of them)."),
) -> None:
    """List each solver's options with their types, defaults and meaning (what `restore -s KEY=VALUE` takes).

    A default shown as "auto" depends on the operator: the value listed for it, or "other" for any other operator.
    """
    from rich.table import Table

    from priorflow.errors import unknown_name
    from priorflow.solvers import SOLVERS
    from priorflow.solvers.options import describe_options

    if name is not None and name not in SOLVERS:
        _fail(unknown_name("solver", name, list(SOLVERS)))
    out = Console()
    for solver in [name] if name else SOLVERS:
        doc = " ".join((SOLVERS[solver].__doc__ or "").strip().split("\n\n")[0].split())
        table = Table(title=f"{solver}: {doc}", title_justify="left", show_lines=True)
        for column in ("option", "type", "default", "description"):
            table.add_column(column, overflow="fold")
        for row in describe_options(SOLVERS[solver]):
            table.add_row(row["option"], row["type"], row["default"], row["description"])
        out.print(table)
    if name in (None, "ddim"):
        out.print("ddim ignores the measurements: it samples the prior alone, as a reference.")


if __name__ == "__main__":
    app()
