"""Storage without Prefect: layouts and shards, input validation, ingest, the output group's resume rules."""

import numpy as np
import pytest
import zarr
from PIL import Image

from priorflow.errors import PriorflowError, ShapeError
from priorflow.storage.ingest import ingest
from priorflow.storage.inputs import open_input
from priorflow.storage.layout import SampleLayout
from priorflow.storage.outputs import ArraySpec, OutputGroup, RunConflict
from priorflow.storage.urls import StorageError


@pytest.mark.parametrize(
    ("shape", "channels", "kind", "grid"),
    [((10, 3, 8, 8), 3, "images", (10, 1)), ((2, 5, 8, 8), 1, "volumes", (2, 5)), ((7, 8, 8), 1, "volume", (1, 7))],
)
def test_layouts_and_shards_cover_every_sample_once(shape, channels, kind, grid):
    layout = SampleLayout.infer(shape, channels, kind if kind == "volumes" else None)
    assert layout.kind == kind and layout.grid == grid
    shards = layout.plan(3)
    ids = [i for s in shards for i in layout.sample_ids(s)]
    assert sorted(ids) == list(range(layout.num_samples))
    data = np.arange(np.prod(shape)).reshape(shape)
    for shard in shards:
        block = layout.to_samples(data[layout.index(shard)])
        assert block.shape[1:] == layout.sample_shape
        assert np.array_equal(layout.from_samples(block), data[layout.index(shard)])


def test_layout_errors_name_the_problem():
    with pytest.raises(ShapeError, match="images have 3 channels, the prior expects 1"):
        SampleLayout.infer((4, 3, 8, 8), 1, "images")
    with pytest.raises(ShapeError, match="1-channel prior"):
        SampleLayout.infer((4, 8, 8), 3)
    with pytest.raises(ShapeError, match=r"\(N, C, H, W\)"):
        SampleLayout.infer((4, 8), 1)
    with pytest.raises(ShapeError, match="axis 1 has 3.*--layout volumes"):  # never silently taken for volumes
        SampleLayout.infer((4, 3, 8, 8), 1)


def test_input_validation(tmp_path):
    url = str(tmp_path / "x.zarr")
    zarr.create_array(url, data=np.full((4, 1, 8, 8), 2.0, dtype="f4"), chunks=(2, 1, 8, 8))
    source = open_input(url, 1)
    with pytest.raises(PriorflowError, match=r"images as floats must be in \[0, 1\], found 2..2"):
        source.read(source.layout.plan(2)[0])
    with pytest.raises(PriorflowError, match=r"must be in \[0, 1\]"):
        source.check_values()
    measured = open_input(url, 1, measurements=True)  # measurements are data: noise leaves [0, 1]
    measured.check_values()
    assert float(measured.read(measured.layout.plan(2)[0]).max()) == 2.0
    nan = np.zeros((2, 1, 8, 8), dtype="f4")
    nan[1, 0, 3, 3] = np.nan
    zarr.create_array(str(tmp_path / "nan.zarr"), data=nan)
    for measurements in (False, True):
        source = open_input(str(tmp_path / "nan.zarr"), 1, measurements=measurements)
        with pytest.raises(PriorflowError, match=r"1 NaN or infinite values \(the first at index \(1, 0, 3, 3\)"):
            source.read(source.layout.plan(2)[0])
        with pytest.raises(PriorflowError, match="NaN or infinite"):
            source.check_values()
    zarr.create_array(str(tmp_path / "i.zarr"), data=np.zeros((2, 1, 8, 8), dtype="i4"))
    with pytest.raises(PriorflowError, match="unsupported dtype int32"):
        open_input(str(tmp_path / "i.zarr"), 1)
    with pytest.raises(StorageError, match="no Zarr array"):
        open_input(str(tmp_path / "missing.zarr"), 1)
    zarr.open_group(str(tmp_path / "g.zarr"), mode="w").create_array("images", shape=(1, 1, 8, 8), dtype="u1")
    with pytest.raises(StorageError, match=r"is a Zarr group.*images"):
        open_input(str(tmp_path / "g.zarr"), 1)
    zarr.create_array(str(tmp_path / "u8.zarr"), data=np.full((2, 1, 8, 8), 255, dtype="u1"))
    u8 = open_input(str(tmp_path / "u8.zarr"), 1)
    assert float(u8.read(u8.layout.plan(2)[0]).min()) == 1.0


