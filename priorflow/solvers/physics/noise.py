"""Measurement noise models, seeded per sample through torch.Generator.

Convention: noise acts on measurements in [0, 1] (the range of the images), so sigma = 0.05 means a standard
deviation of 0.05 on [0, 1]. The official DPS/MPGD/DMPlug code adds noise on [-1, 1], which halves the
nominal sigma; `value_range="-1,1"` reproduces that. Gaussian noise is not clipped (as in DPS); shot, impulse
and speckle follow ImageNet-C and clip to the value range.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from priorflow.errors import PriorflowError, unknown_name

ValueRange = Literal["0,1", "-1,1"]


def sample_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per sample: the same seed gives the same numbers on CPU and CUDA."""
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def randn(generators: Sequence[torch.Generator], shape: Sequence[int], device: torch.device) -> Tensor:
    """(B, *shape) standard normal noise, row i drawn from generators[i]."""
    return torch.stack([torch.randn(tuple(shape), generator=g) for g in generators]).to(device)


def _per_sample(shape: Sequence[int], generators: Sequence[torch.Generator], draw: Callable[..., Tensor]) -> Tensor:
    return torch.stack([draw(tuple(shape[1:]), g) for g in generators])


@dataclass(frozen=True)
class NoiseModel:
    """Base: maps clean measurements y in [0, 1] to noisy ones, one generator per sample."""

    name: ClassVar[str] = "none"
    value_range: ValueRange = "0,1"

    def __post_init__(self) -> None:
        if self.value_range not in ("0,1", "-1,1"):
            raise PriorflowError(f"noise value_range must be '0,1' or '-1,1', got {self.value_range!r}")

    def __call__(self, y: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        if len(generators) != y.shape[0]:
            raise PriorflowError(f"{len(generators)} generators for a batch of {y.shape[0]} measurements")
        if self.value_range == "0,1":
            return self.corrupt(y, generators)
        return (self.corrupt(y * 2.0 - 1.0, generators) + 1.0) / 2.0

    def corrupt(self, y: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        return y

    @property
    def bounds(self) -> tuple[float, float]:
        return (0.0, 1.0) if self.value_range == "0,1" else (-1.0, 1.0)

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self)}


@dataclass(frozen=True)
class GaussianNoise(NoiseModel):
    name: ClassVar[str] = "gaussian"
    sigma: float = 0.05

    def corrupt(self, y: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        return y + self.sigma * _per_sample(y.shape, generators, lambda s, g: torch.randn(s, generator=g)).to(y)


@dataclass(frozen=True)
class PoissonNoise(NoiseModel):
    """Shot noise: Poisson(rate * y) / rate, with `rate` photons per unit intensity (ImageNet-C 'shot')."""

    name: ClassVar[str] = "poisson"
    rate: float = 25.0

    def corrupt(self, y: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        lo, hi = self.bounds
        unit = ((y - lo) / (hi - lo)).clamp(0.0, 1.0).detach().cpu().float()
        counts = torch.stack([torch.poisson(u * self.rate, generator=g) for u, g in zip(unit, generators)])
        return (counts / self.rate).clamp(0.0, 1.0).to(y) * (hi - lo) + lo


@dataclass(frozen=True)
class ImpulseNoise(NoiseModel):
    """Salt and pepper: a fraction `amount` of the values set to the range's ends."""

    name: ClassVar[str] = "impulse"
    amount: float = 0.05
    salt_vs_pepper: float = 0.5

    def corrupt(self, y: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        lo, hi = self.bounds
        u = _per_sample(y.shape, generators, lambda s, g: torch.rand(s, generator=g)).to(y.device)
        salt = _per_sample(y.shape, generators, lambda s, g: torch.rand(s, generator=g)).to(y.device)
        hit = u < self.amount
        out = torch.where(hit & (salt < self.salt_vs_pepper), torch.full_like(y, hi), y)
        return torch.where(hit & (salt >= self.salt_vs_pepper), torch.full_like(y, lo), out).clamp(lo, hi)


@dataclass(frozen=True)
class SpeckleNoise(NoiseModel):
    """Multiplicative: y + y * N(0, sigma^2), clipped (ImageNet-C 'speckle')."""

    name: ClassVar[str] = "speckle"
    sigma: float = 0.2

    def corrupt(self, y: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        lo, hi = self.bounds
        n = _per_sample(y.shape, generators, lambda s, g: torch.randn(s, generator=g)).to(y)
        return (y + y * self.sigma * n).clamp(lo, hi)


NOISE_MODELS: dict[str, type[NoiseModel]] = {
    "none": NoiseModel,
    "gaussian": GaussianNoise,
    "poisson": PoissonNoise,
    "shot": PoissonNoise,
    "impulse": ImpulseNoise,
    "speckle": SpeckleNoise,
}


def build_noise(name: str, **params: Any) -> NoiseModel:
    if name not in NOISE_MODELS:
        raise unknown_name("noise model", name, list(NOISE_MODELS))
    try:
        model = NOISE_MODELS[name](**params)
    except TypeError as exc:
        raise PriorflowError(f"bad parameters for noise model {name!r}: {exc}") from exc
    for key, value in params.items():
        if isinstance(value, (int, float)) and value < 0:
            raise PriorflowError(f"noise {name}: {key} must be non-negative, got {value}")
    return model
