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
    degrees, scale in [1 - `scale`, 1 + `scale`], each image moved with probability `p` (else drawn plain: a prior
    that sees only moved digits restores plain ones worse, see benchmarks/RESULTS.md). All ranges zero (the default)
    means no augmentation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shift: float = Field(0.0, ge=0, description="pixels")
    rotate: float = Field(0.0, ge=0, le=180, description="degrees")
    scale: float = Field(0.0, ge=0, lt=1, description="relative")
    p: float = Field(1.0, gt=0, le=1, description="probability that an image is moved")

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
                    f"augmentation {item.strip()!r}: expected KEY=VALUE with KEY one of shift, rotate, scale, p"
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
        ranges = f"shift={self.shift:g},rotate={self.rotate:g},scale={self.scale:g}"
        return ranges + (f",p={self.p:g}" if self.p < 1 else "")

    def __call__(self, images: Tensor, generator: torch.Generator, size: int | None = None) -> Tensor:
        """A new random transform of each image of a (N, C, H, W) batch in [0, 1], drawn from `generator` (so a
        resumed run draws the same ones), rendered at `size` (default: the images' own; see `affine`)."""
        if not self.active:
            return images if size in (None, images.shape[-1]) else upsample(images, size)
        u = torch.rand(images.shape[0], 4, generator=generator) * 2 - 1  # uniform in [-1, 1]
        if self.p < 1:  # drawn only then, so that p=1 draws what it drew before p existed
            u = u * (torch.rand(images.shape[0], 1, generator=generator) < self.p)
        shift, degrees, scale = u[:, :2] * self.shift, u[:, 2] * self.rotate, 1 + u[:, 3] * self.scale
        return affine(images, shift=shift, degrees=degrees, scale=scale, size=size)


def upsample(images: Tensor, size: int) -> Tensor:
    """Bilinear resizing as the digits are made (align_corners=False): `affine` with no transform draws the same."""
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def affine(images: Tensor, *, shift: Tensor, degrees: Tensor, scale: Tensor, size: int | None = None) -> Tensor:
    """Move each image's content: scale it by `scale` and rotate it by `degrees` about the centre, then shift it by
    `shift` = (dx, dy) output pixels (right, down), drawn on a size x size grid (default: the images' own).

    Give the SOURCE images (the 8x8 digits, not the 16 px ones made from them): the output samples the source's
    bilinear interpolant exactly where `upsample` does, so no transform gives exactly the plain image and a moved
    digit is as sharp as a plain one. Transforming an already upsampled image resamples it twice, which blurs it
    (a half-pixel shift there and back costs 22 dB of PSNR on the digits) and taught a prior blurred digits (-4 dB
    for deblurring). Beyond the edge: the edge pixel for half a source pixel, as `upsample`, black further out."""
    n, channels, height, width = images.shape
    out = size or height
    angle = degrees.to(images.dtype) * (math.pi / 180.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # affine_grid maps output to input coordinates in [-1, 1]: the inverse of (scale * rotation, then shift)
    tx, ty = shift[:, 0] * (2.0 / out), shift[:, 1] * (2.0 / out)
    theta = torch.stack(
        [torch.stack([cos, sin, -(cos * tx + sin * ty)], 1), torch.stack([-sin, cos, -(-sin * tx + cos * ty)], 1)], 1
    ).to(images.dtype)
    # one ring of edge pixels, then black: the image's extent is the inner width / (width + 2) of the padded one
    padded = F.pad(images, (1, 1, 1, 1), mode="replicate")
    inner = torch.tensor([width / (width + 2), height / (height + 2)], dtype=images.dtype)[:, None]
    grid = F.affine_grid(theta * inner, [n, channels, out, out], align_corners=False)
    return F.grid_sample(padded, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