def test_ingest_images_and_tiff_stacks(tmp_path):
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(np.full((8, 8), i * 40, dtype=np.uint8)).save(folder / f"{i:03d}.png")
    array = ingest(folder, str(tmp_path / "imgs.zarr"), chunk=2)
    assert array.shape == (5, 1, 8, 8) and array.attrs["priorflow_layout"] == "images"
    assert int(array[3, 0, 0, 0]) == 120
    import tifffile

    tifffile.imwrite(tmp_path / "stack.tif", np.arange(6 * 8 * 8, dtype=np.uint16).reshape(6, 8, 8))
    volume = ingest(tmp_path / "stack.tif", str(tmp_path / "vol.zarr"))
    assert volume.shape == (6, 8, 8) and volume.attrs["priorflow_layout"] == "volume"
    with pytest.raises(PriorflowError, match="already exists"):
        ingest(folder, str(tmp_path / "imgs.zarr"))
    Image.fromarray(np.zeros((9, 8), dtype=np.uint8)).save(folder / "004b.png")
    with pytest.raises(PriorflowError, match="004b.png: shape"):
        ingest(folder, str(tmp_path / "bad.zarr"), chunk=2)
    assert not (tmp_path / "bad.zarr").exists()  # nothing half-written left behind


def test_output_group_resume_and_conflict(tmp_path):
    url = str(tmp_path / "out.zarr")
    layout = SampleLayout.infer((6, 1, 4, 4), 1)
    arrays = {"restored": ArraySpec((1, 4, 4), ("channel", "y", "x"), "f4", 0.0)}
    run = {"fingerprint": "a" * 64}
    out = OutputGroup.prepare(url, layout, 4, arrays, run)
    assert out.group["restored"].metadata.dimension_names == ("sample", "channel", "y", "x")
    shard = layout.plan(4)[1]
    out.write_shard(layout, shard, {"restored": np.ones((2, 1, 4, 4), dtype="f4")})
    again = OutputGroup.prepare(url, layout, 4, arrays, run)
    assert again.done().tolist() == [False] * 4 + [True] * 2  # per sample
    assert float(again.read("restored")[5].sum()) == 16.0
    with pytest.raises(RunConflict, match="another configuration"):
        OutputGroup.prepare(url, layout, 4, arrays, {"fingerprint": "b" * 64})
    fresh = OutputGroup.prepare(url, layout, 4, arrays, {"fingerprint": "b" * 64}, overwrite=True)
    assert not fresh.done().any() and float(fresh.read("restored").sum()) == 0.0
    # a group with no finished sample (a run that failed before any result) is taken over without --overwrite
    taken = OutputGroup.prepare(url, layout, 4, arrays, {"fingerprint": "c" * 64})
    assert taken.run["fingerprint"] == "c" * 64


def test_a_grown_input_leaves_only_the_new_tail_of_each_shard_pending(tmp_path):
    url = str(tmp_path / "out.zarr")
    arrays = {"restored": ArraySpec((4, 4), ("y", "x"), "f4", 0.0)}
    run = {"fingerprint": "a" * 64}
    small = SampleLayout.infer((2, 5, 4, 4), 1, "volumes")  # two volumes of five slices
    out = OutputGroup.prepare(url, small, 4, arrays, run)
    for shard in small.plan(4):
        out.write_shard(small, shard, {"restored": np.full((shard.size, 4, 4), shard.index + 1, dtype="f4")})
    grown = SampleLayout.infer((3, 5, 4, 4), 1, "volumes")  # a third volume arrives
    again = OutputGroup.prepare(url, grown, 4, arrays, run)
    assert [(s.n0, s.d0, s.d1) for s in grown.pending(grown.plan(4), again.done())] == [(2, 0, 4), (2, 4, 5)]
    assert np.array_equal(again.read("restored")[:2], out.read("restored")[:2])
    with pytest.raises(RunConflict, match="may only grow by appending along its first axis"):
        OutputGroup.prepare(url, SampleLayout.infer((3, 6, 4, 4), 1, "volumes"), 4, arrays, run)

    images = SampleLayout.infer((10, 1, 4, 4), 1)
    done = np.array([True] * 6 + [False] * 4)
    assert [(s.index, s.n0, s.n1) for s in images.pending(images.plan(4), done)] == [(1, 6, 8), (2, 8, 10)]
