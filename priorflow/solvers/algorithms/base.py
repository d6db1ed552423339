"""The calling convention every solver shares, its result, and per-sample bookkeeping.

`solver.solve(prior, problem, seeds)` restores a batch: `problem` is an InverseProblem (y, operator) or any
per-sample Objective; `seeds` gives each sample its own random stream, so a sample's result does not depend on
the other samples in its batch.

Why this shape. k-diffusion writes each sampler as one short function over one denoiser contract; deepinv's
PosteriorDiffusion composes parts that one swaps rather than subclasses (a data fidelity, a denoiser, an SDE and its
solver). priorflow keeps both ideas. Three parts meet in a solver and it owns none of them: the prior
(priorflow.solvers.priors: `denoise(x_t, t)` in its own space, its noise schedule, `decode` to images), the objective
(priorflow.solvers.problem: a per-sample loss that can drop the rows of stopped samples and may learn parameters of
its own, such as a blind kernel) and, from the pipeline, the per-sample seeds. An algorithm is a short function
over those parts: `reverse_diffusion` (sampling.py) for DDIM, DPS and MPGD, which differ only in the guidance of a
step, and `optimise_seed` (dmplug.py) for DMPlug and its variants. A Solver class is the algorithm's options: a
frozen pydantic model, so a configuration is validated, serialisable and fingerprinted by the pipeline, whose
`_solve(prior, objective, seeds, callback)` binds them to its function. Following one step of any solver reads its
class and the function it calls. Early stopping, tiles and depth coupling are parts too: a stopping tracker, a
tiled problem (tiling.py), a coupled objective (coupling.py).
"""

from __future__ import annotations

import contextlib
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from priorflow.errors import PriorflowError, ShapeError
from priorflow.solvers.algorithms.coupling import DepthCoupling, coupled
from priorflow.solvers.priors.prior import DiffusionPrior
from priorflow.solvers.problem import FitKind, InverseProblem, Objective, operator_name

AUTO = "auto"
OTHER_OPERATORS = "*"
"""Key of an auto table's value for operators it does not name, and for custom losses (no operator)."""

PriorSpace = Literal["pixel", "latent", "any"]
COUNTERPARTS = {"mpgd": "mpgd_ldm", "dps": "dps_latent", "dmplug": "dmplug_latent"}
"""Each pixel solver's latent-space counterpart, named in the error when a prior of the other space is given."""

Callback = Callable[[int, Tensor, Tensor], None]
"""callback(step, x, index): the current estimate x in [0, 1] of the samples at `index` (original positions)."""


@dataclass
class SolverResult:
    """A restored batch. `trace` holds latent snapshots every k steps: (B, S, ...), NaN after a sample stopped."""

    x: Tensor
    latent: Tensor
    iterations: Tensor
    stop_reason: list[str]
    seconds: Tensor
    nfe: Tensor
    trace: Tensor | None = None
    trace_steps: list[int] = field(default_factory=list)
    extras: dict[str, Tensor] = field(default_factory=dict)


def to_unit(x: Tensor) -> Tensor:
    """Model space [-1, 1] to image space [0, 1]."""
    return (x + 1.0) / 2.0


class Progress:
    """Where the fraction of a batch that is done goes while `reporting` is active (a pipeline's progress bar). The
    first recorder made inside reports; solvers it runs on the way (a warm start's MPGD) do not."""

    def __init__(self, sink: Callable[[float], None]) -> None:
        self.sink = sink
        self.owner: Recorder | None = None


_PROGRESS: ContextVar[Progress | None] = ContextVar("priorflow_progress", default=None)


@contextlib.contextmanager
def reporting(sink: Callable[[float], None]) -> Iterator[None]:
    """Within it, the solve tells `sink` after every step the fraction of its batch done: each row's steps over the
    most it can take, and 1 for a row that has left the batch (stopped early)."""
    token = _PROGRESS.set(Progress(sink))
    try:
        yield
    finally:
        _PROGRESS.reset(token)


