"""Where a run may write: the output location is checked before anything is created, so no run ever deletes,
overwrites or writes into data that priorflow did not write itself.

An output location is usable when it does not exist, is an empty folder or prefix, or holds a priorflow output
group (a Zarr group whose attributes carry a run record). Anything else there is the user's: a Zarr array, a
group of another program, files. It is refused, with or without `overwrite`, which only ever replaces a priorflow
group's own arrays. An output inside the input, or above it (e.g. `data.zarr` for the input `data.zarr/raw`),
is refused too. What is not Zarr (the summary, the grid, the writer lease) goes beside the group, never inside it:
`out.zarr` has `out.summary.json`, `out.grid.png` and `out.lease/`.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from typing import Literal

from priorflow.errors import PriorflowError
from priorflow.storage.urls import describe_storage_error, filesystem, is_local, normalize_url

RUN_ATTRIBUTE = "priorflow_run"
SIDE_FILES = ("summary.json", "grid.png")  # and the folder `lease` of the writer lease (priorflow.storage.lease)
SIGNATURE = b"priorflow"  # in every side file priorflow writes (a JSON field, a PNG text chunk): what marks it ours


class OutputLocationError(PriorflowError):
    """The output location holds data that priorflow did not write, or overlaps the input."""


State = Literal["new", "priorflow"]


@dataclass(frozen=True)
class OutputLocation:
    url: str
    state: State  # "new": nothing there yet; "priorflow": a priorflow output group


def side_file(url: str, name: str) -> str:
    """Where a non-Zarr file of the output group lives: beside it, `<stem>.<name>` (`out.zarr` -> `out.summary.json`)."""
    url = normalize_url(url)
    parent, base = posixpath.split(url)
    stem = base[: -len(".zarr")] if base.endswith(".zarr") else base
    return f"{parent}/{stem}.{name}"


def _parts(url: str) -> tuple[str, tuple[str, ...]]:
    url = normalize_url(url)
    protocol, _, path = url.rpartition("://")
    return protocol, tuple(p for p in path.split("/") if p)


def overlap(output: str, input: str) -> str | None:
    """How the output overlaps the input ("is", "inside", "above"), or None when they are apart."""
    (out_protocol, out_parts), (in_protocol, in_parts) = _parts(output), _parts(input)
    if out_protocol != in_protocol:
        return None
    if out_parts == in_parts:
        return "is"
    if out_parts[: len(in_parts)] == in_parts:
        return "inside"
    if in_parts[: len(out_parts)] == out_parts:
        return "above"
    return None


def _read_json(fs, path: str) -> dict | None:  # noqa: ANN001 - any fsspec filesystem
    try:
        with fs.open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError):
        return {}


def inspect_output(output: str, input: str | None = None) -> OutputLocation:
    """Check an output location without writing anything; refuse user data and overlaps with the input."""
    url = normalize_url(output)
    if input is not None and (how := overlap(url, input)):
        where = {"is": "is the input itself", "inside": "is inside the input", "above": "contains the input"}[how]
        raise OutputLocationError(f"the output {url} {where} ({normalize_url(input)}); choose an output apart from it")
    if not is_local(url) and len(_parts(url)[1]) < 2:
        raise OutputLocationError(f"the output {url} is a bucket; give a path inside it, e.g. {url}/restored.zarr")
    fs, path = filesystem(url)
    try:
        if fs.isfile(path):
            raise OutputLocationError(f"the output {url} is a file, not a Zarr group; choose another output")
        entries = {posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False)} if fs.isdir(path) else set()
        metadata = _read_json(fs, f"{path}/zarr.json") if "zarr.json" in entries else None
    except PriorflowError:
        raise
    except FileNotFoundError:
        entries, metadata = set(), None
    except Exception as exc:  # noqa: BLE001 - fsspec backends raise many types; say which URL and why
        raise describe_storage_error(url, exc) from exc
    for name in SIDE_FILES:  # the summary and grid beside the group must not replace someone's files
        check_side_file(url, name)
    if metadata is not None:
        if metadata.get("node_type") == "group" and RUN_ATTRIBUTE in metadata.get("attributes", {}):
            return OutputLocation(url, "priorflow")
        what = "a Zarr array" if metadata.get("node_type") == "array" else "a Zarr group that priorflow did not write"
        raise OutputLocationError(f"the output {url} holds {what}; priorflow never writes into it (not even with "
                                  "--overwrite): choose a new output")
    foreign = sorted(entries)
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise OutputLocationError(f"the output {url} is not empty ({shown}) and is not a priorflow output group; "
                                  "choose a new output")
    return OutputLocation(url, "new")


def claim_array_location(url: str, written_by: str) -> None:
    """Make sure an array may be (re)written at `url`: nothing is there, or an array whose `written_by` attribute
    says that this part of priorflow wrote it. Anything else is refused, whatever the caller's overwrite flag."""
    url = normalize_url(url)
    fs, path = filesystem(url)
    try:
        metadata = _read_json(fs, f"{path}/zarr.json")
        occupied = metadata is not None or fs.isfile(path) or (fs.isdir(path) and bool(fs.ls(path, detail=False)))
    except Exception as exc:  # noqa: BLE001
        raise describe_storage_error(url, exc) from exc
    if not occupied:
        return
    if metadata and metadata.get("node_type") == "array" and metadata.get("attributes", {}).get("written_by") == written_by:
        return
    raise OutputLocationError(f"{url} holds data that {written_by} did not write; priorflow never replaces it: "
                              "choose another location")


def check_side_file(output: str, name: str) -> None:
    """Refuse when the side file's place holds a file that priorflow did not write."""
    target = side_file(output, name)
    fs, path = filesystem(target)
    try:
        with fs.open(path, "rb") as f:
            head = f.read(4096)
    except FileNotFoundError:
        return
    except IsADirectoryError:
        head = b""
    if SIGNATURE not in head:
        raise OutputLocationError(f"{target} exists and was not written by priorflow, which would write the output's "
                                  f"{name} there; move it, or choose another output")


def write_side_file(output: str, name: str, data: bytes) -> str:
    """Write the output's side file `name` (which must carry SIGNATURE), never replacing a file that is not ours."""
    if SIGNATURE not in data[:4096]:
        raise ValueError(f"side file {name} does not carry priorflow's signature")
    check_side_file(output, name)
    target = side_file(output, name)
    fs, path = filesystem(target)
    with fs.open(path, "wb") as f:
        f.write(data)
    return target
