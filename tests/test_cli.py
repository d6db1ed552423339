"""The command line: help everywhere, the demo end to end, clear errors with a non-zero exit."""

from typer.testing import CliRunner

from priorflow.cli import app

runner = CliRunner()


def test_every_command_has_help():
    for args in ([], ["train"], ["demo"]):
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output


def test_demo_restores_and_writes_a_grid(tmp_path):
    result = runner.invoke(app, ["demo", "--solvers", "mpgd,ddim", "--count", "2", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "mpgd" in result.output and "bicubic upsampling" in result.output
    assert (tmp_path / "sr_x4.png").stat().st_size > 0


def test_demo_bad_input_exits_non_zero(tmp_path):
    bad_task = runner.invoke(app, ["demo", "--task", "denoise_everything", "--out", str(tmp_path)])
    assert bad_task.exit_code == 2 and "unknown task 'denoise_everything'" in bad_task.output
    bad_solver = runner.invoke(app, ["demo", "--solvers", "dmplug,magic", "--out", str(tmp_path)])
    assert bad_solver.exit_code == 2 and "unknown solver 'magic'" in bad_solver.output
    bad_device = runner.invoke(app, ["demo", "--device", "tpu", "--out", str(tmp_path)])
    assert bad_device.exit_code == 2 and "unknown device 'tpu'" in bad_device.output
    assert not list(tmp_path.iterdir())
