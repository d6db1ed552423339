"""The writer lease of an output group: one run writes an output at a time, and a killed run's output is taken
over by the next run on its own, with no manual unlock.

A lease is a small JSON object `<stem>.lease/<generation>.json` beside the output group `<stem>.zarr` ({id,
owner, renewed, ttl, released}); the highest generation is the current one. The holder renews it every
`ttl / 6` seconds from a background thread. A lease not renewed for `ttl` seconds (default 30,
`PRIORFLOW_LEASE_TTL`) is stale: its run is dead. A run that finds a fresh lease watches it for one renewal
interval: renewed means a live run (refused); not renewed means a dead run, whose lease it waits out and takes over.

Taking over is creating the next generation's object *exclusively*, so of two runs starting at the same moment
exactly one wins: locally with an atomic create (a hard link, which fails if the name exists), on S3 with a
conditional PUT (`If-None-Match: *`). Where a store ignores the condition (older S3 servers; detected once per
filesystem with a probe object), the winner is decided by reading the object back after a short settling delay:
two runs starting within that delay of each other can then both believe they won. Clocks of the machines running
priorflow must agree to well within `ttl` (NTP).
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from fsspec import AbstractFileSystem

from priorflow.errors import PriorflowError
from priorflow.storage.location import side_file
from priorflow.storage.urls import describe_storage_error, filesystem, is_local, normalize_url

DEFAULT_TTL = 30.0
SETTLE_SECONDS = 1.0  # read-back delay where the store has no conditional create


class LeaseConflict(PriorflowError):
    """Another live run is writing the output."""


def lease_ttl() -> float:
    value = os.environ.get("PRIORFLOW_LEASE_TTL", str(DEFAULT_TTL))
    try:
        ttl = float(value)
    except ValueError:
        ttl = -1.0
    if ttl <= 0:
        raise PriorflowError(f"PRIORFLOW_LEASE_TTL must be a positive number of seconds, got {value!r}")
    return ttl


def _name(generation: int) -> str:
    return f"{generation:012d}.json"


class _Folder:
    """The lease folder of one output (beside it) on its filesystem, with an exclusive create."""

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        self.fs, self.path = filesystem(side_file(self.url, "lease"))

    def generations(self) -> list[int]:
        try:
            names = [posixpath.basename(p) for p in self.fs.ls(self.path, detail=False, refresh=True)]
        except FileNotFoundError:
            return []
        except TypeError:  # filesystems without `refresh`
            names = [posixpath.basename(p) for p in self.fs.ls(self.path, detail=False)]
        return sorted(int(n[: -len(".json")]) for n in names if n.endswith(".json") and n[: -len(".json")].isdigit())

    def read(self, generation: int) -> dict | None:
        try:
            return json.loads(self.fs.cat_file(posixpath.join(self.path, _name(generation))))
        except FileNotFoundError:
            return None
        except ValueError:
            return {}  # torn or foreign: treated as a dead lease

    def write(self, generation: int, record: dict) -> None:
        """Replace the generation's record whole (a reader never sees it half-written: S3 PUTs are atomic, and
        locally the record is renamed into place)."""
        path = posixpath.join(self.path, _name(generation))
        data = json.dumps(record).encode()
        if is_local(self.url):
            partial = f"{path}.{uuid.uuid4().hex}.partial"
            with open(partial, "wb") as f:
                f.write(data)
            os.replace(partial, path)
        else:
            self.fs.pipe_file(path, data)

    def create(self, generation: int, record: dict) -> bool:
        """Create the generation's object if nobody did; True when this call created it."""
        path = posixpath.join(self.path, _name(generation))
        data = json.dumps(record).encode()
        if is_local(self.url):  # written whole aside, then linked into place: link() fails if the name exists
            os.makedirs(self.path, exist_ok=True)
            partial = f"{path}.{uuid.uuid4().hex}.partial"
            with open(partial, "wb") as f:
                f.write(data)
            try:
                os.link(partial, path)
            except FileExistsError:
                return False
            finally:
                os.unlink(partial)
            return True
        if _conditional_create(self.fs, self.path):
            try:
                self.fs.pipe_file(path, data, mode="create")
            except OSError as exc:
                if not _precondition_failed(exc):
                    raise
                # a retry of our own PUT whose answer was lost also gets 412: the record says whose it is
                return (self.read(generation) or {}).get("id") == record["id"]
            return True
        if self.fs.exists(path):
            return False
        self.fs.pipe_file(path, data)
        time.sleep(SETTLE_SECONDS)
        return (self.read(generation) or {}).get("id") == record["id"]

    def prune(self, below: int) -> None:
        for generation in self.generations():
            if generation < below:
                try:
                    self.fs.rm_file(posixpath.join(self.path, _name(generation)))
                except FileNotFoundError:
                    pass


_CONDITIONAL: dict[int, bool] = {}


