"""Forward operators A for y = A(x) + n, on batches of images in [0, 1] of shape (B, C, H, W).

Operators are differentiable and device-agnostic (parameters follow the input's device). Random parameters are
drawn once, when the operator is built: masks per sample from that sample's seed, blur kernels once per run
from the operator's `seed`. `spec()` records everything needed to build the same operator again. Linear
operators also give their adjoint.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from priorflow.errors import PriorflowError, ShapeError
from priorflow.solvers.physics.kernels import bicubic_matrix, gaussian_kernel, motion_kernel


def follow(tensor: Tensor, like: Tensor) -> Tensor:
    """A parameter on the input's device and dtype (a no-op once it is there)."""
    return tensor.to(device=like.device, dtype=like.dtype)


class Operator(ABC):
    """A forward model. `take(index)` restricts per-sample parameters to a sub-batch."""

    name: ClassVar[str]
    linear: ClassVar[bool] = True
    local: ClassVar[bool] = False
    """Whether a measurement pixel depends only on nearby image pixels, so that images can be solved in tiles."""
    measurement_step: int = 1
    """Image pixels per measurement pixel along each side (the factor of super-resolution): the grid tiles lie on."""
    margin: int = 0
    """How far (in image pixels) a measurement pixel sees around itself: tiles overlap by at least twice this."""

    def __init__(self, image_shape: Sequence[int]) -> None:
        self.image_shape = tuple(int(s) for s in image_shape)

    @abstractmethod
    def forward(self, x: Tensor) -> Tensor: ...

    def adjoint(self, y: Tensor) -> Tensor:
        raise NotImplementedError(f"{self.name} is not linear and has no adjoint")

    @abstractmethod
    def spec(self) -> dict[str, Any]: ...

    def take(self, index: Tensor) -> Operator:
        return self

    def on_tiles(self, tile_shape: Sequence[int], boxes: Sequence[tuple[int, int, int]]) -> Operator:
        """This operator on tiles of its images, one batch row per box (sample, top, left) (priorflow.solvers.tiling).

        Only a local operator, whose measurement of a tile is the tile of the measurement, can be tiled."""
        raise PriorflowError(self.not_local())

    def not_local(self) -> str:
        return (f"operator {self.name} is not local (a measurement depends on the whole image), so images larger than "
                f"the prior cannot be restored in tiles with it; give images of the prior's size")

    def measurement_shape(self, batch: int = 1) -> tuple[int, ...]:
        return tuple(self.forward(torch.zeros(batch, *self.image_shape, dtype=torch.float64)).shape)

    def __call__(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ShapeError(f"{self.name} expects images of shape (B, {', '.join(map(str, self.image_shape))}), got {tuple(x.shape)}")
        return self.forward(x)


class Identity(Operator):
    """Denoising: y = x + n."""

    name = "identity"
    local = True

    @classmethod
    def create(cls, image_shape: Sequence[int], sample_seeds: Sequence[int]) -> Identity:
        return cls(image_shape)

    def forward(self, x: Tensor) -> Tensor:
        return x

    def adjoint(self, y: Tensor) -> Tensor:
        return y

    def on_tiles(self, tile_shape: Sequence[int], boxes: Sequence[tuple[int, int, int]]) -> Identity:
        return Identity(tile_shape)

    def spec(self) -> dict[str, Any]:
        return {"name": self.name}


class SuperResolution(Operator):
    """Downsampling by an integer factor: antialiased bicubic (as DPS/DMPlug) or average pooling.

    Not deepinv's Downsampling: its bicubic filter is not DPS's antialiased resizer (0.1 apart on 16 px digits)."""

    name = "super_resolution"
    local = True
    methods = ("bicubic", "avgpool")

    def __init__(self, image_shape: Sequence[int], factor: int = 4, method: str = "bicubic") -> None:
        super().__init__(image_shape)
        _, h, w = self.image_shape
        if method not in self.methods:
            raise PriorflowError(f"super_resolution method must be one of {self.methods}, got {method!r}")
        if factor < 1 or h % factor or w % factor:
            raise PriorflowError(f"super_resolution factor {factor} must divide the image size {h}x{w}")
        self.factor, self.method = factor, method
        self.measurement_step = factor
        self.margin = 2 * factor if method == "bicubic" else 0  # the antialiased cubic spans 4 factors
        self._rows = bicubic_matrix(h, h // factor)
        self._cols = bicubic_matrix(w, w // factor)

    @classmethod
    def create(cls, image_shape: Sequence[int], sample_seeds: Sequence[int], factor: int = 4,
               method: str = "bicubic") -> SuperResolution:
        return cls(image_shape, factor, method)

    def forward(self, x: Tensor) -> Tensor:
        if self.method == "avgpool":
            return F.avg_pool2d(x, self.factor)
        self._rows, self._cols = self._rows.to(x.device), self._cols.to(x.device)
        rows, cols = follow(self._rows, x), follow(self._cols, x)
        return rows @ x @ cols.T

    def adjoint(self, y: Tensor) -> Tensor:
        if self.method == "avgpool":
            f = self.factor
            return y.repeat_interleave(f, -2).repeat_interleave(f, -1) / f**2
        self._rows, self._cols = self._rows.to(y.device), self._cols.to(y.device)
        rows, cols = follow(self._rows, y), follow(self._cols, y)
        return rows.T @ y @ cols

    def on_tiles(self, tile_shape: Sequence[int], boxes: Sequence[tuple[int, int, int]]) -> SuperResolution:
        return SuperResolution(tile_shape, self.factor, self.method)

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "factor": self.factor, "method": self.method}


class Inpainting(Operator):
    """y = x * M with a per-sample mask M (1 = observed), shared by the channels: deepinv's multiplier."""

    name = "inpainting"
    local = True
    masks = ("random", "box")

    def __init__(self, image_shape: Sequence[int], mask: Tensor, params: dict[str, Any]) -> None:
        super().__init__(image_shape)
        self.mask, self.params = mask, params

    @classmethod
    def create(
        cls, image_shape: Sequence[int], sample_seeds: Sequence[int], mask: str = "random", fraction: float = 0.7
    ) -> Inpainting:
        """`random`: `fraction` of the pixels missing; `box`: a missing box of `fraction` of each side."""
        _, h, w = image_shape
        if mask not in cls.masks:
            raise PriorflowError(f"inpainting mask must be one of {cls.masks}, got {mask!r}")
        if not 0.0 <= fraction < 1.0:
            raise PriorflowError(f"inpainting fraction must be in [0, 1), got {fraction}")
        masks = []
        for seed in sample_seeds:
            g = torch.Generator().manual_seed(int(seed))
            m = torch.ones(h * w)
            if mask == "random":
                m[torch.randperm(h * w, generator=g)[: int(h * w * fraction)]] = 0.0
                m = m.view(h, w)
            else:
                bh, bw = round(h * fraction), round(w * fraction)
                top = int(torch.randint(0, h - bh + 1, (), generator=g))
                left = int(torch.randint(0, w - bw + 1, (), generator=g))
                m = m.view(h, w)
                m[top : top + bh, left : left + bw] = 0.0
            masks.append(m)
        return cls(image_shape, torch.stack(masks)[:, None], {"mask": mask, "fraction": fraction})

    def forward(self, x: Tensor) -> Tensor:
        if self.mask.shape[0] not in (1, x.shape[0]):
            raise ShapeError(f"inpainting holds masks for {self.mask.shape[0]} samples, got a batch of {x.shape[0]}")
        from deepinv.physics.functional import multiplier

        self.mask = self.mask.to(x.device)
        return multiplier(x, follow(self.mask, x))

    def adjoint(self, y: Tensor) -> Tensor:
        return self.forward(y)

    def take(self, index: Tensor) -> Inpainting:
        return Inpainting(self.image_shape, self.mask[index.cpu()], self.params)

    def on_tiles(self, tile_shape: Sequence[int], boxes: Sequence[tuple[int, int, int]]) -> Inpainting:
        """Each tile's mask is the tile of its image's mask (a shared mask, for one sample, serves every image)."""
        _, h, w = tile_shape
        mask = self.mask.cpu()
        tiles = [mask[sample if mask.shape[0] > 1 else 0, :, top : top + h, left : left + w] for sample, top, left in boxes]
        return Inpainting(tile_shape, torch.stack(tiles), self.params)

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, **self.params}


class Blur(Operator):
    """Convolution with one fixed kernel for all samples, reflection-padded as in DPS: deepinv's conv2d in
    correlation mode (DPS's F.conv2d does not flip the kernel; deepinv's Blur does)."""

    name = "blur"
    local = True

    def __init__(self, image_shape: Sequence[int], kernel: Tensor, params: dict[str, Any]) -> None:
        super().__init__(image_shape)
        size = kernel.shape[-1]
        if size % 2 == 0 or size // 2 >= min(self.image_shape[1:]):
            raise PriorflowError(
                f"{params['name']} kernel_size {size} must be odd with kernel_size // 2 < image side {min(self.image_shape[1:])}"
            )
        self.kernel, self.params = kernel.float(), params
        self.margin = size // 2

    @classmethod
    def gaussian(cls, image_shape: Sequence[int], sample_seeds: Sequence[int], kernel_size: int = 61,
                 sigma: float = 3.0) -> Blur:
        params = {"name": "gaussian_blur", "kernel_size": kernel_size, "sigma": sigma}
        return cls(image_shape, gaussian_kernel(kernel_size, sigma), params)

    @classmethod
    def motion(cls, image_shape: Sequence[int], sample_seeds: Sequence[int], kernel_size: int = 61,
               intensity: float = 0.5, seed: int = 0) -> Blur:
        """A camera-shake kernel drawn once, from `seed`, for every sample."""
        params = {"name": "motion_blur", "kernel_size": kernel_size, "intensity": intensity, "seed": seed}
        return cls(image_shape, motion_kernel(kernel_size, intensity, torch.Generator().manual_seed(seed)), params)

    def _weight(self, like: Tensor) -> Tensor:
        self.kernel = self.kernel.to(like.device)
        return follow(self.kernel, like)[None, None]

    def forward(self, x: Tensor) -> Tensor:
        from deepinv.physics.functional import conv2d

        return conv2d(x, self._weight(x), padding="reflect", correlation=True)

    def adjoint(self, y: Tensor) -> Tensor:
        from deepinv.physics.functional import conv_transpose2d

        return conv_transpose2d(y, self._weight(y), padding="reflect", correlation=True)

    def on_tiles(self, tile_shape: Sequence[int], boxes: Sequence[tuple[int, int, int]]) -> Blur:
        return Blur(tile_shape, self.kernel, self.params)

    def spec(self) -> dict[str, Any]:
        return dict(self.params)
