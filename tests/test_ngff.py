"""OME-Zarr (NGFF 0.5) levels and metadata of an output group, read back with ome-zarr-py as napari's plugin does.

ome-zarr 0.18's Reader reads the 0.5 "ome" attribute of a Zarr v3 group, but takes the multiscale's version from
inside it (absent in 0.5) and so skips its axis checks; `validate` runs them for 0.5: ome-zarr's own axis rules, its
OMEZarrMultiscale reader (the 0.5 model on the attributes) and ome-zarr-models' group model (which also checks each
level's dimension names against the axes).
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
import zarr
from ome_zarr.axes import Axes
from ome_zarr.classes import OMEZarrMultiscale
from ome_zarr.format import FormatV05
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader
from ome_zarr_models.v05 import Image

from priorflow.storage import ngff
from priorflow.storage.layout import SampleLayout
from priorflow.storage.outputs import ArraySpec, OutputGroup

RUN = {"fingerprint": "a" * 64}


def prepare(url: str, layout: SampleLayout, shard_size: int = 2, run: dict | None = None, **kwargs) -> OutputGroup:
    trailing = layout.shape[len(layout.leading):]
    arrays = {"restored": ArraySpec(trailing, layout.trailing_dims, "f4", 0.0)}
    return OutputGroup.prepare(url, layout, shard_size, arrays, run or RUN, **kwargs)


def write_all(out: OutputGroup, layout: SampleLayout, data: np.ndarray, shard_size: int = 2) -> None:
    for shard in layout.plan(shard_size):
        out.write_shard(layout, shard, {"restored": data[layout.index(shard)]})


def mean_2x2(image: np.ndarray) -> np.ndarray:
    """An independent 2x2 mean over y and x, for even sizes."""
    *lead, h, w = image.shape
    return image.reshape(*lead, h // 2, 2, w // 2, 2).mean(axis=(-3, -1))


def read_ngff(url: str) -> tuple[list[np.ndarray], dict]:
    """The levels and metadata of the output group's image node, as ome-zarr's reader gives them."""
    nodes = list(Reader(parse_url(url))())
    assert len(nodes) == 1
    return [np.asarray(level) for level in nodes[0].data], nodes[0].metadata


def validate(url: str) -> dict:
    """NGFF 0.5 checks of the group's "ome" attribute; returns its one multiscale."""
    group = zarr.open_group(url, mode="r")
    Image.from_zarr(group)
    assert len(OMEZarrMultiscale.from_ome_zarr(group).images) == len(group.attrs["ome"]["multiscales"][0]["datasets"])
    (multiscale,) = group.attrs["ome"]["multiscales"]
    Axes(multiscale["axes"], fmt=FormatV05())
    transforms = [d["coordinateTransformations"] for d in multiscale["datasets"]]
    FormatV05().validate_coordinate_transformations(len(multiscale["axes"]), len(transforms), transforms)
    return multiscale


@pytest.mark.parametrize(
    ("shape", "channels", "kind", "axes"),
    [
        ((7, 16, 20), 1, "volume", [("slice", "space"), ("y", "space"), ("x", "space")]),
        ((2, 5, 16, 20), 1, "volumes", [("volume", "index"), ("slice", "space"), ("y", "space"), ("x", "space")]),
        ((5, 3, 16, 20), 3, "images", [("sample", "time"), ("channel", "channel"), ("y", "space"), ("x", "space")]),
    ],
)
def test_each_layout_opens_as_an_ngff_image_with_two_levels(tmp_path, shape, channels, kind, axes):
    url = str(tmp_path / "out.zarr")
    layout = SampleLayout.infer(shape, channels, kind)
    data = np.random.default_rng(0).random(shape, dtype=np.float32)
    out = prepare(url, layout)
    write_all(out, layout, data)  # shard by shard, as workers do

    multiscale = validate(url)
    assert [d["path"] for d in multiscale["datasets"]] == ["restored", "levels/1/restored", "levels/2/restored"]
    levels, metadata = read_ngff(url)
    assert [(a["name"], a["type"]) for a in metadata["axes"]] == axes
    assert [level.shape for level in levels] == [shape, (*shape[:-2], 8, 10), (*shape[:-2], 4, 5)]
    assert np.array_equal(levels[0], data)
    assert np.allclose(levels[1], mean_2x2(data), atol=1e-6)
    assert np.allclose(levels[2], mean_2x2(mean_2x2(data)), atol=1e-6)
    lead = [1.0] * (len(shape) - 2)
    scales = [t[0]["scale"] for t in metadata["coordinateTransformations"]]
    assert scales == [[*lead, 1.0, 1.0], [*lead, 2.0, 2.0], [*lead, 4.0, 4.0]]
    restored = out.group["restored"]
    for k in (1, 2):  # one shard is one object of every level, as of restored
        level = out.group[f"levels/{k}/restored"]
        assert level.chunks[:-2] == restored.chunks[:-2]
        assert level.metadata.dimension_names == restored.metadata.dimension_names
    groups = xr.open_groups(url, engine="zarr", consolidated=False)  # each group is one xarray dataset
    assert groups["/levels/2"]["restored"].shape == (*shape[:-2], 4, 5)


