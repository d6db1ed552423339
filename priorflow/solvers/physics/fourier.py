"""Fourier phase retrieval as DPS measures it, and the centred FFTs it (and MRI's zero-filled baseline) use."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from priorflow.errors import PriorflowError
from priorflow.solvers.physics.operators import Operator


def centred_fft2(x: Tensor) -> Tensor:
    """Centred orthonormal 2-D FFT over the last two dimensions (fastMRI's fft2c, DPS's fft2_m)."""
    dims = (-2, -1)
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=dims), norm="ortho"), dim=dims)


def centred_ifft2(k: Tensor) -> Tensor:
    """Inverse of centred_fft2."""
    dims = (-2, -1)
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=dims), norm="ortho"), dim=dims)


class PhaseRetrieval(Operator):
    """Fourier phase retrieval as the official DPS code measures it: y = |F(pad(x))|, F = centred_fft2, with
    int(oversample / 8 * side) zeros on each side (DPS: int(oversample / 8 * 256) on 256 px images).

    Written here, not taken from deepinv: deepinv's PhaseRetrieval measures the squared magnitude |Bx|^2. DPS
    applies it to images on [-1, 1], where its zero padding is mid-grey; here, as every priorflow operator, it acts
    on images in [0, 1], so the padding is black (the support constraint of classical phase retrieval).
    Measurements (B, C, H + 2 pad_h, W + 2 pad_w). Not linear: no adjoint.
    """

    name = "phase_retrieval"
    linear = False

    def __init__(self, image_shape: Sequence[int], oversample: float = 2.0) -> None:
        super().__init__(image_shape)
        if not isinstance(oversample, int | float) or oversample < 0:
            raise PriorflowError(f"phase_retrieval oversample must be a number >= 0, got {oversample!r}")
        _, h, w = self.image_shape
        self.oversample = float(oversample)
        self.pad = (int(self.oversample / 8.0 * h), int(self.oversample / 8.0 * w))

    @classmethod
    def create(cls, image_shape: Sequence[int], sample_seeds: Sequence[int], oversample: float = 2.0) -> PhaseRetrieval:
        return cls(image_shape, oversample)

    def padded(self, x: Tensor) -> Tensor:
        """x zero-padded as the operator pads it."""
        ph, pw = self.pad
        return F.pad(x, (pw, pw, ph, ph))

    def forward(self, x: Tensor) -> Tensor:
        return centred_fft2(self.padded(x)).abs()

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "oversample": self.oversample}

    def measurement_shape(self, batch: int = 1) -> tuple[int, ...]:
        c, h, w = self.image_shape
        return (batch, c, h + 2 * self.pad[0], w + 2 * self.pad[1])
