"""Coherent volumes: the slices of a slab are solved together, with a penalty on adjacent-slice differences.

Every row's loss gains `weight` times the squared difference of its image to each depth neighbour's, measured like
the data fit (the mean square for DMPlug's 'mse' fit, the norm for the 'norm' fit of DPS and MPGD). The neighbour
enters as a constant: the gradient of the summed losses is then exactly that of the data fits plus the penalty
summed once over the edges. A row that stopped early (DMPlug) leaves the batch; its last image stays the anchor of
its neighbours. None of the published solvers couples samples; this is priorflow's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from priorflow.errors import PriorflowError
from priorflow.solvers.physics.operators import Operator
from priorflow.solvers.problem import FitKind, Learned, Objective


@dataclass(frozen=True)
class DepthCoupling:
    """Rows of a batch linked along depth: `previous[i]` is row i's neighbour one slice up (-1: none)."""

    weight: float
    previous: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise PriorflowError(f"coupling weight must be >= 0, got {self.weight}")

    @classmethod
    def chain(cls, weight: float, slices: int, tiles: int = 1) -> DepthCoupling:
        """Consecutive slices of one volume, each cut into `tiles` rows (slice-major): tile t of slice s is linked
        to tile t of slice s - 1."""
        return cls(weight, tuple(i - tiles if i >= tiles else -1 for i in range(slices * tiles)))

    def couple(self, objective: Objective, kind: FitKind) -> Objective:
        if objective.batch_size != len(self.previous):
            raise PriorflowError(f"the coupling links {len(self.previous)} rows, the problem has {objective.batch_size}")
        previous = torch.tensor(self.previous, dtype=torch.long)
        following = torch.full_like(previous, -1)
        linked = (previous >= 0).nonzero().flatten()
        following[previous[linked]] = linked
        return CoupledObjective(objective, self.weight, kind, previous, following, torch.arange(len(previous)), _Images())


@dataclass
class _Images:
    """The latest image of every row, shared by an objective and the sub-batch views taken from it."""

    x: Tensor | None = field(default=None)


class CoupledObjective(Objective):
    """The inner objective plus the penalty to each row's depth neighbours; everything else is the inner one's."""

    def __init__(self, inner: Objective, weight: float, kind: FitKind, previous: Tensor, following: Tensor,
                 rows: Tensor, images: _Images) -> None:
        self.inner, self.weight, self.kind = inner, weight, kind
        self.previous, self.following, self.rows, self.images = previous, following, rows, images
        self.batch_size = len(rows)

    def _penalty(self, difference: Tensor) -> Tensor:
        squares = difference.flatten(1).pow(2)
        return squares.mean(1) if self.kind == "mse" else (squares.sum(1) + 1e-12).sqrt()

    def __call__(self, x: Tensor) -> Tensor:
        loss = self.inner(x)
        with torch.no_grad():
            if self.images.x is None:
                self.images.x = torch.zeros(len(self.previous), *x.shape[1:], dtype=x.dtype, device=x.device)
            self.images.x[self.rows.to(x.device)] = x.detach().to(self.images.x.dtype)
        for neighbours in (self.previous, self.following):
            index = neighbours[self.rows]
            present = (index >= 0).to(x)
            anchor = self.images.x[index.clamp(min=0).to(x.device)].to(x)
            loss = loss + self.weight * present * self._penalty(x - anchor)
        return loss

    def _with(self, inner: Objective, rows: Tensor | None = None, kind: FitKind | None = None) -> CoupledObjective:
        """The same links around another inner objective (its rows, the measure of the penalty)."""
        same_images = kind is None
        return CoupledObjective(inner, self.weight, kind or self.kind, self.previous, self.following,
                                self.rows if rows is None else rows, self.images if same_images else _Images())

    def take(self, index: Tensor) -> CoupledObjective:
        return self._with(self.inner.take(index), rows=self.rows[index.cpu()])

    @property
    def operator(self) -> Operator | None:  # type: ignore[override]
        return self.inner.operator

    def refit(self, kind: FitKind) -> CoupledObjective:
        """The inner fit and the penalty both measured as `kind` (a new solve: no anchors yet)."""
        return self._with(self.inner.refit(kind), kind=kind)

    def start(self, generators: Sequence[torch.Generator], device: torch.device) -> CoupledObjective:
        return self._with(self.inner.start(generators, device))

    def parameters(self) -> dict[str, Learned]:
        return self.inner.parameters()


def coupled(objective: Objective | None, coupling: DepthCoupling | None, kind: FitKind) -> Objective | None:
    """The objective with the depth penalty added; no coupling (or weight 0), or no objective, leaves it as it is."""
    if objective is None or coupling is None or coupling.weight == 0:
        return objective
    return coupling.couple(objective, kind)
