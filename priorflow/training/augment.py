"""Random affine augmentation (shift, rotation, scale) so that a prior learns digits wherever they sit, not only
where the training images happen to put them."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from priorflow.errors import PriorflowError


class Augmentation(BaseModel):
    """Ranges of the per-image transforms: shift up to ±`shift` pixels on each axis, rotation up to ±`rotate`
    degrees, scale in [1 - `scale`, 1 + `scale`]. All zero (the default) means no augmentation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shift: float = Field(0.0, ge=0, description="pixels")
    rotate: float = Field(0.0, ge=0, le=180, description="degrees")
    scale: float = Field(0.0, ge=0, lt=1, description="relative")

    @property
    def active(self) -> bool:
        return bool(self.shift or self.rotate or self.scale)

    @classmethod
    def parse(cls, spec: str) -> Augmentation:
        """From the CLI form 'shift=1.5,rotate=12,scale=0.1' (any subset; '' or 'none' for none)."""
        if spec.strip().lower() in ("", "none"):
            return cls()
        values: dict[str, float] = {}
        for item in spec.split(","):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or key not in cls.model_fields:
                raise PriorflowError(
                    f"augmentation {item.strip()!r}: expected KEY=VALUE with KEY one of shift, rotate, scale"
                )
            try:
                values[key] = float(value)
            except ValueError:
                raise PriorflowError(f"augmentation {key}={value.strip()!r}: not a number") from None
        try:
            return cls(**values)
        except ValueError as exc:
            raise PriorflowError(f"augmentation {spec!r}: {exc.errors()[0]['msg']}") from None

    def spec(self) -> str:
        """The CLI form, for reproduce commands."""
        return f"shift={self.shift:g},rotate={self.rotate:g},scale={self.scale:g}"

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """A new random transform of each image of a (N, C, H, W) batch in [0, 1], drawn from `generator` (so a
        resumed run draws the same ones)."""
        if not self.active:
            return images
        u = torch.rand(images.shape[0], 4, generator=generator) * 2 - 1  # uniform in [-1, 1]
        shift, degrees, scale = u[:, :2] * self.shift, u[:, 2] * self.rotate, 1 + u[:, 3] * self.scale
        return affine(images, shift=shift, degrees=degrees, scale=scale)


def affine(images: Tensor, *, shift: Tensor, degrees: Tensor, scale: Tensor) -> Tensor:
    """Move each image's content: scale it by `scale` and rotate it by `degrees` about the centre, then shift it by
    `shift` = (dx, dy) pixels (right, down). Bilinear, with zero (black) padding outside the image."""
    n, _, height, width = images.shape
    angle = degrees.to(images.dtype) * (math.pi / 180.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # affine_grid maps output to input coordinates in [-1, 1]: the inverse of (scale * rotation, then shift)
    tx, ty = shift[:, 0] * (2.0 / width), shift[:, 1] * (2.0 / height)
    theta = torch.stack(
        [torch.stack([cos, sin, -(cos * tx + sin * ty)], 1), torch.stack([-sin, cos, -(-sin * tx + cos * ty)], 1)], 1
    ).to(images.dtype)
    grid = F.affine_grid(theta, [n, images.shape[1], height, width], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
