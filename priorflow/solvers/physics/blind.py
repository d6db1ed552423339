"""Blind deblurring's forward model: a zero-padded 'same' convolution whose kernel the solver does not know, and the
data fit of a solver that learns that kernel per sample (DMPlug's bid.py)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from priorflow.errors import PriorflowError
from priorflow.solvers.physics.kernels import gaussian_kernel, motion_kernel
from priorflow.solvers.physics.noise import randn
from priorflow.solvers.physics.operators import Operator, follow
from priorflow.solvers.problem import Learned, MeasurementFit, Objective


def blind_conv(x: Tensor, kernel: Tensor, adjoint: bool = False) -> Tensor:
    """Zero-padded 'same' convolution of each sample with its own kernel (B or 1, k, k), as DMPlug's blind_blur.

    An even kernel pads one pixel less on the left/top than on the right/bottom, as PyTorch's padding='same'.
    """
    b, c, h, w = x.shape
    k = kernel.shape[-1]
    left, right = (k - 1) // 2, k - 1 - (k - 1) // 2
    if adjoint:
        left, right, kernel = right, left, kernel.flip(-1, -2)
    weight = follow(kernel, x).expand(b, k, k).repeat_interleave(c, 0)[:, None]
    padded = F.pad(x, (left, right, left, right)).reshape(1, b * c, h + k - 1, w + k - 1)
    return F.conv2d(padded, weight, groups=b * c).reshape(b, c, h, w)


class BlindBlur(Operator):
    """Zero-padded 'same' blur with a kernel that the solver does not know (blind deblurring).

    The kernel, when given, is the one used to simulate measurements; blind solvers estimate their own.
    """

    name = "blind_blur"

    def __init__(self, image_shape: Sequence[int], kernel_size: int, kernel: Tensor | None, params: dict[str, Any]) -> None:
        super().__init__(image_shape)
        if not 1 <= kernel_size <= min(self.image_shape[1:]):
            raise PriorflowError(f"blind_blur kernel_size {kernel_size} must be between 1 and the image size")
        self.kernel_size, self.kernel, self.params = kernel_size, kernel, params

    @classmethod
    def create(cls, image_shape: Sequence[int], sample_seeds: Sequence[int], kernel_size: int = 64,
               kernel: str | None = None, sigma: float = 3.0, intensity: float = 0.5, seed: int = 0) -> BlindBlur:
        """`kernel=None` for real data (unknown kernel); 'gaussian' or 'motion' to simulate measurements."""
        if kernel is None:
            return cls(image_shape, kernel_size, None, {"kernel": None})
        if kernel == "gaussian":
            k, params = gaussian_kernel(kernel_size, sigma), {"kernel": kernel, "sigma": sigma}
        elif kernel == "motion":
            k = motion_kernel(kernel_size, intensity, torch.Generator().manual_seed(seed))
            params = {"kernel": kernel, "intensity": intensity, "seed": seed}
        else:
            raise PriorflowError(f"blind_blur kernel must be 'gaussian', 'motion' or None, got {kernel!r}")
        return cls(image_shape, kernel_size, k.float()[None], params)

    def measurement_shape(self, batch: int = 1) -> tuple[int, ...]:
        return (batch, *self.image_shape)  # a 'same' convolution, whether or not the kernel is known

    def with_kernel(self, kernel: Tensor) -> BlindBlur:
        return BlindBlur(self.image_shape, self.kernel_size, kernel, self.params)

    def _known_kernel(self) -> Tensor:
        if self.kernel is None:
            raise PriorflowError("blind_blur has no kernel: it is unknown, use a blind solver (dmplug_blind)")
        return self.kernel

    def forward(self, x: Tensor) -> Tensor:
        return blind_conv(x, self._known_kernel())

    def adjoint(self, y: Tensor) -> Tensor:
        return blind_conv(y, self._known_kernel(), adjoint=True)

    def take(self, index: Tensor) -> BlindBlur:
        if self.kernel is None or self.kernel.shape[0] == 1:
            return self
        return self.with_kernel(self.kernel[index.cpu()])

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "kernel_size": self.kernel_size, **self.params}


def centre_kernels(kernel: Tensor) -> Tensor:
    """Each (k, k) kernel of a batch moved (bilinear, sub-pixel) so that its centre of mass is the middle pixel,
    then renormalised to sum 1. A blind problem cannot tell a kernel shifted one way from an image shifted the
    other; pinning the kernel's centre removes that freedom and leaves its shape free."""
    k = kernel.shape[-1]
    if k == 1:
        return kernel
    coords = torch.arange(k, dtype=kernel.dtype, device=kernel.device) - (k - 1) / 2
    lin = torch.linspace(-1.0, 1.0, k, dtype=kernel.dtype, device=kernel.device)
    gy, gx = torch.meshgrid(lin, lin, indexing="ij")
    step = 2.0 / (k - 1)  # one pixel in grid_sample's [-1, 1] coordinates (align_corners=True)
    for _ in range(2):  # mass cut at the border moves the centre a little: a second pass brings it back
        cy, cx = (kernel.sum(2) * coords).sum(1), (kernel.sum(1) * coords).sum(1)
        grid = torch.stack([gx + cx[:, None, None] * step, gy + cy[:, None, None] * step], dim=-1)  # read at p + centre
        kernel = F.grid_sample(kernel[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)[:, 0]
        kernel = kernel / kernel.sum((1, 2), keepdim=True).clamp_min(1e-12)
    return kernel


KernelInit = Literal["uniform", "random"]


class KernelFit(Objective):
    """The data fit of a blind blur whose kernel is learnt per sample beside the image: softmax of (B, k*k) logits
    (non-negative, summing to 1), centred by `centre_kernels` if `centre`. The logits start at 0 (the uniform box
    kernel) or at N(0, 1) (`init="random"`, the official code's), drawn from each sample's stream in either case so
    that the streams after them do not depend on the choice."""

    def __init__(self, fit: MeasurementFit, lr: float, init: KernelInit, centre: bool, logits: Tensor | None = None) -> None:
        self.fit, self.lr, self.init, self.centre, self.logits = fit, lr, init, centre, logits
        self.batch_size = fit.batch_size

    @classmethod
    def of(cls, fit: Objective, solver: str, lr: float, init: KernelInit, centre: bool) -> KernelFit:
        """The learnt-kernel fit of measurements of a blind_blur operator; anything else is refused."""
        if not isinstance(fit, MeasurementFit) or not isinstance(fit.operator, BlindBlur):
            raise PriorflowError(f"{solver} needs measurements of a blind_blur operator")
        return cls(fit, lr, init, centre)

    @property
    def operator(self) -> BlindBlur:
        return self.fit.operator  # type: ignore[return-value]

    @property
    def size(self) -> int:
        return self.operator.kernel_size

    def start(self, generators: Sequence[torch.Generator], device: torch.device) -> KernelFit:
        logits = randn(generators, (self.size * self.size,), device)
        logits = logits if self.init == "random" else torch.zeros_like(logits)
        return KernelFit(self.fit, self.lr, self.init, self.centre, logits.requires_grad_(True))

    def parameters(self) -> dict[str, Learned]:
        if self.logits is None:
            raise PriorflowError("the kernel fit has not started: call start() first")
        return {"kernel_logits": Learned(self.logits, self.lr)}

    @staticmethod
    def kernel_of(logits: Tensor, centre: bool) -> Tensor:
        """The (B, k, k) kernels of (B, k*k) logits."""
        size = math.isqrt(logits.shape[1])
        kernel = torch.softmax(logits, dim=1).view(-1, size, size)
        return centre_kernels(kernel) if centre else kernel

    def __call__(self, x: Tensor) -> Tensor:
        kernel = self.kernel_of(self.parameters()["kernel_logits"].value, self.centre)
        return MeasurementFit(self.fit.y, self.operator.with_kernel(kernel), self.fit.kind)(x)

    def take(self, index: Tensor) -> KernelFit:
        logits = None if self.logits is None else self.logits.detach()[index].requires_grad_(True)
        return KernelFit(self.fit.take(index), self.lr, self.init, self.centre, logits)

