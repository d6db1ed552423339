"""fsspec URLs to Zarr stores. Credentials, endpoints and regions come from the standard AWS environment and
config files (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, ~/.aws/config, ...), never from code or logs.

Retries on S3. Each S3 request is retried in three nested layers, all bounded (tests/test_storage_faults.py
checks them through a fault-injecting proxy; benchmarks/RESULTS.md records the figures):

    aiohttp    resends an idempotent request (GET, HEAD, PUT, DELETE) once when the connection is reset or closed
               before an answer (its own rule; not configurable)
    botocore   S3_ATTEMPTS attempts in "standard" mode: refused, reset or cut connections, connect/read timeouts,
               HTTP 500/502/503/504 and throttling codes (SlowDown), with jittered exponential backoff up to 1, 2 s.
               Standard mode also keeps a retry quota per client (100 retries' worth, refilled by successes), so a
               long outage stops costing retries early. The library default is "legacy" mode with 5 attempts.
    s3fs       S3FS_TRIES tries around each call, for what botocore does not see: a body cut off while s3fs reads
               it (aiohttp ClientPayloadError), and again SlowDown and closed connections (s3fs's default is 5)

so a request that keeps failing is tried at most 2 x 3 x 3 times and gives up within about 10 s of backoff plus
its timeouts. What is still failing then becomes a StorageError that says so. Above this, a shard whose storage
failed is retried whole by its Prefect task (priorflow.tasks.solve).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import fsspec
from botocore.exceptions import BotoCoreError, ClientError
from fsspec import AbstractFileSystem
from zarr.abc.store import Store
from zarr.storage import FsspecStore, LocalStore

from priorflow.errors import PriorflowError

S3_ATTEMPTS = 3  # botocore attempts per request, the first included
S3FS_TRIES = 3  # s3fs tries per call, each of up to S3_ATTEMPTS attempts
CONNECT_TIMEOUT_S = 10  # to open a connection to the endpoint
READ_TIMEOUT_S = 60  # between two reads of an answer (not for the whole transfer)
S3_RETRY_BUDGET = f"up to {S3FS_TRIES} tries of {S3_ATTEMPTS} attempts per request"

# What a store raises when the storage itself failed (s3fs turns S3 error answers into OSError subclasses)
STORAGE_FAILURES = (OSError, TimeoutError, BotoCoreError, ClientError, aiohttp.ClientError)
T = TypeVar("T")


class StorageError(PriorflowError):
    """A URL that cannot be reached, read or written."""


def normalize_url(url: str) -> str:
    """One spelling per location: plain paths and file:// URLs become absolute local paths (resolved); s3a:// is
    s3://, and the path of any other URL loses doubled and trailing slashes (`s3://b//x/` is `s3://b/x`)."""
    if url.startswith("file://"):
        url = url[len("file://") :]
    if "://" not in url:
        return str(Path(url).expanduser().resolve())
    protocol, _, path = url.partition("://")
    protocol = "s3" if protocol == "s3a" else protocol
    return f"{protocol}://{'/'.join(part for part in path.split('/') if part)}"


def is_local(url: str) -> bool:
    return "://" not in normalize_url(url)


def is_s3(url: str) -> bool:
    return url.startswith(("s3://", "s3a://"))


def storage_options(url: str) -> dict[str, Any]:
    """fsspec options for `url`'s protocol (none for local paths): one place, so that every access behaves alike.
    On S3: the retry budget and timeouts of the module docstring."""
    if not is_s3(url):
        return {}
    return {
        "config_kwargs": {
            "retries": {"max_attempts": S3_ATTEMPTS, "mode": "standard"},
            "connect_timeout": CONNECT_TIMEOUT_S,
            "read_timeout": READ_TIMEOUT_S,
        },
    }


def _with_budget(url: str, fs: AbstractFileSystem) -> AbstractFileSystem:
    """s3fs takes its number of tries from an attribute only (a `retries` option would reach botocore's session)."""
    if is_s3(url):
        fs.retries = S3FS_TRIES
    return fs


def filesystem(url: str) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem of `url` (with priorflow's storage options) and the path inside it."""
    url = normalize_url(url)
    try:
        fs, path = fsspec.core.url_to_fs(url, **storage_options(url))
    except (ImportError, ValueError) as exc:
        raise StorageError(f"cannot open {url}: {exc}") from exc
    return _with_budget(url, fs), path


def _checked(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    @functools.wraps(method)
    async def checked(self: CheckedFsspecStore, *args: Any, **kwargs: Any) -> T:
        try:
            return await method(self, *args, **kwargs)
        except self.allowed_exceptions:
            raise
        except STORAGE_FAILURES as exc:
            key = f"/{args[0]}" if args and isinstance(args[0], str) else ""
            raise describe_storage_error(self.fs.unstrip_protocol(self.path) + key, exc) from exc

    return checked


class CheckedFsspecStore(FsspecStore):
    """An FsspecStore whose storage failures are StorageErrors, and never a missing key.

    Zarr reads a key that FsspecStore reports missing (it returns None for FileNotFoundError and the other
    `allowed_exceptions`) as a chunk never written, i.e. as the fill value: a failed read taken for a missing
    chunk would silently corrupt what a run reads or resumes from. s3fs raises FileNotFoundError only for an
    answer that says so (404, NoSuchKey); refused or cut connections, truncated bodies, 5xx and timeouts surface,
    once retried, as other exceptions, which this class turns into a StorageError naming the URL and the retry
    budget (tests/test_storage_faults.py reads through a proxy that fails every request and gets that error,
    never fill values). Missing keys stay missing; programming errors (ValueError, TypeError) pass unchanged.
    """

    get = _checked(FsspecStore.get)
    get_partial_values = _checked(FsspecStore.get_partial_values)
    set = _checked(FsspecStore.set)
    exists = _checked(FsspecStore.exists)
    delete = _checked(FsspecStore.delete)
    delete_dir = _checked(FsspecStore.delete_dir)


def open_store(url: str, read_only: bool = False) -> Store:
    url = normalize_url(url)
    if is_local(url):
        return LocalStore(url, read_only=read_only)
    try:
        store = CheckedFsspecStore.from_url(url, read_only=read_only, storage_options=storage_options(url))
    except (ImportError, ValueError) as exc:
        raise StorageError(f"cannot open {url}: {exc}") from exc
    _with_budget(url, store.fs)
    return store


def describe_storage_error(url: str, exc: BaseException) -> StorageError:
    """One clear message for the ways object storage fails: no credentials, no endpoint, no bucket, and a server
    that kept failing through the retry budget. A StorageError is returned as it is."""
    if isinstance(exc, StorageError):
        return exc
    name = type(exc).__name__
    text = str(exc)
    retried = f" (after {S3_RETRY_BUDGET})" if is_s3(url) else ""
    if name == "NoCredentialsError" or "Unable to locate credentials" in text:
        hint = "no S3 credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or an AWS profile"
    elif "Could not connect" in text or "Connect timeout" in text or name in ("EndpointConnectionError", "ClientConnectorError"):
        hint = f"the S3 endpoint is unreachable{retried}: check AWS_ENDPOINT_URL and that the server is up"
    elif name in ("PermissionError",) or "AccessDenied" in text or "InvalidAccessKeyId" in text or "SignatureDoesNotMatch" in text:
        hint = "access denied: the credentials are wrong or lack permission"
    elif retried:
        hint = f"the storage failed after retries ({S3_RETRY_BUDGET}); rerun once it is back: {name}: {text}"
    else:
        hint = f"{name}: {text}"
    return StorageError(f"{url}: {hint}")
