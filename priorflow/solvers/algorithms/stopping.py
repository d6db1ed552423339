"""When an iterative solver stops, and which iterate it returns, without the ground truth.

ES-WMV (Wang et al., "Early stopping for deep image prior"; used by DMPlug against unknown noise): keep the last
W iterates, track their windowed variance, remember the iterate at which it was lowest, and stop once it has not
improved for P iterations. The variance is kept with running sums, so an update costs O(pixels), not
O(W x pixels). Every sample in a batch has its own window, best iterate and patience, so samples stop
independently. The discrepancy principle stops once the residual reaches the (known) noise level.
Every run is also capped by the solver's iteration limit.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

STOP_ES_WMV = "es_wmv"
STOP_DISCREPANCY = "discrepancy"
STOP_MAX_ITERS = "max_iters"
STOP_NON_FINITE = "non_finite"
STOP_COMPLETED = "completed"
STOP_REASONS = (STOP_ES_WMV, STOP_DISCREPANCY, STOP_MAX_ITERS, STOP_NON_FINITE, STOP_COMPLETED)


class Tracker:
    """Per-sample selection state: the iterate each sample would return if it stopped now."""

    reason = STOP_MAX_ITERS

    def __init__(self) -> None:
        self.best_x: Tensor | None = None
        self.best_state: dict[str, Tensor] = {}
        self.best_iteration: Tensor | None = None

    def remember(self, rows: Tensor, iteration: int, x: Tensor, state: dict[str, Tensor]) -> None:
        """Keep (x, state) at `iteration` for the rows where `rows` is True."""
        if self.best_x is None:
            self.best_x = x.detach().clone()
            self.best_state = {k: v.detach().clone() for k, v in state.items()}
            self.best_iteration = torch.full((x.shape[0],), iteration, dtype=torch.long, device=x.device)
            return
        self.best_x[rows] = x.detach()[rows]
        for key, value in state.items():
            self.best_state[key][rows] = value.detach()[rows]
        self.best_iteration[rows] = iteration  # type: ignore[index]

    def update(self, iteration: int, x: Tensor, state: dict[str, Tensor], residual: Tensor, valid: Tensor) -> Tensor:
        """Observe iterate `iteration` of the active samples; True where a sample should stop now."""
        self.remember(valid, iteration, x, state)
        return torch.zeros_like(valid)

    def take(self, keep: Tensor) -> None:
        """Keep only the rows `keep` (positions in the current batch)."""
        if self.best_x is not None:
            self.best_x = self.best_x[keep]
            self.best_state = {k: v[keep] for k, v in self.best_state.items()}
            self.best_iteration = self.best_iteration[keep]  # type: ignore[index]


class WindowedVarianceTracker(Tracker):
    """ES-WMV state for a batch; see the module docstring."""

    reason = STOP_ES_WMV

    def __init__(self, window: int, patience: int) -> None:
        super().__init__()
        self.window, self.patience = window, patience
        self.count = 0
        self.buffer: Tensor | None = None  # (W, B, P) float32 ring of flattened iterates
        self.sum: Tensor | None = None  # (B, P) float64
        self.sum_sq: Tensor | None = None
        self.best_variance: Tensor | None = None
        self.wait: Tensor | None = None

    def variance_update(self, x: Tensor) -> Tensor | None:
        """Push x (B, ...) into the window; the windowed variance per sample once the window is full."""
        flat = x.detach().reshape(x.shape[0], -1).float()
        if self.buffer is None:
            self.buffer = torch.zeros(self.window, *flat.shape, device=flat.device)
            self.sum = torch.zeros(flat.shape, dtype=torch.float64, device=flat.device)
            self.sum_sq = torch.zeros_like(self.sum)
            self.best_variance = torch.full((flat.shape[0],), float("inf"), dtype=torch.float64, device=flat.device)
            self.wait = torch.zeros(flat.shape[0], dtype=torch.long, device=flat.device)
        slot = self.count % self.window
        if self.count >= self.window:
            old = self.buffer[slot].double()
            self.sum -= old
            self.sum_sq -= old * old
        self.buffer[slot] = flat
        new = flat.double()
        self.sum += new
        self.sum_sq += new * new
        self.count += 1
        if self.count < self.window:
            return None
        mean = self.sum / self.window
        return (self.sum_sq / self.window - mean * mean).clamp_min(0.0).mean(1)

    def update(self, iteration: int, x: Tensor, state: dict[str, Tensor], residual: Tensor, valid: Tensor) -> Tensor:
        variance = self.variance_update(x)
        if variance is None:  # window not full yet: the latest iterate is the best guess
            self.remember(valid, iteration, x, state)
            return torch.zeros_like(valid)
        improved = (variance < self.best_variance) & valid
        self.best_variance = torch.where(improved, variance, self.best_variance)
        self.wait = torch.where(improved, torch.zeros_like(self.wait), self.wait + 1)
        self.remember(improved, iteration, x, state)
        return self.wait >= self.patience

    def take(self, keep: Tensor) -> None:
        super().take(keep)
        if self.buffer is not None:
            self.buffer = self.buffer[:, keep]
            self.sum, self.sum_sq = self.sum[keep], self.sum_sq[keep]
            self.best_variance, self.wait = self.best_variance[keep], self.wait[keep]


class DiscrepancyTracker(Tracker):
    """Stop once the mean squared residual is at most tau * sigma^2."""

    reason = STOP_DISCREPANCY

    def __init__(self, sigma: float, tau: float) -> None:
        super().__init__()
        self.threshold = tau * sigma**2

    def update(self, iteration: int, x: Tensor, state: dict[str, Tensor], residual: Tensor, valid: Tensor) -> Tensor:
        self.remember(valid, iteration, x, state)
        return valid & (residual.detach() <= self.threshold)


class ESWMV(BaseModel):
    """Windowed-moving-variance early stopping: window W, patience P."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    rule: Literal["es_wmv"] = "es_wmv"
    window: int = Field(20, ge=2)
    patience: int = Field(100, ge=1)

    def tracker(self) -> Tracker:
        return WindowedVarianceTracker(self.window, self.patience)


class Discrepancy(BaseModel):
    """Discrepancy principle for a known noise level sigma (on [0, 1]); needs the mean-squared data fit."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    rule: Literal["discrepancy"] = "discrepancy"
    sigma: float = Field(gt=0)
    tau: float = Field(1.0, gt=0)

    def tracker(self) -> Tracker:
        return DiscrepancyTracker(self.sigma, self.tau)


class FixedIterations(BaseModel):
    """No early stop: run to the iteration cap and return the last iterate."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    rule: Literal["fixed"] = "fixed"

    def tracker(self) -> Tracker:
        return Tracker()


StoppingRule = Annotated[ESWMV | Discrepancy | FixedIterations, Field(discriminator="rule")]
