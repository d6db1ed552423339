"""PNG grids of restorations, one writer for every grid priorflow makes: a column per image kind in one order
(measurement, each method, ground truth), each labelled, and each image's PSNR under it where the truth is known."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from PIL.Image import Image

    from priorflow.storage.outputs import OutputGroup

MEASUREMENT, TRUTH = "measurement", "ground truth"
PAD = 2  # pixels around every image, and between a column's label and its images


def ordered(columns: dict[str, Tensor]) -> dict[str, Tensor]:
    """The measurement first, the ground truth last, the methods between them in the order given."""
    methods = {k: v for k, v in columns.items() if k not in (MEASUREMENT, TRUTH)}
    return ({MEASUREMENT: columns[MEASUREMENT]} if MEASUREMENT in columns else {}) | methods | (
        {TRUTH: columns[TRUTH]} if TRUTH in columns else {})


def render_grid(columns: dict[str, Tensor], zoom: int = 4) -> Image:
    """One labelled column per batch (B, C, H, W) in [0, 1] (a measurement of another size is enlarged to the
    others', one of other channels shown as its magnitude), one row per sample, each image enlarged `zoom` times;
    with a ground truth, each method's image shows its PSNR against it."""
    from PIL import Image, ImageDraw, ImageFont

    from priorflow.solvers.metrics import psnr

    columns = ordered(columns)
    size = next(v.shape[-2:] for k, v in columns.items() if k != MEASUREMENT) if len(columns) > 1 else None
    columns = {k: _fit(v, size) for k, v in columns.items()}
    truth = columns.get(TRUTH)
    font = ImageFont.load_default()
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_h = max(draw.textbbox((0, 0), "Ag0.9 dB", font=font)[3], 1)
    rows, (h, w) = next(iter(columns.values())).shape[0], next(iter(columns.values())).shape[-2:]
    cell_w = [max(w * zoom, draw.textbbox((0, 0), k, font=font)[2]) + 2 * PAD for k in columns]
    cell_h = h * zoom + 2 * PAD + (text_h + PAD if truth is not None else 0)
    grid = Image.new("RGB", (sum(cell_w), text_h + PAD + rows * cell_h), "white")
    pen = ImageDraw.Draw(grid)
    left = 0
    for (label, batch), width in zip(columns.items(), cell_w):
        pen.text((left + PAD, 0), label, fill="black", font=font)
        scores = psnr(batch, truth) if truth is not None and label not in (MEASUREMENT, TRUTH) else None
        for row, image in enumerate(_uint8(batch)):
            top = text_h + PAD + row * cell_h
            tile = Image.fromarray(image).resize((w * zoom, h * zoom), Image.NEAREST)
            grid.paste(tile, (left + (width - w * zoom) // 2, top + PAD))
            if scores is not None:
                pen.text((left + PAD, top + PAD + h * zoom + PAD // 2), f"{float(scores[row]):.1f} dB", fill="black",
                         font=font)
        left += width
    return grid


def _fit(batch: Tensor, size: torch.Size | None) -> Tensor:
    """A batch as grey or RGB images of `size`: enlarged (nearest) if it is smaller, the magnitude over its channels
    (scaled to its maximum) if it has neither 1 nor 3, such as MRI's real and imaginary k-space."""
    import torch.nn.functional as F

    batch = batch.detach().float().cpu()
    if batch.shape[1] not in (1, 3):
        batch = batch.norm(dim=1, keepdim=True)
        batch = batch / batch.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
    return batch if size is None or batch.shape[-2:] == size else F.interpolate(batch, size=tuple(size), mode="nearest")


def _uint8(batch: Tensor) -> np.ndarray:
    images = batch.clamp(0, 1).numpy()
    images = images.repeat(3, axis=1) if images.shape[1] == 1 else images
    return (images.transpose(0, 2, 3, 1) * 255).round().astype(np.uint8)


def png_bytes(image: Image) -> bytes:
    """PNG data that names priorflow as its writer (a text chunk), so priorflow knows its own files later."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Software", "priorflow")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def output_columns(output: OutputGroup, count: int) -> dict[str, Tensor]:
    """Measurement, restored and ground truth of the first `count` samples (of the first volume, for volumes)."""
    kind = output.run["layout"]
    per_sample = kind == "images"
    head = (0, slice(0, count)) if kind == "volumes" else (slice(0, count),)  # read only what is shown

    def samples(name: str, channels_last_three: bool) -> Tensor:
        data = np.asarray(output.group[name][head], dtype=np.float32)
        flat = data.reshape(-1, *data.shape[-3:]) if channels_last_three else data.reshape(-1, 1, *data.shape[-2:])
        return torch.from_numpy(flat[:count])

    columns: dict[str, Tensor] = {}
    if "measurement" in output.group:
        columns[MEASUREMENT] = samples("measurement", True)
    columns["restored"] = samples("restored", per_sample)
    if "ground_truth" in output.group:
        columns[TRUTH] = samples("ground_truth", per_sample)
    return columns


def output_grid(output: OutputGroup, count: int) -> Image:
    """The grid of an output group's first `count` samples."""
    return render_grid(output_columns(output, count))
