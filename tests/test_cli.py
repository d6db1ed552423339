"""The command line: help everywhere, the demo end to end, clear errors with a non-zero exit."""

import pytest
from typer.testing import CliRunner

from priorflow.cli import app

runner = CliRunner()


def test_every_command_has_help():
    for args in ([], ["train"], ["demo"], ["compare"], ["restore"], ["ingest"], ["show"], ["unlock"], ["serve"]):
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output


def test_help_names_every_operator_and_noise_and_the_defaults():
    from priorflow.cli import NOISE_NAMES, OPERATOR_NAMES
    from priorflow.solvers import NOISE_MODELS, OPERATORS

    assert OPERATOR_NAMES == tuple(OPERATORS) and NOISE_NAMES == tuple(NOISE_MODELS)  # the help's lists are the registries'
    text = " ".join(runner.invoke(app, ["restore", "--help"], env={"COLUMNS": "300"}).output.split())
    assert "shot" in text and "none" in text and "phase_retrieval" in text
    assert "measured (the default" in text and "Forward operator (required)" in text


def test_compare_restores_and_writes_a_grid(tmp_path):
    result = runner.invoke(app, ["compare", "--solvers", "mpgd,ddim", "--count", "2", "--out", str(tmp_path)],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "mpgd" in text and "bicubic upsampling" in text and "LPIPS" not in text
    assert "super_resolution(factor=4, method=bicubic)" in text
    assert "(measurement, bicubic upsampling, mpgd, ddim, ground truth)" in text
    assert (tmp_path / "sr_x4.png").stat().st_size > 0


def test_compare_bad_input_exits_non_zero(tmp_path):
    bad_task = runner.invoke(app, ["compare", "--task", "denoise_everything", "--out", str(tmp_path)])
    assert bad_task.exit_code == 2 and "unknown task 'denoise_everything'" in bad_task.output
    bad_solver = runner.invoke(app, ["compare", "--solvers", "dmplug,magic", "--out", str(tmp_path)])
    assert bad_solver.exit_code == 2 and "unknown solver 'magic'" in bad_solver.output
    bad_device = runner.invoke(app, ["compare", "--device", "tpu", "--out", str(tmp_path)])
    assert bad_device.exit_code == 2 and "unknown device 'tpu'" in bad_device.output
    assert not list(tmp_path.iterdir())


def _restore(*args: str):
    return runner.invoke(app, ["restore", *args])


def test_restore_bad_input_fails_fast_and_writes_nothing(tmp_path):
    import numpy as np
    import torch
    import zarr
    from conftest import make_autoencoder_folder

    out = str(tmp_path / "out.zarr")
    sr = ["--operator", "super_resolution", "-o", "factor=4"]
    cases = {
        "no Zarr array at": [str(tmp_path / "missing.zarr"), out, *sr],
        "unknown solver 'magic'": [str(tmp_path / "x.zarr"), out, *sr, "--solver", "magic"],
        "unknown operator 'blurr'": [str(tmp_path / "x.zarr"), out, "--operator", "blurr"],
        "operator: Field required": [str(tmp_path / "x.zarr"), out],
        "prior /nowhere does not exist": [str(tmp_path / "x.zarr"), out, *sr, "--prior", "/nowhere"],
        "samples have shape (1, 32, 32), expected (1, 16, 16) (measurements of blind_blur at the prior's size); "
        "operator blind_blur is not local": [str(tmp_path / "big.zarr"), out, "--operator", "blind_blur", "-o", "kernel_size=5"],
        "samples are images of 8x8, smaller than the prior's 16x16": [str(tmp_path / "x.zarr"), out, *sr, "--mode", "benchmark"],
        "smaller than the prior's 16x16; give images at least": [str(tmp_path / "s.zarr"), out, *sr],
        "larger than the prior's 16x16; operator blind_blur is not local": [
            str(tmp_path / "big.zarr"), out, "--operator", "blind_blur", "-o", "kernel_size=5", "--mode", "benchmark"],
        "coupling links the slices of volumes, but this input's layout is images": [
            str(tmp_path / "y.zarr"), out, "--operator", "identity", "--coupling", "0.5"],
        "unsupported dtype int32": [str(tmp_path / "i.zarr"), out, *sr],
        "--operator-param must be KEY=VALUE": [str(tmp_path / "x.zarr"), out, "--operator", "inpainting", "-o", "fraction"],
        "bad value for option 'max_iters' of solver dmplug": [str(tmp_path / "x.zarr"), out, *sr, "-s", "max_iters=-3"],
        "sigma must be non-negative": [str(tmp_path / "y.zarr"), out, "--noise", "gaussian", "-n", "sigma=-1",
                                       "--mode", "benchmark", "--operator", "identity"],
        "gpu is set but CUDA is not available": [str(tmp_path / "y.zarr"), out, "--operator", "identity", "--gpu"],
        "cannot reach the Dask scheduler": [str(tmp_path / "y.zarr"), out, "--operator", "identity",
                                            "--address", "tcp://127.0.0.1:9"],
        "1 NaN or infinite values": [str(tmp_path / "nan.zarr"), out, *sr],
        "x.zarr holds a Zarr array": [str(tmp_path / "y.zarr"), str(tmp_path / "x.zarr"), "--operator", "identity"],
        "solver mpgd_ldm needs a latent prior": [str(tmp_path / "x.zarr"), out, *sr, "--solver", "mpgd_ldm"],
        "solver mpgd works in pixel space, but digits16-latent is a latent prior; use mpgd_ldm":
            [str(tmp_path / "x.zarr"), out, *sr, "--solver", "mpgd", "--prior", "digits16-latent"],
        "solver mpgd_ae projects through an autoencoder": [str(tmp_path / "x.zarr"), out, *sr, "--solver", "mpgd_ae"],
        "a scaling factor applies to an autoencoder": [str(tmp_path / "x.zarr"), out, *sr, "--scaling-factor", "0.5"],
        "takes images with 3 channel(s)": [str(tmp_path / "x.zarr"), out, *sr, "--solver", "mpgd_z",
                                           "--autoencoder", str(make_autoencoder_folder(tmp_path / "rgb_ae", channels=3))],
        "its hyper-parameters (guided-diffusion's model_config.yaml) are needed": [str(tmp_path / "x.zarr"), out, *sr,
                                                                                  "--prior", str(tmp_path / "bare.pt")],
        "junk.pt is not a state dict": [str(tmp_path / "x.zarr"), out, *sr, "--prior", str(tmp_path / "junk.pt")],
    }
    torch.save({"input_blocks.0.0.weight": torch.zeros(1)}, tmp_path / "bare.pt")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    (tmp_path / "junk.yaml").write_text("image_size: 16\nnum_channels: 32\nnum_res_blocks: 1\nchannel_mult: '1,2'\n"
                                        "attention_resolutions: '8'\nnum_head_channels: 32\n")
    nan = np.zeros((4, 1, 4, 4), dtype="f4")
    nan[2, 0, 1, 1] = np.inf
    zarr.create_array(str(tmp_path / "nan.zarr"), data=nan)
    zarr.create_array(str(tmp_path / "y.zarr"), data=np.zeros((4, 1, 16, 16), dtype="f4"))
    zarr.create_array(str(tmp_path / "x.zarr"), data=np.zeros((4, 1, 8, 8), dtype="f4"))
    zarr.create_array(str(tmp_path / "s.zarr"), data=np.zeros((4, 1, 2, 2), dtype="f4"))
    zarr.create_array(str(tmp_path / "big.zarr"), data=np.zeros((2, 1, 32, 32), dtype="f4"))
    zarr.create_array(str(tmp_path / "i.zarr"), data=np.zeros((4, 1, 4, 4), dtype="i4"))
    for message, args in cases.items():
        result = _restore(*args)
        assert result.exit_code == 2, (message, result.output)
        assert message in result.output.replace("\n", " "), (message, result.output)
    assert not (tmp_path / "out.zarr").exists() and not (tmp_path / "out.lease").exists()


def test_config_file_errors_name_the_field(tmp_path):
    (tmp_path / "run.yaml").write_text("input: a\noutput: b\noperator: {name: identity}\nshard_size: 0\n")
    result = _restore("--config", str(tmp_path / "run.yaml"))
    assert result.exit_code == 2 and "shard_size" in result.output and "run.yaml" in result.output
    (tmp_path / "run.toml").write_text("input = 'a'\noutput = 'b'\n[operator\n")
    result = _restore("--config", str(tmp_path / "run.toml"))
    assert result.exit_code == 2 and "not valid TOML" in result.output


def test_cluster_spec_and_options_override_the_config_field_by_field(tmp_path):
    from priorflow.cli import _run_config

    (tmp_path / "run.yaml").write_text("input: a\noutput: b\noperator: {name: identity}\ncluster: {workers: 3, tasks_per_gpu: 2}\n")
    (tmp_path / "cluster.yaml").write_text("address: tcp://h:8786\n")
    assert _run_config(tmp_path / "run.yaml", {}).cluster.workers == 3
    assert _run_config(tmp_path / "run.yaml", {}, gpu=False).cluster.model_dump(exclude_unset=True) == {
        "workers": 3, "tasks_per_gpu": 2, "gpu": False}
    assert _run_config(tmp_path / "run.yaml", {}, tmp_path / "cluster.yaml").cluster.address == "tcp://h:8786"
    both = _restore("--config", str(tmp_path / "run.yaml"), "--address", "tcp://h:8786")
    assert both.exit_code == 2 and "cluster: Value error, workers sizes a LocalCluster" in both.output.replace("\n", " ")


def test_serve_bad_input_exits_non_zero(tmp_path):
    import numpy as np
    import zarr

    zarr.create_array(str(tmp_path / "x.zarr"), data=np.zeros((4, 1, 16, 16), dtype="f4"))
    (tmp_path / "run.yaml").write_text(f"input: {tmp_path / 'x.zarr'}\noutput: {tmp_path / 'o.zarr'}\noperator: {{name: identity}}\n")
    cases = {
        "exactly one of --cron": ["--cron", "0 2 * * *", "--interval", "60"],
        "Invalid cron string": ["--cron", "61 * * *"],
        "--interval must be positive": ["--interval", "0"],
        "no Zarr array at": ["--interval", "60", "--config", str(tmp_path / "none.yaml")],
    }
    (tmp_path / "none.yaml").write_text(f"input: {tmp_path / 'none.zarr'}\noutput: o\noperator: {{name: identity}}\n")
    for message, args in cases.items():
        result = runner.invoke(app, ["serve", "--config", str(tmp_path / "run.yaml"), *args])
        assert result.exit_code == 2 and message in result.output.replace("\n", " "), (message, result.output)
    assert not (tmp_path / "o.zarr").exists()


def test_demo_runs_the_pipeline_then_show_summarises_it(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {"OMP_NUM_THREADS": "1"}  # as `make demo`
    command = [sys.executable, "-m", "priorflow.cli", "demo", "--solver", "mpgd", "--count", "6", "--workers", "1", "--out", str(tmp_path)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "psnr" in result.stdout and "benchmark mode: 6 images" in result.stderr
    assert "Error logging to API" not in result.stderr, result.stderr  # the workers close before the server stops
    grid = tmp_path / "sr_x4.grid.png"
    assert grid.is_file() and not (tmp_path / "sr_x4.png").exists()  # one grid, the flow's
    written = grid.read_bytes()
    shown = runner.invoke(app, ["show", str(tmp_path / "sr_x4.zarr")])
    assert shown.exit_code == 0, shown.output
    assert "solver mpgd, operator super_resolution(factor=4, method=bicubic)" in shown.output
    assert grid.read_bytes() == written  # show writes the flow's own grid again, the same
    assert runner.invoke(app, ["show", str(tmp_path / "sr_x4.zarr"), "--png", str(tmp_path / "g.png")]).exit_code == 0
    assert (tmp_path / "g.png").is_file()
    assert runner.invoke(app, ["show", str(tmp_path / "nothing.zarr")]).exit_code == 2


def test_no_telemetry_notice_in_a_terminal(tmp_path):
    """Prefect prints its usage-data notice on first import in an interactive terminal; priorflow's commands switch
    Prefect's telemetry off, notice included."""
    import os
    import pty
    import subprocess
    import sys

    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in ("DO_NOT_TRACK", "CI")} | {"PREFECT_HOME": str(tmp_path)}
    process = subprocess.Popen([sys.executable, "-m", "priorflow.cli", "restore", str(tmp_path / "missing.zarr"),
                                str(tmp_path / "out.zarr"), "--operator", "identity"], stdin=follower, stdout=follower,
                               stderr=follower, env=env, close_fds=True)
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    assert process.wait(timeout=120) == 2
    text = output.decode(errors="replace")
    assert "no Zarr array at" in text and "anonymous usage" not in text, text


@pytest.mark.pipeline
def test_restore_with_latent_and_projected_solvers_from_the_command_line(tmp_path, prefect_server, dask_address):
    """The bundled latent prior with mpgd_ldm, and digits16 with the bundled autoencoder for mpgd_z, end to end
    through the CLI, the flow and a Dask cluster; the output read back with plain zarr."""
    import numpy as np
    import zarr

    from priorflow.datasets import write_digits_array

    source = write_digits_array(str(tmp_path / "in.zarr"), "test", 6)
    common = ["--mode", "benchmark", "--operator", "super_resolution", "-o", "factor=4", "--noise", "gaussian",
              "-n", "sigma=0.05", "--address", dask_address, "--shard-size", "4"]
    runs = {"ldm": ["--prior", "digits16-latent", "--solver", "mpgd_ldm"],
            "z": ["--prior", "digits16", "--autoencoder", "digits16-ae", "--solver", "mpgd_z"]}
    for name, args in runs.items():
        result = runner.invoke(app, ["restore", source, str(tmp_path / f"{name}.zarr"), *common, *args])
        assert result.exit_code == 0, result.output
        group = zarr.open_group(str(tmp_path / f"{name}.zarr"), mode="r")
        restored, latents = group["restored"][:], group["latents"][:]
        assert restored.shape == (6, 1, 16, 16) and np.isfinite(restored).all()
        prior = group.attrs["priorflow_run"]["prior"]
        if name == "ldm":
            assert latents.shape[0] == 6 and latents.shape[2:] == (8, 8) and prior["kind"] == "latent"
        else:
            assert latents.shape == (6, 1, 16, 16) and prior["autoencoder"]["name"] == "digits16-latent"
        assert group["_done"][:].all() and np.isfinite(group["metrics/psnr"][:]).all()
