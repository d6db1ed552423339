"""Shared fixtures: a tiny random-weight prior for wiring tests, the bundled trained prior for quality tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the benchmarks' tables, tested here

from priorflow.bundled import BUNDLED_AUTOENCODERS, BUNDLED_PRIORS
from priorflow.solvers import DiffusionPrior, load_prior
from priorflow.solvers.priors.files import WEIGHTS_FILE

torch.set_num_threads(1)

BUNDLED_PRIOR = BUNDLED_PRIORS["digits16"]


def make_unet_folder(folder: Path, channels: int = 1, size: int = 8, out_channels: int | None = None) -> Path:
    """A random-weight diffusers UNet2DModel saved as a prior folder (config.json + safetensors)."""
    from diffusers.models.unets.unet_2d import UNet2DModel
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = UNet2DModel(
        sample_size=size,
        in_channels=channels,
        out_channels=out_channels or channels,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )
    folder.mkdir(parents=True, exist_ok=True)
    net.save_config(folder)
    save_file(net.state_dict(), folder / WEIGHTS_FILE)
    return folder


def make_autoencoder_folder(folder: Path, kind: str = "kl", channels: int = 1, latent_channels: int = 2,
                            scaling_factor: float | None = 0.5) -> Path:
    """A random-weight diffusers AutoencoderKL or VQModel (downsampling 2) saved as a folder; scaling_factor None
    leaves it out of config.json, as the CompVis LDM VQ folders do."""
    from diffusers import AutoencoderKL, VQModel
    from safetensors.torch import save_file

    torch.manual_seed(1)
    common = dict(in_channels=channels, out_channels=channels, block_out_channels=(8, 8), latent_channels=latent_channels,
                  down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                  norm_num_groups=4, sample_size=8)
    model = VQModel(num_vq_embeddings=16, **common) if kind == "vq" else AutoencoderKL(**common)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_config(folder)
    config = json.loads((folder / "config.json").read_text())
    config.pop("scaling_factor")
    if scaling_factor is not None:
        config["scaling_factor"] = scaling_factor
    (folder / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / WEIGHTS_FILE)
    return folder


def make_latent_prior_folder(folder: Path, kind: str = "kl") -> Path:
    """A random-weight latent diffusion pipeline folder: unet/ over 2x4x4 latents of an 8x8 autoencoder, its
    vae/ (vqvae/ for VQ) and a scheduler with a scaled-linear schedule of its own."""
    make_unet_folder(folder / "unet", channels=2, size=4)
    make_autoencoder_folder(folder / ("vqvae" if kind == "vq" else "vae"), kind)
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "DDIMScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.0015, "beta_end": 0.0195,
         "num_train_timesteps": 1000, "prediction_type": "epsilon"}))
    return folder


@pytest.fixture(scope="session")
def tiny_autoencoder_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_autoencoder_folder(tmp_path_factory.mktemp("tiny_ae") / "ae")


@pytest.fixture(scope="session")
def tiny_latent_prior_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_latent_prior_folder(tmp_path_factory.mktemp("tiny_ldm") / "ldm")


@pytest.fixture(scope="session")
def tiny_latent_prior(tiny_latent_prior_path: Path) -> DiffusionPrior:
    return load_prior(tiny_latent_prior_path)


@pytest.fixture(scope="session")
def tiny_projection_prior(tiny_prior_path: Path, tiny_autoencoder_path: Path) -> DiffusionPrior:
    """The tiny pixel prior with the tiny autoencoder beside it, for MPGD-AE and MPGD-Z."""
    return load_prior(tiny_prior_path, autoencoder=tiny_autoencoder_path)


@pytest.fixture(scope="session")
def tiny_prior_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_unet_folder(tmp_path_factory.mktemp("tiny_prior"))


@pytest.fixture(scope="session")
def tiny_prior(tiny_prior_path: Path) -> DiffusionPrior:
    return load_prior(tiny_prior_path)


@pytest.fixture(scope="session")
def digits_prior() -> DiffusionPrior:
    return load_prior(BUNDLED_PRIOR)


@pytest.fixture(scope="session")
def digits_projection_prior() -> DiffusionPrior:
    """digits16 with the bundled autoencoder beside it, for MPGD-AE and MPGD-Z."""
    return load_prior(BUNDLED_PRIOR, autoencoder=BUNDLED_AUTOENCODERS["digits16-ae"])


@pytest.fixture(scope="session")
def digits_latent_prior() -> DiffusionPrior:
    return load_prior(BUNDLED_PRIORS["digits16-latent"])


def digit_classifier_scores(samples: torch.Tensor) -> dict[str, float]:
    """Is a prior's sampling in distribution? A logistic-regression classifier fitted on the training digits (8x8
    pooled pixels): its mean confidence (max probability) on the samples, on held-out digits plain and perturbed,
    on noise and on smooth blobs (what an undertrained prior draws), and how many classes the samples cover. The
    classifier is not shift-invariant: for priors trained with augmentation the perturbed digits, moved within the
    same range, are the reference."""
    import torch.nn.functional as F
    from sklearn.linear_model import LogisticRegression

    from priorflow.datasets import load_digits

    def features(images: torch.Tensor):
        return F.avg_pool2d(images, 2).flatten(1).numpy()

    train, labels = load_digits("train", 16)
    classifier = LogisticRegression(C=0.1, max_iter=3000).fit(features(train), labels.numpy())
    noise = torch.rand(64, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    references = {"samples": samples, "plain": load_digits("test", 16)[0], "perturbed": load_digits("test", 16, perturbed=True)[0],
                  "noise": noise, "blobs": F.avg_pool2d(noise, 5, 1, 2)}
    scores = {k: float(classifier.predict_proba(features(v)).max(1).mean()) for k, v in references.items()}
    return scores | {"classes": len(set(classifier.predict(features(samples)).tolist()))}


def run_fields(input: str, output: str, **overrides) -> dict:
    """The fields of a small benchmark-mode run from `input` (clean digits) to `output`: SR x4 with noise, a fast
    MPGD, shards of 5 on two local workers; `overrides` replace fields."""
    return {
        "input": input,
        "output": output,
        "mode": "benchmark",
        "operator": {"name": "super_resolution", "params": {"factor": 4}},
        "noise": {"name": "gaussian", "params": {"sigma": 0.05}},
        "solver": {"name": "mpgd", "steps": 50, "scale": 4.0},
        "shard_size": 5,
        "seed": 7,
        "cluster": {"workers": 2},
    } | overrides


def digits_run(folder: Path, count: int = 12, **overrides) -> dict:
    """run_fields with `count` held-out digits written to FOLDER/in.zarr and the output FOLDER/out.zarr."""
    from priorflow.datasets import write_digits_array

    return run_fields(write_digits_array(str(folder / "in.zarr"), "test", count), str(folder / "out.zarr")) | overrides


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def prefect_server():
    """One Prefect test server for the whole session (starting one costs ~10 s)."""
    import os

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def prefect_api_url(prefect_server) -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def local_s3(tmp_path_factory: pytest.TempPathFactory):
    """A real S3 server (Ceph radosgw, scripts/local-s3.sh) for the session; its credentials in the environment."""
    import os
    import shutil
    import socket
    import subprocess

    if shutil.which("radosgw") is None:
        if os.environ.get("PRIORFLOW_REQUIRE_S3"):
            pytest.fail("radosgw is not installed: run scripts/local-s3.sh install (make test does)")
        pytest.skip("radosgw is not installed (scripts/local-s3.sh install)")
    folder = tmp_path_factory.mktemp("ceph")
    script = Path(__file__).resolve().parents[1] / "scripts" / "local-s3.sh"
    for _ in range(3):
        # two ports asked of the kernel at once are distinct; a worker of another test may still take one before
        # the gateway or the monitor binds it (CI lost that race once), so a failed start is retried on new ports
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", 0))
            b.bind(("127.0.0.1", 0))
            ports = [str(a.getsockname()[1]), str(b.getsockname()[1])]
        started = subprocess.run(["bash", str(script), "start", str(folder), *ports], capture_output=True, text=True, timeout=300)
        if started.returncode == 0:
            break
        subprocess.run(["bash", str(script), "stop", str(folder)], timeout=60)
    if started.returncode != 0:
        pytest.fail(f"local S3 did not start: {started.stderr[-2000:]}")
    env = dict(line.removeprefix("export ").split("=", 1) for line in started.stdout.split("\n") if line.startswith("export "))
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        subprocess.run(["bash", str(script), "stop", str(folder)], timeout=60)
        # s3fs's aiohttp sessions are only reclaimed at interpreter exit, after their loop is gone: not an error
        import logging

        logging.getLogger("asyncio").setLevel(logging.CRITICAL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(process: subprocess.Popen, timeout: float = 30) -> None:
    """End a process started in its own session, and its children: SIGTERM, then SIGKILL after `timeout`."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextlib.contextmanager
