"""The restore flow for real: Prefect (one test server for the session), a Dask LocalCluster, Zarr on disk."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from conftest import digits_run
from test_ngff import mean_2x2, read_ngff, validate

from priorflow.bundled import prior_path
from priorflow.config import validate_config
from priorflow.errors import ShapeError
from priorflow.flows.restore import run_restore
from priorflow.presets import classical_baseline
from priorflow.solvers import (
    NOISE_SEED_OFFSET,
    InverseProblem,
    build_noise,
    build_operator,
    build_solver,
    load_prior,
    sample_generators,
)
from priorflow.solvers.metrics import psnr
from priorflow.storage.outputs import OutputGroup, RunConflict
from priorflow.viz import output_columns

pytestmark = pytest.mark.pipeline


def config_for(tmp_path, **overrides):
    return validate_config(digits_run(tmp_path, **overrides))


def test_restore_writes_everything_and_resumes(tmp_path, prefect_server, dask_address):
    config = config_for(tmp_path, cluster={"address": dask_address})
    summary = run_restore(config)["summary"]
    out = OutputGroup.open(config.output)
    assert summary["shards_done"] == summary["shards"] == 3 and summary["samples"] == 12
    assert out.read("restored").shape == (12, 1, 16, 16) and out.read("measurement").shape == (12, 1, 4, 4)
    assert out.read("trace").shape[:2] == (12, 4) and np.isfinite(out.read("trace")).all()
    assert out.done().all()
    assert out.run["prior"]["sha256"] == load_prior(prior_path("digits16"), "cpu").identity["sha256"]
    bicubic = classical_baseline("sr_x4", torch.from_numpy(out.read("measurement")))
    baseline = float(psnr(bicubic, torch.from_numpy(out.read("ground_truth"))).mean())
    assert summary["psnr"]["count"] == 12 and summary["psnr"]["mean"] > baseline + 1.0
    assert (tmp_path / "out.summary.json").is_file() and not (tmp_path / "out.zarr" / "summary.json").exists()

    # a sample's result is the solver's on that sample alone, with its own seeds: sharding changes nothing
    prior = load_prior(prior_path("digits16"), "cpu")
    truth = torch.from_numpy(out.read("ground_truth")[6:7])
    op = build_operator("super_resolution", prior.image_shape, [13], factor=4)
    y = build_noise("gaussian", sigma=0.05)(op(truth), sample_generators([NOISE_SEED_OFFSET + 13]))
    assert np.allclose(y.numpy(), out.read("measurement")[6:7], atol=1e-6)
    alone = build_solver("mpgd", steps=50, scale=4.0, trace_every=12).solve(prior, InverseProblem(y, op), [13])
    assert np.allclose(alone.x.numpy(), out.read("restored")[6:7], atol=1e-5)

    from priorflow.tasks.plan import make_plan
    from priorflow.tasks.shard import restore_shard

    plan = make_plan(config)
    skipped = restore_shard(plan, plan.layout.plan(config.shard_size)[1])  # as when a worker that wrote it was lost
    assert skipped.skipped and skipped.solve_s == 0.0 and not plan.has_work

    before = out.read("restored")
    again = run_restore(config)["summary"]
    assert again["shards_done"] == 3 and np.array_equal(OutputGroup.open(config.output).read("restored"), before)

    other = config.model_copy(update={"seed": 8})
    with pytest.raises(RunConflict, match="another configuration"):
        run_restore(other)["summary"]
    assert np.array_equal(OutputGroup.open(config.output).read("restored"), before)


def test_volumes_are_restored_slice_by_slice_and_reassembled(tmp_path, prefect_server, dask_address):
    import zarr

    from priorflow.datasets import load_digits

    slices, _ = load_digits("test", 16)
    volumes = slices[:12, 0].reshape(2, 6, 16, 16).numpy()  # two volumes of six slices
    zarr.create_array(str(tmp_path / "vol.zarr"), data=volumes, chunks=(1, 6, 16, 16))
    with pytest.raises(ShapeError, match="--layout volumes"):  # (2, 6, 16, 16) is not images of a 1-channel prior
        run_restore(config_for(tmp_path, input=str(tmp_path / "vol.zarr")))
    config = config_for(tmp_path, input=str(tmp_path / "vol.zarr"), shard_size=4, layout="volumes",
                        cluster={"address": dask_address})
    summary = run_restore(config)["summary"]
    out = OutputGroup.open(config.output)
    assert out.run["layout"] == "volumes" and summary["shards"] == 4  # 2 volumes x (4 + 2 slices)
    assert out.read("restored").shape == (2, 6, 16, 16) and out.read("metrics/psnr").shape == (2, 6)
    assert out.read("latents").shape == (2, 6, 1, 16, 16)
    assert np.array_equal(out.read("ground_truth"), volumes)
    assert np.isfinite(out.read("metrics/psnr")).all()
    columns = output_columns(out, 4)  # the artifact grid shows the first volume's first slices
    assert columns["measurement"].shape == (4, 1, 4, 4) and columns["restored"].shape == (4, 1, 16, 16)
    assert np.array_equal(columns["ground truth"][:, 0].numpy(), volumes[0, :4])


def test_a_grown_input_restores_only_its_new_samples(tmp_path, prefect_server, dask_address):
    import zarr

    from priorflow.datasets import load_digits

    config = config_for(tmp_path, shard_size=4, cluster={"address": dask_address})
    digits = load_digits("test", 16)[0][:10].numpy()
    source = zarr.open_array(config.input, mode="r+")
    source.resize((6, 1, 16, 16))  # the dataset as first seen: 6 images, the last shard half full
    first = run_restore(config)
    assert first["summary"]["samples_done"] == 6 and sum(r["samples"] for r in first["shards"]) == 6
    before = {name: OutputGroup.open(config.output).read(name) for name in ("restored", "latents", "metrics/seconds")}

    source.resize((10, 1, 16, 16))
    source[6:] = digits[6:]  # four new images arrive
    second = run_restore(config)
    out = OutputGroup.open(config.output)
    assert second["summary"]["samples_done"] == second["summary"]["samples"] == 10
    assert [(r["shard"], r["samples"]) for r in second["shards"]] == [(1, 2), (2, 2)]  # only samples 6..9
    for name, old in before.items():  # the first run's results, bit for bit (seconds would differ if re-solved)
        assert np.array_equal(out.read(name)[:6], old)
    assert np.isfinite(out.read("metrics/psnr")).all() and out.done().all()

    # the new samples are exactly what a run over the whole grown input gives
    fresh = run_restore(config.model_copy(update={"output": str(tmp_path / "fresh.zarr")}))
    assert fresh["summary"]["samples_done"] == 10
    assert np.allclose(OutputGroup.open(str(tmp_path / "fresh.zarr")).read("restored"), out.read("restored"), atol=1e-5)

    nothing_new = run_restore(config)
    assert nothing_new["shards"] == []

    source.resize((8, 1, 16, 16))  # shrinking would leave results without their samples: refused
    with pytest.raises(RunConflict, match="only grow"):
        run_restore(config)


def test_run_artifacts(tmp_path, prefect_server):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    from priorflow.flows.progress import shown_by
    from priorflow.tasks.reduce import ARTIFACT_KEYS

    config = config_for(tmp_path, shard_size=6, cluster={"workers": 1}, solver={"name": "mpgd", "steps": 200})
    seen: list[tuple[float, int]] = []
    with shown_by(lambda solved, total: seen.append((solved, total))):
        result = run_restore(config)
    solved = [value for value, total in seen if total == 12]
    assert solved == sorted(solved) and solved[-1] == 12  # the samples solved, counted up as the shards report
    assert any(value % 6 for value in solved), seen  # within a shard, not only when it ends
    with get_client(sync_client=True) as client:
        mine = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[result["flow_run"]])))
        progress = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["priorflow-progress"])),
                                         sort=ArtifactSort.UPDATED_DESC, limit=1)
    by_key = {a.key: a for a in mine}
    assert set(ARTIFACT_KEYS.values()) <= set(by_key)
    assert "| psnr |" in by_key[ARTIFACT_KEYS["metrics"]].data and "12/12 samples restored" in by_key[ARTIFACT_KEYS["metrics"]].data
    assert by_key[ARTIFACT_KEYS["output"]].data == f"[{config.output}]({config.output})"
    assert "data:image/png;base64," in by_key[ARTIFACT_KEYS["grid"]].data and (tmp_path / "out.grid.png").is_file()
    assert progress[0].data == 100.0

    validate(config.output)  # and the output opens as an OME-Zarr image, as napari's reader would read it
    levels, metadata = read_ngff(config.output)
    assert [level.shape for level in levels] == [(12, 1, 16, 16), (12, 1, 8, 8), (12, 1, 4, 4)]
    assert [a["name"] for a in metadata["axes"]] == ["sample", "channel", "y", "x"]
    assert np.array_equal(levels[0], OutputGroup.open(config.output).read("restored"))
    assert np.allclose(levels[1], mean_2x2(levels[0]), atol=1e-6)


def test_a_prefect_tag_limit_keeps_solver_tasks_apart(tmp_path, prefect_server, dask_address):
    """`prefect concurrency-limit create priorflow-solve 1` (priorflow-gpu on GPUs): one solver task at a time
    across all runs, even on two Dask workers."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
        TaskRunFilter,
        TaskRunFilterFlowRunId,
    )

    config = config_for(tmp_path, shard_size=4, cluster={"address": dask_address})
    with get_client(sync_client=True) as client:
        client.create_concurrency_limit(tag="priorflow-solve", concurrency_limit=1)
        try:
            result = run_restore(config)
        finally:
            client.delete_concurrency_limit_by_tag("priorflow-solve")
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[result["flow_run"]])))
        tasks = client.read_task_runs(task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[c.id for c in children])))
    spans = sorted((t.start_time, t.end_time) for t in tasks if t.name.startswith("solve-shard"))
    assert result["summary"]["shards_done"] == 3 and len(spans) == 3
    assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(spans)), spans


