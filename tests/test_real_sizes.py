"""Real data at real sizes through the pipeline: images larger than the prior (tiles) and coupled volumes from the
command line, read back with plain zarr and with an NGFF reader; a coupling of weight 0 is today's result."""

import numpy as np
import pytest
import zarr
from test_ngff import read_ngff, validate
from typer.testing import CliRunner

from priorflow.cli import app
from priorflow.config import validate_config
from priorflow.datasets import write_digits_array
from priorflow.tasks.output import prepare_output
from priorflow.tasks.plan import make_plan
from priorflow.tasks.shard import restore_shard

pytestmark = pytest.mark.pipeline


def restore(dask_address: str, *args: str) -> None:
    """`priorflow restore ... --address` in this process (against the session's Prefect server), with a fast MPGD."""
    result = CliRunner().invoke(app, ["restore", *args, "--solver", "mpgd", "-s", "steps=10", "--address", dask_address])
    assert result.exit_code == 0, result.output


def ngff_levels(url: str) -> list[tuple[tuple[int, ...], list[str]]]:
    """(shape, axis names) of each level, as ome-zarr's reader (napari's) sees the group, after NGFF 0.5 checks."""
    axes = [axis["name"] for axis in validate(url)["axes"]]
    levels, _ = read_ngff(url)
    return [(level.shape, axes) for level in levels]


def test_a_64x64_input_with_the_16x16_prior_is_restored_in_tiles(tmp_path, prefect_server, dask_address):
    source = write_digits_array(str(tmp_path / "pages.zarr"), "test", 3, kind="mosaics", size=64)
    out = str(tmp_path / "out.zarr")
    restore(dask_address, source, out, "--mode", "benchmark", "--operator", "gaussian_blur", "-o", "kernel_size=7",
            "-o", "sigma=1.0", "--noise", "gaussian", "-n", "sigma=0.05", "--shard-size", "72")
    group = zarr.open_group(out, mode="r")
    run = group.attrs["priorflow_run"]
    tops, lefts = run["tiles"]
    tiles = len(tops) * len(lefts)
    assert tops == [0, 10, 20, 30, 40, 48] and tiles == 36 and run["samples_per_shard"] == 2  # 72 rows a shard
    assert group["restored"].shape == (3, 1, 64, 64) and np.isfinite(group["restored"][:]).all()
    assert np.array_equal(group["ground_truth"][:], zarr.open_array(source, mode="r")[:])
    assert group["latents"].shape == (3, tiles, 1, 16, 16) and group["metrics/nfe"].shape == (3, tiles)
    assert (group["metrics/nfe"][:] == 10).all() and np.isfinite(group["metrics/psnr"][:]).all()
    assert group["_done"][:].all()
    assert ngff_levels(out) == [((3, 1, 64, 64), ["sample", "channel", "y", "x"]),
                                ((3, 1, 32, 32), ["sample", "channel", "y", "x"]),
                                ((3, 1, 16, 16), ["sample", "channel", "y", "x"])]
    before = group["restored"][:]
    restore(dask_address, source, out, "--mode", "benchmark", "--operator", "gaussian_blur", "-o", "kernel_size=7",
            "-o", "sigma=1.0", "--noise", "gaussian", "-n", "sigma=0.05", "--shard-size", "72")
    summary = zarr.open_group(out, mode="r").attrs["priorflow_summary"]
    assert summary["samples"] == 3 and summary["shards"] == 2 and summary["nfe"]["count"] == 3 * tiles
    assert np.array_equal(zarr.open_group(out, mode="r")["restored"][:], before)  # the rerun resumed: nothing left


def test_a_coupled_volume_from_the_command_line(tmp_path, prefect_server, dask_address):
    source = write_digits_array(str(tmp_path / "volumes.zarr"), "test", 2, kind="volumes", depth=6)
    out = str(tmp_path / "out.zarr")
    restore(dask_address, source, out, "--mode", "benchmark", "--operator", "inpainting", "-o", "fraction=0.5",
            "--coupling", "0.5", "--coupling-halo", "1", "--shard-size", "3")
    group = zarr.open_group(out, mode="r")
    assert group.attrs["priorflow_run"]["config"]["coupling"] == {"weight": 0.5, "halo": 1}
    assert group["restored"].shape == (2, 6, 16, 16) and group["_done"][:].all()
    assert np.isfinite(group["restored"][:]).all() and group["metrics/nfe"].shape == (2, 6)
    assert [shape for shape, _ in ngff_levels(out)] == [(2, 6, 16, 16), (2, 6, 8, 8), (2, 6, 4, 4)]