def test_odd_sizes_keep_the_whole_extent_and_small_images_get_no_levels(tmp_path):
    image = np.arange(5 * 7, dtype=np.float32).reshape(5, 7)
    half = ngff.downsample(image)
    assert half.shape == (3, 4)
    assert half[0, 3] == image[0:2, 6].mean() and half[2, 0] == image[4, 0:2].mean() and half[2, 3] == image[4, 6]
    assert np.array_equal(half[:2, :3], mean_2x2(image[:4, :6]))
    assert ngff.level_shapes((1, 17, 9)) == [(1, 9, 5)]  # level 2 would be 5 x 3: below MIN_SIDE
    assert ngff.level_shapes((6, 6)) == []

    url = str(tmp_path / "odd.zarr")
    layout = SampleLayout.infer((3, 17, 9), 1)
    data = np.random.default_rng(1).random(layout.shape, dtype=np.float32)
    write_all(prepare(url, layout), layout, data)
    assert [d["path"] for d in validate(url)["datasets"]] == ["restored", "levels/1/restored"]
    levels, _ = read_ngff(url)
    assert [level.shape for level in levels] == [(3, 17, 9), (3, 9, 5)]
    assert np.allclose(levels[1], ngff.downsample(data))

    small = str(tmp_path / "small.zarr")
    prepare(small, SampleLayout.infer((2, 1, 6, 6), 1))
    assert [d["path"] for d in validate(small)["datasets"]] == ["restored"]
    assert "levels" not in zarr.open_group(small, mode="r")


def test_resume_keeps_metadata_and_levels(tmp_path):
    url = str(tmp_path / "out.zarr")
    layout = SampleLayout.infer((2, 5, 16, 16), 1, "volumes")
    data = np.random.default_rng(2).random(layout.shape, dtype=np.float32)
    out = prepare(url, layout)
    first, *rest = layout.plan(2)
    out.write_shard(layout, first, {"restored": data[layout.index(first)]})
    metadata = dict(out.group.attrs["ome"])
    again = prepare(url, layout)  # the same run, resumed
    assert dict(again.group.attrs["ome"]) == metadata
    assert np.allclose(again.read("levels/1/restored")[0, :2], mean_2x2(data[0, :2]))
    for shard in rest:
        again.write_shard(layout, shard, {"restored": data[layout.index(shard)]})
    validate(url)
    levels, _ = read_ngff(url)
    assert np.allclose(levels[1], mean_2x2(data), atol=1e-6)


def test_levels_are_filled_when_resuming_results_written_without_them(tmp_path):
    url = str(tmp_path / "out.zarr")
    layout = SampleLayout.infer((6, 1, 16, 16), 1)
    data = np.random.default_rng(3).random(layout.shape, dtype=np.float32)
    out = prepare(url, layout)
    out.write_shard(layout, layout.plan(2)[1], {"restored": data[2:4]})
    del out.group["levels"], out.group.attrs["ome"]  # as a priorflow without NGFF levels left it
    again = prepare(url, layout)
    assert np.allclose(again.read("levels/1/restored")[2:4], mean_2x2(data[2:4]), atol=1e-6)
    assert not again.read("levels/2/restored")[:2].any()  # samples not restored yet stay at the fill value
    validate(url)


def test_overwrite_deletes_the_levels_and_nothing_a_user_added(tmp_path):
    url = str(tmp_path / "out.zarr")
    layout = SampleLayout.infer((4, 1, 16, 16), 1)
    out = prepare(url, layout)
    write_all(out, layout, np.ones(layout.shape, dtype=np.float32))
    out.group.create_array("notes", data=np.arange(3))
    out.group.create_array("levels/1/mine", data=np.arange(4))  # even beside a level
    out.group.attrs["project"] = "lab"

    smaller = SampleLayout.infer((4, 1, 8, 8), 1)  # another configuration: one level only
    fresh = prepare(url, smaller, run={"fingerprint": "b" * 64}, overwrite=True)
    group = zarr.open_group(url, mode="r")
    assert np.array_equal(group["notes"][:], np.arange(3)) and group.attrs["project"] == "lab"
    assert np.array_equal(group["levels/1/mine"][:], np.arange(4))
    assert "2" not in group["levels"] and not fresh.read("levels/1/restored").any()
    assert [d["path"] for d in validate(url)["datasets"]] == ["restored", "levels/1/restored"]
    levels, _ = read_ngff(url)
    assert [level.shape for level in levels] == [(4, 1, 8, 8), (4, 1, 4, 4)]

    out = prepare(str(tmp_path / "plain.zarr"), layout)
    out._delete_own_arrays()  # with nothing of the user's in it, the empty levels group goes too
    assert "levels" not in out.group