class Recorder:
    """Wall time attributed to the samples active in each step, network evaluations, latent snapshots, and the
    progress of the batch (see `reporting`)."""

    def __init__(self, batch: int, trace_every: int, trace_steps: list[int], most_steps: int = 1) -> None:
        self.seconds = torch.zeros(batch, dtype=torch.float64)
        self.nfe = torch.zeros(batch, dtype=torch.long)
        self.trace_every = trace_every
        self.trace_steps = trace_steps
        self.trace: Tensor | None = None
        self._start = time.perf_counter()
        self._progress = _PROGRESS.get()
        if self._progress is not None and self._progress.owner is None:
            self._progress.owner = self
        self._steps = torch.zeros(batch)
        self._left = torch.zeros(batch, dtype=torch.bool)
        self._most = max(1, most_steps)

    def step(self, index: Tensor, nfe: int) -> None:
        """Close a step in which the samples at `index` were computed together."""
        now = time.perf_counter()
        cpu_index = index.cpu()
        self.seconds[cpu_index] += (now - self._start) / len(cpu_index)
        self.nfe[cpu_index] += nfe
        self._start = now
        if self._progress is not None and self._progress.owner is self:
            self._report(cpu_index)

    def _report(self, index: Tensor) -> None:
        computed = torch.zeros_like(self._left)
        computed[index] = True
        self._left |= (self._steps > 0) & ~computed  # rows only ever leave a batch, never come back
        self._steps[index] += 1
        done = torch.where(self._left, 1.0, (self._steps / self._most).clamp(max=1.0))
        self._progress.sink(float(done.mean()))  # type: ignore[union-attr]

    def snapshot(self, step: int, latent: Tensor, index: Tensor) -> None:
        if not self.trace_every or step <= 0 or step % self.trace_every or step // self.trace_every > len(self.trace_steps):
            return
        if self.trace is None:
            self.trace = torch.full((len(self.seconds), len(self.trace_steps), *latent.shape[1:]), float("nan"))
        self.trace[index.cpu(), step // self.trace_every - 1] = latent.detach().float().cpu()


class Solver(BaseModel):
    """Base of all solvers: a frozen, serialisable configuration with a `solve` method."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    data_fit: ClassVar[FitKind] = "norm"
    """How the measurements are fitted: ||y - A(x)|| per sample (DPS, MPGD) or its mean square (DMPlug)."""
    auto_options: ClassVar[dict[str, dict[str, Any]]] = {}
    """Options whose default, None ("auto"), is resolved per operator when the solver runs:
    {option: {operator name: value, "*": value for other operators and custom losses}}."""
    space: ClassVar[PriorSpace] = "pixel"
    """The prior this solver works with: "pixel", "latent" (over an autoencoder's latents) or "any"."""
    needs_autoencoder: ClassVar[bool] = False
    """Whether it projects through an autoencoder given beside a pixel prior (MPGD-AE, MPGD-Z)."""

    trace_every: int = Field(0, ge=0, description="Snapshot the latent every k steps (0: no trace).")

    @model_validator(mode="before")
    @classmethod
    def _auto_strings(cls, data: Any) -> Any:
        """`scale="auto"` (e.g. `-s scale=auto` on the command line) is the same as leaving the option unset."""
        if isinstance(data, dict):
            return {k: None if k in cls.auto_options and v == AUTO else v for k, v in data.items()}
        return data

    def resolved(self, operator: str | None) -> Solver:
        """This solver with each auto option (None) set to its value for `operator` (a registered operator name,
        e.g. "super_resolution"; None for a custom loss)."""
        update = {
            option: table.get(operator, table[OTHER_OPERATORS]) if operator else table[OTHER_OPERATORS]
            for option, table in self.auto_options.items()
            if getattr(self, option) is None
        }
        return self.model_copy(update=update) if update else self

    @property
    @abstractmethod
    def last_step(self) -> int:
        """The last step number a run can reach (snapshots are taken at multiples of trace_every up to it)."""

    def trace_steps(self) -> list[int]:
        k = self.trace_every
        return list(range(k, self.last_step + 1, k)) if k > 0 else []

    def recorder(self, batch: int) -> Recorder:
        return Recorder(batch, self.trace_every, self.trace_steps(), self.last_step)

    def solve(
        self,
        prior: DiffusionPrior,
        problem: InverseProblem | Objective | None,
        seeds: Sequence[int],
        callback: Callback | None = None,
        coupling: DepthCoupling | None = None,
    ) -> SolverResult:
        """`coupling` links the rows along depth (priorflow.solvers.algorithms.coupling); None or weight 0:
        independent rows. A problem of None asks for unconditional samples (ddim)."""
        self.check_prior(prior)
        solver = self.resolved(operator_name(problem))
        objective = coupled(solver.objective(prior, problem, seeds), coupling, self.data_fit)
        return solver._solve(prior, objective, list(seeds), callback)

    def objective(self, prior: DiffusionPrior, problem: InverseProblem | Objective | None,
                  seeds: Sequence[int]) -> Objective | None:
        """What this solver minimises for `problem`: the data fit of an InverseProblem, measured as `data_fit`, or
        the objective itself; shapes are checked against the prior and the seeds."""
        if len(seeds) == 0:
            raise PriorflowError("no samples: seeds is empty")
        if problem is None:
            return None
        if isinstance(problem, InverseProblem) and problem.operator.image_shape != prior.image_shape:
            raise ShapeError(f"the operator works on images of shape {problem.operator.image_shape}, the prior on {prior.image_shape}")
        objective = problem.objective(self.data_fit) if isinstance(problem, InverseProblem) else problem
        if objective.batch_size != len(seeds):
            raise ShapeError(f"{objective.batch_size} measurements but {len(seeds)} seeds: give one seed per sample")
        return objective

    def fitted(self, objective: Objective | None) -> Objective:
        """The objective a guided solver needs: refused when there is none to fit."""
        if objective is None:
            raise PriorflowError(f"{self.name} needs measurements or a loss to fit")  # type: ignore[attr-defined]
        return objective

    def check_prior(self, prior: DiffusionPrior) -> None:
        """Refuse a prior of the other space (or one lacking the autoencoder a projection needs), naming the fix."""
        name = self.name  # type: ignore[attr-defined]
        prior_name = prior.identity.get("name", "the prior")
        if self.space != "any" and prior.kind != self.space:
            if self.space == "latent":
                others = ", ".join(n for n, s in COUNTERPARTS.items() if s == name)
                raise PriorflowError(
                    f"solver {name} needs a latent prior (a pipeline folder with unet/ and vae/ or vqvae/, e.g. "
                    f"digits16-latent), but {prior_name} is a pixel prior" + (f"; use {others}" if others else ""))
            raise PriorflowError(
                f"solver {name} works in pixel space, but {prior_name} is a latent prior"
                + (f"; use {COUNTERPARTS[name]}" if name in COUNTERPARTS else "; use mpgd_ldm, dmplug_latent or dps_latent"))
        if self.needs_autoencoder and prior.autoencoder is None:
            raise PriorflowError(f"solver {name} projects through an autoencoder, and prior {prior_name} has none: "
                                 "give one (--autoencoder, e.g. digits16-ae)")

    @abstractmethod
    def _solve(self, prior: DiffusionPrior, objective: Objective | None, seeds: list[int],
               callback: Callback | None) -> SolverResult:
        """Run the algorithm on the objective (None: unconditional), one random stream per seed."""
