"""fsspec URLs to Zarr stores. Credentials, endpoints and regions come from the standard AWS environment and
config files (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, ~/.aws/config, ...), never from code or logs."""

from __future__ import annotations

from pathlib import Path

from zarr.abc.store import Store
from zarr.storage import FsspecStore, LocalStore

from priorflow.errors import PriorflowError


class StorageError(PriorflowError):
    """A URL that cannot be reached, read or written."""


def normalize_url(url: str) -> str:
    """Plain paths and file:// URLs become absolute local paths; other URLs are kept as they are."""
    if url.startswith("file://"):
        url = url[len("file://") :]
    if "://" not in url:
        return str(Path(url).expanduser().resolve())
    return url.rstrip("/")


def is_local(url: str) -> bool:
    return "://" not in normalize_url(url)


def open_store(url: str, read_only: bool = False) -> Store:
    url = normalize_url(url)
    if is_local(url):
        return LocalStore(url, read_only=read_only)
    try:
        return FsspecStore.from_url(url, read_only=read_only)
    except (ImportError, ValueError) as exc:
        raise StorageError(f"cannot open {url}: {exc}") from exc


def describe_storage_error(url: str, exc: BaseException) -> StorageError:
    """One clear message for the ways object storage fails: no credentials, no endpoint, no bucket."""
    name = type(exc).__name__
    text = str(exc)
    if name == "NoCredentialsError" or "Unable to locate credentials" in text:
        hint = "no S3 credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or an AWS profile"
    elif "Could not connect" in text or "Connect timeout" in text or name in ("EndpointConnectionError", "ClientConnectorError"):
        hint = "the S3 endpoint is unreachable: check AWS_ENDPOINT_URL and that the server is up"
    elif name in ("PermissionError",) or "AccessDenied" in text or "InvalidAccessKeyId" in text or "SignatureDoesNotMatch" in text:
        hint = "access denied: the credentials are wrong or lack permission"
    else:
        hint = f"{name}: {text}"
    return StorageError(f"{url}: {hint}")
