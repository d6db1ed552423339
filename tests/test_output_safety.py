"""No run ever deletes or writes into data priorflow did not write: foreign groups and arrays, non-empty folders,
the input's own group, users' files beside the output. Every case on a local path and on S3 (Ceph radosgw)."""

from __future__ import annotations

import uuid

import fsspec
import numpy as np
import pytest
import zarr
from conftest import run_fields

from priorflow.config import validate_config
from priorflow.datasets import write_digits_array
from priorflow.flows.restore import run_restore
from priorflow.storage.location import OutputLocationError
from priorflow.storage.outputs import OutputGroup, RunConflict
from priorflow.storage.urls import open_store
from priorflow.tasks.output import output_arrays, run_record
from priorflow.tasks.plan import make_plan

pytestmark = pytest.mark.pipeline


@pytest.fixture(params=["local", "s3"])
def base(request, tmp_path) -> str:
    """A fresh folder (local) or prefix (S3) for one test."""
    if request.param == "local":
        return str(tmp_path)
    request.getfixturevalue("local_s3")
    fs = fsspec.filesystem("s3")
    if not fs.exists("priorflow-safety"):
        fs.mkdir("priorflow-safety")
    return f"s3://priorflow-safety/{uuid.uuid4().hex[:8]}"


def config_at(base: str, output: str, input: str | None = None):
    """A small run (6 held-out digits, a fast MPGD, one worker) from `input` (default: written) to `output`."""
    return validate_config(run_fields(input or write_digits_array(f"{base}/in.zarr", "test", 6), output,
                                      solver={"name": "mpgd", "steps": 20, "scale": 4.0}, cluster={"workers": 1}))


def foreign_group(url: str) -> zarr.Group:
    group = zarr.open_group(store=open_store(url), mode="w")
    group.create_array("important", data=np.arange(10))
    return group


def listing(url: str) -> list[str]:
    fs, path = fsspec.core.url_to_fs(url)
    return sorted(fs.find(path)) if fs.exists(path) else []


def test_a_foreign_group_is_refused_even_with_overwrite(base):
    output = f"{base}/x.zarr"
    foreign_group(output)
    before = listing(output)
    config = config_at(base, output)
    for overwrite in (False, True):
        with pytest.raises(OutputLocationError, match="a Zarr group that priorflow did not write"):
            run_restore(config, overwrite=overwrite)
    assert listing(output) == before  # nothing written, not even a lease
    assert np.array_equal(zarr.open_group(store=open_store(output), mode="r")["important"][:], np.arange(10))


def test_arrays_folders_and_the_inputs_own_group_are_refused(base):
    data = f"{base}/data.zarr"
    foreign_group(data)
    raw = write_digits_array(f"{data}/raw", "test", 6)
    kept = np.asarray(zarr.open_array(store=open_store(raw), mode="r")[:])
    cases = {
        data: "contains the input",  # the common layout data.zarr/raw in, data.zarr out
        raw: "is the input itself",
        f"{raw}/restored": "is inside the input",
        f"{data}/important": "holds a Zarr array",
    }
    fs, folder = fsspec.core.url_to_fs(f"{base}/notes")
    fs.makedirs(folder, exist_ok=True)
    fs.pipe_file(f"{folder}/readme.txt", b"mine")
    cases[f"{base}/notes"] = r"is not empty \(readme.txt\)"
    for output, message in cases.items():
        for overwrite in (False, True):
            with pytest.raises(OutputLocationError, match=message):
                run_restore(config_at(base, output, input=raw), overwrite=overwrite)
    assert np.array_equal(zarr.open_array(store=open_store(raw), mode="r")[:], kept)
    assert fs.cat_file(f"{folder}/readme.txt") == b"mine"


def test_a_users_file_where_the_summary_would_go_is_refused(base):
    fs, path = fsspec.core.url_to_fs(f"{base}/out.summary.json")
    fs.pipe_file(path, b'{"my": "notes"}')
    with pytest.raises(OutputLocationError, match="out.summary.json exists and was not written by priorflow"):
        run_restore(config_at(base, f"{base}/out.zarr"))
    assert fs.cat_file(path) == b'{"my": "notes"}' and not listing(f"{base}/out.zarr")


def test_overwrite_replaces_only_priorflows_own_arrays(base, prefect_server):
    first = config_at(base, f"{base}/out.zarr")
    plan = make_plan(first)
    layout = plan.restored_layout
    out = OutputGroup.prepare(first.output, layout, first.shard_size, output_arrays(plan), run_record(plan))
    out.write_shard(layout, layout.plan(first.shard_size)[0], {"restored": np.ones((5, 1, 16, 16), dtype="f4")})
    out.group.create_array("notes", data=np.arange(3))  # a user's array, added to the priorflow group
    out.group.attrs["project"] = "lab"

    second = first.model_copy(update={"seed": 99})
    with pytest.raises(RunConflict, match="another configuration"):
        make_plan(second)
    summary = run_restore(second, overwrite=True)["summary"]
    group = zarr.open_group(store=open_store(second.output), mode="r")
    assert summary["samples_done"] == 6 and group.attrs["priorflow_run"]["config"]["seed"] == 99
    assert np.array_equal(group["notes"][:], np.arange(3)) and group.attrs["project"] == "lab"
    assert not np.array_equal(group["restored"][:5], np.ones((5, 1, 16, 16)))


def test_ingest_and_sample_data_replace_only_their_own_arrays(base, tmp_path):
    from PIL import Image

    from priorflow.storage.ingest import ingest

    folder = tmp_path / "pngs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8), i * 40, dtype=np.uint8)).save(folder / f"{i}.png")
    foreign_group(f"{base}/mine.zarr")
    zarr.create_array(store=open_store(f"{base}/theirs.zarr"), data=np.arange(4))
    for url in (f"{base}/mine.zarr", f"{base}/theirs.zarr"):
        before = listing(url)
        with pytest.raises(OutputLocationError, match="did not write"):
            ingest(folder, url, overwrite=True)
        with pytest.raises(OutputLocationError, match="did not write"):
            write_digits_array(url, "test", 2)
        assert listing(url) == before
    ingest(folder, f"{base}/scans.zarr")
    assert ingest(folder, f"{base}/scans.zarr", overwrite=True).shape == (3, 1, 8, 8)  # its own array: replaced