def cli_cluster(*worker_args: str) -> Iterator[tuple[str, set[str]]]:
    """`dask scheduler` and `dask worker ...` started from the command line; their address and worker addresses."""
    from distributed import Client

    address = f"tcp://127.0.0.1:{free_port()}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    commands = [[str(Path(sys.executable).parent / "dask"), "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                 "--no-dashboard"],
                [str(Path(sys.executable).parent / "dask"), "worker", address, "--host", "127.0.0.1", "--no-dashboard", *worker_args]]
    processes = []
    try:
        for command in commands:
            processes.append(subprocess.Popen(command, env=env, cwd=Path(__file__).resolve().parents[1], start_new_session=True,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        with Client(address, timeout=60) as client:
            client.wait_for_workers(int(worker_args[worker_args.index("--nworkers") + 1]), timeout=120)
            workers = set(client.scheduler_info(n_workers=-1)["workers"])
        yield address, workers
    finally:
        for process in reversed(processes):  # workers first, then the scheduler
            stop(process, timeout=20)


@pytest.fixture(scope="session")
def dask_address() -> Iterator[str]:
    """A Dask scheduler and two single-threaded workers started from the command line, as a site runs them, for the
    flow tests that do not test how a run starts its cluster: warm workers save each run the seconds a LocalCluster
    takes to start. Started before the S3 server's environment exists, so not for runs on S3."""
    with cli_cluster("--nworkers", "2", "--nthreads", "1", "--preload", "priorflow.flows.worker_setup") as (address, _):
        yield address
