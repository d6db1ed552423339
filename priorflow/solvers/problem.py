"""What a solver is asked to minimise: the data fit of y = A(x) + n, or any differentiable per-sample loss."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from priorflow.errors import PriorflowError, ShapeError
from priorflow.solvers.noise import NoiseModel, sample_generators
from priorflow.solvers.operators import Operator

FitKind = Literal["norm", "mse"]

# A sample's noise is drawn from seed + offset, its solver from seed: the streams of a dataset never meet while
# it has fewer samples than the offset.
NOISE_SEED_OFFSET = 1_000_000_007


class Objective(ABC):
    """A differentiable loss per sample on images in [0, 1]: (B, C, H, W) -> (B,)."""

    batch_size: int

    @abstractmethod
    def __call__(self, x: Tensor) -> Tensor: ...

    @abstractmethod
    def take(self, index: Tensor) -> Objective:
        """The same loss for a sub-batch (samples that stopped early leave the batch)."""


@dataclass
class InverseProblem:
    """Measurements y (in [0, 1] like the images) of unknown images through `operator`."""

    y: Tensor
    operator: Operator

    def __post_init__(self) -> None:
        if not torch.is_tensor(self.y) or self.y.ndim < 2:
            raise ShapeError("measurements y must be a tensor with a leading batch dimension")
        if not torch.isfinite(self.y).all():
            raise PriorflowError("measurements y contain NaN or infinite values")
        expected = self.operator.measurement_shape(self.y.shape[0])
        if tuple(self.y.shape) != expected:
            raise ShapeError(f"measurements have shape {tuple(self.y.shape)}, operator {self.operator.name} gives {expected}")

    @property
    def batch_size(self) -> int:
        return self.y.shape[0]

    def objective(self, kind: FitKind) -> MeasurementFit:
        return MeasurementFit(self.y, self.operator, kind)


class MeasurementFit(Objective):
    """||y - A(x)|| per sample ('norm', DPS/MPGD) or its mean square ('mse', DMPlug)."""

    def __init__(self, y: Tensor, operator: Operator, kind: FitKind) -> None:
        self.y, self.operator, self.kind = y, operator, kind
        self.batch_size = y.shape[0]

    def __call__(self, x: Tensor) -> Tensor:
        residual = (self.operator(x) - self.y.to(x)).flatten(1)
        return residual.norm(dim=1) if self.kind == "norm" else residual.pow(2).mean(1)

    def take(self, index: Tensor) -> MeasurementFit:
        return MeasurementFit(self.y[index.to(self.y.device)], self.operator.take(index), self.kind)


class PerSampleLoss(Objective):
    """Black-box guidance: `fn(x, *tensors) -> (B,)`, where each tensor holds one row per sample."""

    def __init__(self, fn: Callable[..., Tensor], *tensors: Tensor, batch_size: int | None = None) -> None:
        if batch_size is None and not tensors:
            raise PriorflowError("PerSampleLoss needs per-sample tensors or an explicit batch_size")
        self.fn, self.tensors = fn, tensors
        self.batch_size = tensors[0].shape[0] if tensors else int(batch_size)  # type: ignore[arg-type]

    def __call__(self, x: Tensor) -> Tensor:
        loss = self.fn(x, *self.tensors)
        if loss.shape != (x.shape[0],):
            raise ShapeError(f"a per-sample loss must return shape ({x.shape[0]},), got {tuple(loss.shape)}")
        return loss

    def take(self, index: Tensor) -> PerSampleLoss:
        return PerSampleLoss(self.fn, *(t[index.to(t.device)] for t in self.tensors), batch_size=len(index))


def simulate_measurements(x: Tensor, operator: Operator, noise: NoiseModel, seeds: Sequence[int],
             noise_seed_offset: int = NOISE_SEED_OFFSET) -> InverseProblem:
    """Measurements y = noise(A(x)) of clean images x in [0, 1]; sample i's noise from seeds[i] + offset."""
    y = noise(operator(x), sample_generators([noise_seed_offset + int(s) for s in seeds]))
    return InverseProblem(y, operator)
