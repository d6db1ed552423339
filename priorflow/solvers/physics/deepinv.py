"""deepinv's physics as priorflow operators: parallel-beam CT and Cartesian MRI.

A deepinv `Physics` keeps its noise and sensor models beside A; here they are off (identity) and only its clean A
and A_adjoint are called, so priorflow's noise models apply to the measurements as for every other operator.
deepinv is imported when such an operator is first built (importing it takes seconds). Measurements are real
tensors: complex k-space keeps deepinv's layout, real and imaginary parts as channels.
"""

from __future__ import annotations

import math
import warnings
from abc import abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from priorflow.errors import PriorflowError, ShapeError
from priorflow.solvers.physics.operators import Operator

if TYPE_CHECKING:
    from deepinv.physics import LinearPhysics


def _clean() -> dict[str, Any]:
    """deepinv Physics keyword arguments that switch its own noise and sensor off."""
    from deepinv.physics import ZeroNoise

    return {"noise_model": ZeroNoise(), "sensor_model": lambda y: y}


class DeepinvOperator(Operator):
    """A linear deepinv physics as an operator: forward is its clean A, adjoint its A_adjoint.

    Subclasses build the physics (`make_physics`) and translate between priorflow's (B, C, H, W) images and the
    physics' own layout where they differ (`encode`/`decode` and their adjoints). One physics is built per device
    and dtype, because deepinv binds its buffers and its cached autograd adjoints to both. `params` is the spec;
    `samples` holds per-sample tensors (masks), one row per sample, restricted by take().
    """

    def __init__(self, image_shape: Sequence[int], params: dict[str, Any], samples: dict[str, Tensor] | None = None) -> None:
        super().__init__(image_shape)
        self.params, self.samples = params, samples or {}
        self._physics: dict[tuple[str, torch.dtype], LinearPhysics] = {}

    @abstractmethod
    def make_physics(self, dtype: torch.dtype, device: torch.device) -> LinearPhysics: ...

    def physics(self, like: Tensor) -> LinearPhysics:
        """The physics for `like`'s device and dtype, built on first use."""
        key = (str(like.device), like.dtype)
        if key not in self._physics:
            self._physics[key] = self.make_physics(like.dtype, like.device)
        return self._physics[key]

    def encode(self, x: Tensor) -> Tensor:
        return x

    def encode_adjoint(self, z: Tensor) -> Tensor:
        return z

    def decode(self, z: Tensor) -> Tensor:
        return z

    def decode_adjoint(self, y: Tensor) -> Tensor:
        return y

    def _check_batch(self, batch: int) -> None:
        for key, rows in self.samples.items():
            if rows.shape[0] != batch:
                raise ShapeError(f"{self.name} holds {key}s for {rows.shape[0]} samples, got a batch of {batch}")

    def forward(self, x: Tensor) -> Tensor:
        self._check_batch(x.shape[0])
        return self.decode(self.physics(x).A(self.encode(x)))

    def adjoint(self, y: Tensor) -> Tensor:
        self._check_batch(y.shape[0])
        return self.encode_adjoint(self.physics(y).A_adjoint(self.decode_adjoint(y)))

    def take(self, index: Tensor) -> DeepinvOperator:
        if not self.samples:
            return self
        return type(self)(self.image_shape, self.params, {k: v[index.cpu()] for k, v in self.samples.items()})

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, **self.params}


def _diagonal_pixels(width: int) -> int:
    """Detector pixels of deepinv's parallel-beam Radon transform without its circle mask: the image zero-padded to
    cover its diagonal (deepinv.physics.functional.radon.Radon.forward)."""
    return width + math.ceil(math.sqrt(2.0) * width - width)


class Tomography(DeepinvOperator):
    """Parallel-beam sparse-view CT with deepinv's pure-PyTorch Radon transform (deepinv.physics.Tomography).

    Measurements (B, C, detector_pixels, angles): sinograms divided by the image width, so an entry is the image's
    mean along its ray and noise on [0, 1] means the same as for the other operators (deepinv's own normalize, to a
    unit operator norm by power iteration, fails in float64 in deepinv 0.5.0). The adjoint is deepinv's autograd
    one (exact, not its interpolated back-projection).
    """

    name = "ct"

    @classmethod
    def create(cls, image_shape: Sequence[int], sample_seeds: Sequence[int], angles: int = 8,
               detector_pixels: int | None = None) -> Tomography:
        """`angles` evenly spaced over [0, 180) degrees. deepinv's parallel beam fixes the detector to the image:
        None or ceil(sqrt(2) W) pixels see the whole image; W pixels see only the disc inscribed in it."""
        _, h, w = image_shape
        if h != w:
            raise PriorflowError(f"ct needs square images (deepinv's Radon transform), got {h}x{w}")
        if not isinstance(angles, int) or angles < 1:
            raise PriorflowError(f"ct angles must be an integer >= 1, got {angles!r}")
        full = _diagonal_pixels(w)
        detector_pixels = full if detector_pixels is None else detector_pixels
        if detector_pixels not in (w, full):
            raise PriorflowError(
                f"ct detector_pixels must be {full} (the image's diagonal) or {w} (its inscribed disc) for {w}x{w} "
                f"images, got {detector_pixels!r}: deepinv's parallel beam fixes the detector to the image"
            )
        return cls(image_shape, {"angles": angles, "detector_pixels": detector_pixels})

    def make_physics(self, dtype: torch.dtype, device: torch.device) -> LinearPhysics:
        from deepinv.physics import Tomography as Radon

        width = self.image_shape[-1]
        return Radon(angles=self.params["angles"], img_width=width, circle=self.params["detector_pixels"] == width,
                     adjoint_via_backprop=True, normalize=False, dtype=dtype, device=device, **_clean())

    def decode(self, z: Tensor) -> Tensor:
        return z / self.image_shape[-1]

    def decode_adjoint(self, y: Tensor) -> Tensor:
        return y / self.image_shape[-1]

    def measurement_shape(self, batch: int = 1) -> tuple[int, ...]:
        return (batch, self.image_shape[0], self.params["detector_pixels"], self.params["angles"])