def _restore_in_process(source: str, out: str, **fields) -> np.ndarray:
    config = validate_config({"input": source, "output": out, "mode": "benchmark", "layout": "volumes", "device": "cpu",
                              "operator": {"name": "inpainting", "params": {"fraction": 0.5}}, "shard_size": 3,
                              "noise": {"name": "gaussian", "params": {"sigma": 0.05}},
                              "solver": {"name": "dmplug", "max_iters": 8}, **fields})
    plan = prepare_output.fn(make_plan(config))
    for shard in plan.pending:
        restore_shard(plan, shard)
    return zarr.open_group(out, mode="r")["restored"][:]


def test_volumes_with_slices_larger_than_the_prior_are_tiled_and_coupled_with_halos(tmp_path):
    source = str(tmp_path / "large_slices.zarr")
    data = np.random.default_rng(0).random((1, 5, 20, 24), dtype=np.float32)
    zarr.create_array(source, data=data, attributes={"priorflow_layout": "volumes"})
    restored = _restore_in_process(source, str(tmp_path / "out.zarr"), shard_size=8,
                                   coupling={"weight": 0.3, "halo": 1})
    group = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    tops, lefts = group.attrs["priorflow_run"]["tiles"]
    assert (tops, lefts) == ([0, 4], [0, 8]) and group.attrs["priorflow_run"]["samples_per_shard"] == 2
    assert restored.shape == (1, 5, 20, 24) and np.isfinite(restored).all() and group["_done"][:].all()
    assert group["latents"].shape == (1, 5, 4, 1, 16, 16) and (group["metrics/nfe"][:] > 0).all()


def test_coupling_weight_zero_gives_todays_results_bit_for_bit(tmp_path):
    source = write_digits_array(str(tmp_path / "volumes.zarr"), "test", 1, kind="volumes", depth=6)
    today = _restore_in_process(source, str(tmp_path / "today.zarr"))
    zero = _restore_in_process(source, str(tmp_path / "zero.zarr"), coupling={"weight": 0.0, "halo": 2})
    coupled = _restore_in_process(source, str(tmp_path / "coupled.zarr"), coupling={"weight": 0.5, "halo": 2})
    assert np.array_equal(today, zero)
    assert not np.array_equal(today, coupled)
    fingerprints = [zarr.open_group(str(tmp_path / f"{n}.zarr"), mode="r").attrs["priorflow_run"]["fingerprint"]
                    for n in ("today", "zero", "coupled")]
    assert fingerprints[0] == fingerprints[1] != fingerprints[2]


def test_a_ct_sinogram_input_from_the_command_line(tmp_path, prefect_server, dask_address):
    """Measured sparse-view sinograms (deepinv's Radon transform, 8 angles) restored to images."""
    from priorflow.datasets import load_digits
    from priorflow.solvers import build_noise, build_operator, simulate_measurements

    truth = load_digits("test", 16)[0][:4]
    operator = build_operator("ct", (1, 16, 16), range(4), angles=8)
    sinograms = simulate_measurements(truth, operator, build_noise("gaussian", sigma=0.01), range(4)).y
    source = str(tmp_path / "sinograms.zarr")
    zarr.create_array(source, data=sinograms.numpy())
    out = str(tmp_path / "out.zarr")
    restore(dask_address, source, out, "--operator", "ct", "-o", "angles=8")
    group = zarr.open_group(out, mode="r")
    assert sinograms.shape == (4, 1, 23, 8) and group["restored"].shape == (4, 1, 16, 16)
    assert np.isfinite(group["restored"][:]).all() and group["_done"][:].all()
    assert group.attrs["priorflow_run"]["config"]["operator"] == {"name": "ct", "params": {"angles": 8}}
    assert [shape for shape, _ in ngff_levels(out)] == [(4, 1, 16, 16), (4, 1, 8, 8), (4, 1, 4, 4)]


def test_a_run_says_its_mode_and_sizes_before_it_starts(tmp_path):
    """The README's sample data holds clean digits: restored without --mode benchmark they are taken as measurements
    of images four times larger, solved in tiles. The plan says so in one line, and notes the likely mistake."""
    source = write_digits_array(str(tmp_path / "digits.zarr"), "test", 4)
    measured = make_plan(validate_config({"input": source, "output": str(tmp_path / "o.zarr"),
                                          "operator": {"name": "super_resolution", "params": {"factor": 4}}}))
    line = measured.describe()
    assert line.startswith("measured mode: 4 images, measurements of 1x16x16, super_resolution(factor=4, method=bicubic)")
    assert f"restored at 1x64x64 in {measured.geometry.tiles} tiles of 16x16 each" in line
    assert len(measured.notes) == 1 and "--mode benchmark" in measured.notes[0]
    benchmark = make_plan(validate_config({"input": source, "output": str(tmp_path / "o.zarr"), "mode": "benchmark",
                                           "operator": {"name": "super_resolution", "params": {"factor": 4}}}))
    assert benchmark.describe().startswith("benchmark mode: 4 images, clean images of 1x16x16") and not benchmark.notes
    assert "restored at 1x16x16 by dmplug" in benchmark.describe()
