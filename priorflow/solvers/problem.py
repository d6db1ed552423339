"""What a solver is asked to minimise: the data fit of y = A(x) + n, or any differentiable per-sample loss.

An Objective is the one thing an algorithm knows of the measurements. Besides its loss it can drop the rows of
samples that stopped (`take`), say which forward model it measures through (`operator`), measure the same fit
another way (`refit`: a norm for DPS and MPGD, a mean square for DMPlug), and own per-sample parameters that the
solver learns beside its own variables (`start`, `parameters`: blind deblurring's kernel, priorflow.solvers.physics.blind).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from priorflow.errors import PriorflowError, ShapeError
from priorflow.solvers.physics.noise import NoiseModel, sample_generators
from priorflow.solvers.physics.operators import Operator

FitKind = Literal["norm", "mse"]

# A sample's noise is drawn from seed + offset, its solver from seed: the streams of a dataset never meet while
# it has fewer samples than the offset.
NOISE_SEED_OFFSET = 1_000_000_007


class Learned(NamedTuple):
    """A per-sample tensor an objective learns (one row per sample, a leaf that requires grad) and its step size."""

    value: Tensor
    lr: float


class Objective(ABC):
    """A differentiable loss per sample on images in [0, 1]: (B, C, H, W) -> (B,)."""

    batch_size: int
    operator: Operator | None = None
    """The forward model the loss measures through; None for a custom loss."""

    @abstractmethod
    def __call__(self, x: Tensor) -> Tensor: ...

    @abstractmethod
    def take(self, index: Tensor) -> Objective:
        """The same loss for a sub-batch (samples that stopped early leave the batch)."""

    def refit(self, kind: FitKind) -> Objective:
        """The same data fit measured as `kind`; a custom loss is what it is."""
        return self

    def start(self, generators: Sequence[torch.Generator], device: torch.device) -> Objective:
        """This objective with the parameters it learns drawn, row i from generators[i] after the solver's own
        draws; one that learns nothing is returned as it is."""
        return self

    def parameters(self) -> dict[str, Learned]:
        """What this objective learns beside the solver's own variables (after `start`)."""
        return {}


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

    def refit(self, kind: FitKind) -> MeasurementFit:
        return MeasurementFit(self.y, self.operator, kind)


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


def operator_name(problem: InverseProblem | Objective | None) -> str | None:
    """The registered name of the problem's operator (what `build_operator` was given), None for custom losses."""
    operator = None if problem is None else problem.operator
    return None if operator is None else str(operator.spec().get("name", operator.name))


def simulate_measurements(x: Tensor, operator: Operator, noise: NoiseModel, seeds: Sequence[int],
                          noise_seed_offset: int = NOISE_SEED_OFFSET) -> InverseProblem:
    """Measurements y = noise(A(x)) of clean images x in [0, 1]; sample i's noise from seeds[i] + offset."""
    y = noise(operator(x), sample_generators([noise_seed_offset + int(s) for s in seeds]))
    return InverseProblem(y, operator)