def test_a_run_resumes_however_its_input_is_spelled(tmp_path, prefect_server, dask_address, monkeypatch):
    """Relative, ./-prefixed, absolute and file:// spellings of the input are one location: an unchanged run from
    another directory resumes. An output recorded before locations were normalised (its fingerprint hashed the input
    as spelled) resumes when rerun as it was, and from then on however the input is spelled."""
    from priorflow.storage.location import RUN_ATTRIBUTE
    from priorflow.tasks.plan import make_plan

    config = config_for(tmp_path, solver={"name": "mpgd", "steps": 10}, cluster={"address": dask_address})
    monkeypatch.chdir(tmp_path)
    relative = config.model_copy(update={"input": "in.zarr"})
    assert len(run_restore(relative)["shards"]) == 3
    fingerprint = OutputGroup.open(config.output).run["fingerprint"]
    for spelling in ("./in.zarr", str(tmp_path / "in.zarr"), f"file://{tmp_path}/in.zarr", f"{tmp_path}//in.zarr/"):
        assert make_plan(config.model_copy(update={"input": spelling})).fingerprint == fingerprint
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert run_restore(config)["shards"] == []  # the absolute spelling, from another directory: nothing to solve

    group = OutputGroup.open(config.output, read_only=False).group
    record = dict(group.attrs[RUN_ATTRIBUTE])
    sha = record["prior"]["sha256"]
    legacy = relative.result_fingerprint(sha, spelled={"input": "in.zarr", "prior": "digits16", "autoencoder": None})
    assert legacy != fingerprint
    group.attrs[RUN_ATTRIBUTE] = record | {"fingerprint": legacy, "config": record["config"] | {"input": "in.zarr"}}
    monkeypatch.chdir(tmp_path)
    assert run_restore(relative)["shards"] == []  # rerun as it was: resumed, and its record updated
    assert OutputGroup.open(config.output).run["fingerprint"] == fingerprint
    with pytest.raises(RunConflict, match="another configuration"):  # a real change is still another configuration
        make_plan(config.model_copy(update={"seed": 8}))
