"""PNG grids of image batches, for looking at restorations."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from torch import Tensor

if TYPE_CHECKING:
    from PIL.Image import Image

    from priorflow.storage.outputs import OutputGroup


def render_grid(columns: dict[str, Tensor], zoom: int = 4) -> Image:
    """One column per named batch (B, C, H, W) in [0, 1], one row per sample, each tile enlarged `zoom` times."""
    from PIL import Image

    tiles = []
    for batch in columns.values():
        images = batch.detach().float().clamp(0, 1).cpu().numpy()
        if images.shape[1] == 1:
            images = images.repeat(3, axis=1)
        framed = np.pad(images.transpose(0, 2, 3, 1), ((0, 0), (0, 1), (0, 0), (0, 0)), constant_values=1.0)
        tiles.append(np.concatenate(list(framed), axis=0))
    grid = np.concatenate([np.pad(t, ((0, 0), (1, 1), (0, 0)), constant_values=1.0) for t in tiles], axis=1)
    return Image.fromarray((grid * 255).round().astype(np.uint8)).resize(
        (grid.shape[1] * zoom, grid.shape[0] * zoom), Image.NEAREST
    )


def save_grid(columns: dict[str, Tensor], path: Path, zoom: int = 4) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(render_grid(columns, zoom)))
    return path


def png_bytes(image: Image) -> bytes:
    """PNG data that names priorflow as its writer (a text chunk), so priorflow knows its own files later."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Software", "priorflow")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def output_columns(output: OutputGroup, count: int = 8) -> dict[str, Tensor]:
    """Measurement (enlarged to the restored size), restored and ground truth of the first `count` samples (of the
    first volume, for volumes)."""
    import torch
    import torch.nn.functional as F

    kind = output.run["layout"]
    per_sample = kind == "images"
    head = (0, slice(0, count)) if kind == "volumes" else (slice(0, count),)  # read only what is shown

    def samples(name: str, channels_last_three: bool) -> Tensor:
        data = np.asarray(output.group[name][head], dtype=np.float32)
        flat = data.reshape(-1, *data.shape[-3:]) if channels_last_three else data.reshape(-1, 1, *data.shape[-2:])
        return torch.from_numpy(flat[:count])

    restored = samples("restored", per_sample)
    columns: dict[str, Tensor] = {}
    if "measurement" in output.group:
        columns["measurement"] = F.interpolate(samples("measurement", True), size=restored.shape[-2:], mode="nearest")
    columns["restored"] = restored
    if "ground_truth" in output.group:
        columns["ground_truth"] = samples("ground_truth", per_sample)
    return columns


def output_grid(output: OutputGroup, path: Path, count: int = 8) -> Path:
    return save_grid(output_columns(output, count), path)
