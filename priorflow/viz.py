"""PNG grids of image batches, for looking at restorations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor


def save_grid(columns: dict[str, Tensor], path: Path, zoom: int = 4) -> Path:
    """One column per named batch (B, C, H, W) in [0, 1], one row per sample, each tile enlarged `zoom` times."""
    from PIL import Image

    tiles = []
    for batch in columns.values():
        images = batch.detach().float().clamp(0, 1).cpu().numpy()
        if images.shape[1] == 1:
            images = images.repeat(3, axis=1)
        tiles.append(np.concatenate(list(images.transpose(0, 2, 3, 1)), axis=0))
    grid = np.concatenate([np.pad(t, ((0, 0), (1, 1), (0, 0)), constant_values=1.0) for t in tiles], axis=1)
    image = Image.fromarray((grid * 255).round().astype(np.uint8)).resize(
        (grid.shape[1] * zoom, grid.shape[0] * zoom), Image.NEAREST
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