def _precondition_failed(exc: BaseException) -> bool:
    """A conditional PUT refused because the object exists (HTTP 412). s3fs makes that a FileExistsError only when
    the server names the condition, as AWS does; Ceph radosgw does not, and s3fs then raises a plain OSError."""
    while exc is not None:
        if isinstance(exc, FileExistsError):
            return True
        response = getattr(exc, "response", None) or {}
        if response.get("Error", {}).get("Code") == "PreconditionFailed" or \
                response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 412:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _conditional_create(fs: AbstractFileSystem, folder: str) -> bool:
    """Whether the store honours `If-None-Match: *` on a PUT (checked once per filesystem with a probe object)."""
    key = id(fs)
    if key not in _CONDITIONAL:
        probe = posixpath.join(folder, f"probe-{uuid.uuid4().hex}")
        try:
            for _ in range(2):  # the second create must fail; a 412 already on the first (a client retry of it
                fs.pipe_file(probe, b"probe", mode="create")  # whose answer was lost) proves the same
            _CONDITIONAL[key] = False
        except TypeError:  # this filesystem has no mode="create"
            _CONDITIONAL[key] = False
        except OSError as exc:
            if not _precondition_failed(exc):
                raise
            _CONDITIONAL[key] = True
        finally:
            try:
                fs.rm_file(probe)
            except (FileNotFoundError, OSError):
                pass
    return _CONDITIONAL[key]


@dataclass
class Lease:
    """A held lease; `lost` is set when another run took the output over (this run was too slow to renew)."""

    url: str
    generation: int
    record: dict
    ttl: float
    lost: threading.Event = field(default_factory=threading.Event)

    def renew(self) -> None:
        folder = _Folder(self.url)
        if folder.generations()[-1:] != [self.generation]:
            self.lost.set()
            return
        self.record["renewed"] = time.time()
        folder.write(self.generation, self.record)

    def release(self) -> None:
        if self.lost.is_set():
            return
        folder = _Folder(self.url)
        if (folder.read(self.generation) or {}).get("id") == self.record["id"]:
            folder.write(self.generation, {**self.record, "released": True})


def _fresh(record: dict | None, ttl: float, now: float) -> bool:
    if not record or record.get("released"):
        return False
    return now - float(record.get("renewed", 0)) < float(record.get("ttl", ttl))


def acquire(url: str, owner: str | None = None, ttl: float | None = None) -> Lease:
    """Take the output's lease: at once if it is free or stale, after the stale wait if its holder stopped
    renewing; refused (LeaseConflict) while another run renews it."""
    ttl = ttl if ttl is not None else lease_ttl()
    owner = owner or f"{socket.gethostname()}:{os.getpid()}"
    folder = _Folder(url)
    try:
        while True:
            generations = folder.generations()
            current = generations[-1] if generations else 0
            record = folder.read(current) if current else None
            if _fresh(record, ttl, time.time()):
                _wait_out(folder, current, record, ttl)  # raises while its holder is alive
                continue
            mine = {"id": uuid.uuid4().hex, "owner": owner, "acquired": time.time(), "renewed": time.time(),
                    "ttl": ttl, "released": False}
            if folder.create(current + 1, mine):
                lease = Lease(folder.url, current + 1, mine, ttl)
                lease.renew()  # the create may have been slow (a first connection, the conditional-PUT probe)
                folder.prune(below=current + 1)
                return lease
            # another run created that generation first: look again (it is fresh, so it will be refused)
    except PriorflowError:
        raise
    except Exception as exc:  # noqa: BLE001 - fsspec backends raise many types
        raise describe_storage_error(folder.url, exc) from exc


def _wait_out(folder: _Folder, generation: int, record: dict, ttl: float) -> None:
    """Watch a fresh lease: raise if its holder renews it; return once it is stale, released or superseded."""
    interval = float(record.get("ttl", ttl)) / 6
    first_seen = record.get("renewed")
    while True:
        time.sleep(min(interval / 2, 1.0))
        if folder.generations()[-1:] != [generation]:
            return
        now_record = folder.read(generation)
        if not _fresh(now_record, ttl, time.time()):
            return
        if now_record.get("renewed") != first_seen:
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(now_record.get("acquired", 0))))
            raise LeaseConflict(
                f"{folder.url} is being written by another run ({now_record.get('owner')}, since {since} UTC); "
                "wait for it to finish"
            )


@contextlib.contextmanager
def held(url: str, owner: str | None = None) -> Iterator[Lease]:
    """Hold the output's lease for the block, renewing it in a background thread; released at the end."""
    lease = acquire(url, owner)
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(lease.ttl / 6):
            try:
                lease.renew()
            except Exception:  # noqa: BLE001 - a missed renewal is retried; `ttl` allows several
                continue

    thread = threading.Thread(target=heartbeat, name="priorflow-lease", daemon=True)
    thread.start()
    try:
        yield lease
    except BaseException:
        stop.set()
        thread.join()
        with contextlib.suppress(Exception):  # in a storage outage, the run's own error is the one to report;
            lease.release()  # an unreleased lease goes stale after `ttl` anyway
        raise
    stop.set()
    thread.join()
    try:
        lease.release()
    except Exception as exc:  # noqa: BLE001 - fsspec backends raise many types
        raise describe_storage_error(lease.url, exc) from exc


def break_lease(url: str) -> bool:
    """Mark the current lease released (`priorflow unlock`): for a run known to be dead, to skip the stale wait."""
    folder = _Folder(url)
    generations = folder.generations()
    record = folder.read(generations[-1]) if generations else None
    if not record or record.get("released"):
        return False
    folder.write(generations[-1], {**record, "released": True})
    return True