class MRI(DeepinvOperator):
    """Single-coil Cartesian MRI (deepinv.physics.MRI): the centred orthonormal 2-D FFT of each image channel (a
    complex image with zero imaginary part), sampled along vertical k-space lines (columns).

    Measurements (B, 2C, H, L): real and imaginary parts as channel pairs (deepinv's layout) of only the
    L = W // acceleration sampled columns, in increasing order, so that priorflow's noise falls only on what is
    measured (deepinv keeps the full grid with zeros elsewhere and masks its own noise). Each sample's columns come
    from deepinv's RandomMaskGenerator reseeded with that sample's seed: the centre_fraction * W central columns,
    the rest uniformly at random without replacement.
    """

    name = "mri"

    @classmethod
    def create(cls, image_shape: Sequence[int], sample_seeds: Sequence[int], acceleration: int = 4,
               center_fraction: float = 0.125) -> MRI:
        from deepinv.physics.generator import RandomMaskGenerator

        _, h, w = image_shape
        if not isinstance(acceleration, int) or not 1 <= acceleration <= w:
            raise PriorflowError(f"mri acceleration must be an integer between 1 and the image width {w}, got {acceleration!r}")
        if not 0.0 <= center_fraction <= 1.0 / acceleration:
            raise PriorflowError(
                f"mri center_fraction must be in [0, 1/acceleration] = [0, {1.0 / acceleration:g}] (the central columns "
                f"are part of the W // acceleration sampled ones), got {center_fraction}"
            )
        with warnings.catch_warnings():  # deepinv warns when only central columns are sampled: allowed here
            warnings.simplefilter("ignore", UserWarning)
            generator = RandomMaskGenerator((h, w), acceleration=acceleration, center_fraction=center_fraction)
            masks = [generator.step(batch_size=1, seed=int(seed))["mask"] for seed in sample_seeds]
        columns = [mask[0, 0, 0].nonzero().flatten() for mask in masks]
        return cls(image_shape, {"acceleration": acceleration, "center_fraction": center_fraction},
                   {"column": torch.stack(columns)})

    def make_physics(self, dtype: torch.dtype, device: torch.device) -> LinearPhysics:
        from deepinv.physics import MRI as FourierSampling

        c, h, w = self.image_shape
        columns = self.samples["column"].repeat_interleave(c, 0)
        rows = torch.zeros(len(columns), w).scatter_(1, columns, 1.0)
        mask = rows[:, None, None, :].expand(-1, 1, h, w)
        return FourierSampling(mask=mask.to(device, dtype), device=device, **_clean())

    def _index(self, z: Tensor) -> Tensor:
        """The sampled columns of each (sample, channel) row of the physics' (B * C, 2, H, W) layout."""
        columns = self.samples["column"].to(z.device).repeat_interleave(self.image_shape[0], 0)
        return columns[:, None, None, :].expand(-1, 2, z.shape[-2], -1)

    def encode(self, x: Tensor) -> Tensor:
        real = x.reshape(-1, 1, *x.shape[-2:])
        return torch.cat([real, torch.zeros_like(real)], 1)

    def encode_adjoint(self, z: Tensor) -> Tensor:
        return z[:, 0].reshape(-1, *self.image_shape)

    def decode(self, z: Tensor) -> Tensor:
        y = z.gather(-1, self._index(z))
        return y.reshape(-1, 2 * self.image_shape[0], *y.shape[-2:])

    def decode_adjoint(self, y: Tensor) -> Tensor:
        z = y.reshape(-1, 2, *y.shape[-2:])
        full = z.new_zeros(*z.shape[:-1], self.image_shape[-1])
        return full.scatter(-1, self._index(z), z)

    def measurement_shape(self, batch: int = 1) -> tuple[int, ...]:
        c, h, _ = self.image_shape
        return (batch, 2 * c, h, self.samples["column"].shape[1])
