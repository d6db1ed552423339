"""Turn a folder of images (PNG/JPEG/TIFF) or a TIFF stack into a priorflow input array."""

from __future__ import annotations

from pathlib import Path

import fsspec
import numpy as np
import zarr

from priorflow.errors import PriorflowError
from priorflow.storage.inputs import LAYOUT_ATTRIBUTE
from priorflow.storage.location import claim_array_location
from priorflow.storage.urls import describe_storage_error, normalize_url, open_store

WRITER = "priorflow ingest"  # the `written_by` attribute of ingested arrays: the only arrays --overwrite replaces
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}


def _read_image(path: Path) -> np.ndarray:
    """(C, H, W) uint8/uint16; grayscale stays one channel, colour becomes RGB."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.mode in ("I;16", "I;16B", "I;16L"):
                return np.asarray(image, dtype=np.uint16)[None]
            if image.mode not in ("L", "RGB"):
                image = image.convert("RGB" if image.mode in ("RGBA", "P", "CMYK", "YCbCr") else "L")
            array = np.asarray(image)
    except OSError as exc:
        raise PriorflowError(f"cannot read image {path}: {exc}") from exc
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _remove(url: str) -> None:
    fs, path = fsspec.core.url_to_fs(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def ingest(source: Path, url: str, chunk: int = 16, overwrite: bool = False) -> zarr.Array:
    """Write `source` to a new Zarr v3 array at `url`: images -> (N, C, H, W), a TIFF stack -> volume (D, H, W).

    `overwrite` replaces only an array that ingest wrote. On any error the partial array is removed, so nothing
    half-written is left for a run to trust.
    """
    url = normalize_url(url)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise PriorflowError(f"{source} holds no {'/'.join(sorted(IMAGE_SUFFIXES))} images")
        first = _read_image(files[0])
        shape, kind, count = (len(files), *first.shape), "images", len(files)
    elif source.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        try:
            stack = tifffile.imread(source)
        except (OSError, ValueError) as exc:
            raise PriorflowError(f"cannot read TIFF stack {source}: {exc}") from exc
        if stack.ndim != 3:
            raise PriorflowError(f"{source}: a TIFF stack must be (D, H, W), got shape {stack.shape}")
        first, shape, kind, count = stack, stack.shape, "volume", stack.shape[0]
    elif not source.exists():
        raise PriorflowError(f"{source} does not exist")
    else:
        raise PriorflowError(f"{source}: give a folder of images or a .tif/.tiff stack")
    if first.dtype not in (np.uint8, np.uint16):
        raise PriorflowError(f"{source}: images must be 8- or 16-bit, got {first.dtype}")
    if overwrite:
        claim_array_location(url, WRITER)
    try:
        array = zarr.create_array(
            open_store(url), shape=shape, dtype=first.dtype, chunks=(min(chunk, count), *shape[1:]),
            overwrite=overwrite, attributes={LAYOUT_ATTRIBUTE: kind, "source": str(source), "written_by": WRITER},
        )
    except Exception as exc:  # noqa: BLE001
        if isinstance(exc, PriorflowError):
            raise
        if "exists" in str(exc).lower() or type(exc).__name__ == "ContainsArrayError":
            raise PriorflowError(f"{url} already exists; choose another URL or overwrite") from exc
        raise describe_storage_error(url, exc) from exc
    try:
        if kind == "volume":
            array[...] = first
        else:
            for start in range(0, count, chunk):
                block = [_read_image(p) for p in files[start : start + chunk]]
                for path, image in zip(files[start : start + chunk], block):
                    if image.shape != first.shape or image.dtype != first.dtype:
                        raise PriorflowError(f"{path}: shape {image.shape} {image.dtype}, expected {first.shape} {first.dtype} like {files[0].name}")
                array[start : start + len(block)] = np.stack(block)
    except BaseException:
        _remove(url)
        raise
    return array
