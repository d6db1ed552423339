"""DMPlug (Wang et al., NeurIPS 2024): optimise the seed z of a few-step deterministic DDIM so that A(R(z)) fits y.

R(z) is DDIM with eta = 0 over timesteps [666, 333, 0] (3 steps, 'leading' spacing), x0 clamped and epsilon
re-derived at each step, output clamped: the official code's sampler. Adam on z minimises the mean squared data
fit of each sample. A stopping rule (ES-WMV by default) picks the iterate to return, per sample; a stopped sample
leaves the batch, so it stops costing compute. Parameters the objective learns beside z (blind deblurring's kernel,
dmplug_blind.py) are optimised with it. A warm start (dmplug_warm.py) only changes where z starts.

Defaults (benchmarks/RESULTS.md, "DMPlug's stopping rules"): lr 3e-2 (the official code's is 1e-2), the seed kept
on the sphere of its starting norm, ES-WMV with W=20, P=10, cap 1000. Recorded trajectories show why the free seed
defeats early stopping: once R(z) fits the signal, Adam keeps fitting the noise by growing z out of the Gaussian's
typical set (mean z^2 from 1 to 1.4-6.2 in 1000 iterations), PSNR falls 2.4-12.6 dB below its best, and the
windowed variance keeps falling the whole time, so ES-WMV has no minimum to find. On the sphere the same runs reach
a higher best iterate (+0.1 to +0.7 dB) and fall at most 3.9 dB below it (0.1 dB at best), so a short patience
costs little. On 12 validation digits per cell this beat the former default (free seed, W=20, P=50) in every one of
19 cells (SR x4, inpainting and deblurring at sigma 0.05; SR x4 and deblurring under 8 noises of DMPlug's Table 5)
by 0.2 to 3.7 dB and stopped every sample before the cap; on 20 test digits per cell it gains 0.04 to 2.8 dB in 16
cells and loses 0.03 to 0.11 dB in 3 (deblurring and inpainting at sigma 0.05, deblurring with high shot noise).
The blind and latent variants keep the free seed and their former rule: their defaults were tuned so and have not
been re-derived.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from priorflow.errors import PriorflowError
from priorflow.solvers.algorithms.base import Callback, Recorder, Solver, SolverResult, to_unit
from priorflow.solvers.algorithms.stopping import ESWMV, STOP_MAX_ITERS, STOP_NON_FINITE, StoppingRule, Tracker
from priorflow.solvers.physics.noise import randn, sample_generators
from priorflow.solvers.priors.diffusion import ddim_step
from priorflow.solvers.priors.prior import DiffusionPrior
from priorflow.solvers.problem import Objective

AUTOCAST = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
STOPPING_DESCRIPTION = (
    "Which iterate to return and when to stop: es_wmv (window, patience; needs no ground truth nor noise level), "
    "discrepancy (sigma, tau: once the mean squared residual <= tau * sigma^2) or fixed (run to max_iters)."
)


def _compact_adam(optimizer: torch.optim.Adam, new_params: list[Tensor], keep: Tensor) -> torch.optim.Adam:
    """The same Adam, restricted to the rows `keep` of every parameter (moments and step count carried over)."""
    groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [p]} for g, p in zip(optimizer.param_groups, new_params)]
    compacted = torch.optim.Adam(groups)
    for group, new in zip(optimizer.param_groups, new_params):
        old_state = optimizer.state.get(group["params"][0])
        if old_state:
            compacted.state[new] = {
                k: (v[keep] if k in ("exp_avg", "exp_avg_sq") else v) for k, v in old_state.items()
            }
    return compacted


def _on_sphere(z: Tensor, radius: Tensor) -> Tensor:
    """Each sample's z rescaled to norm `radius` (one value per sample)."""
    return z * (radius / z.flatten(1).norm(dim=1)).view(-1, *[1] * (z.ndim - 1))


class ActiveRows:
    """The samples still being optimised, and everything that holds a row for each: their positions in the batch,
    the objective (with the parameters it learns), the stopping tracker, the seeds' starting radii, the seeds and
    Adam's moments. `finish` collects what the stopped rows return and keeps the others."""

    def __init__(self, z: Tensor, objective: Objective, lr: float, tracker: Tracker, image_shape: tuple[int, ...]) -> None:
        n = len(z)
        self.index = torch.arange(n)
        self.objective, self.tracker = objective, tracker
        self.radius = z.flatten(1).norm(dim=1)
        self.z = z.detach().requires_grad_(True)
        learned = objective.parameters()
        self.optimizer = torch.optim.Adam([{"params": [self.z], "lr": lr}]
                                          + [{"params": [p.value], "lr": p.lr} for p in learned.values()])
        self.out_x = torch.zeros(n, *image_shape)
        self.out_state = {k: torch.zeros(n, *v.shape[1:]) for k, v in self.state.items()}
        self.iterations = torch.zeros(n, dtype=torch.long)
        self.selected = torch.zeros(n, dtype=torch.long)
        self.reasons = [""] * n

    @property
    def state(self) -> dict[str, Tensor]:
        """What the stopping rule remembers with each iterate: the seed and the objective's learnt tensors."""
        return {"z": self.z} | {name: p.value for name, p in self.objective.parameters().items()}

    def step(self, loss: Tensor, valid: Tensor, on_sphere: bool) -> None:
        """One Adam step on the finite losses; the seed projected back onto its sphere if `on_sphere`."""
        self.optimizer.zero_grad(set_to_none=True)
        loss[valid].sum().backward()
        self.optimizer.step()
        if on_sphere:
            with torch.no_grad():
                self.z.copy_(_on_sphere(self.z, self.radius))

    def finish(self, reasons: list[str], iteration: int) -> bool:
        """Collect the rows with a stop reason (the tracker's chosen iterate) and keep the others; whether any is left."""
        done = torch.tensor([bool(r) for r in reasons])
        if not done.any():
            return True
        device = self.z.device
        rows = done.nonzero().flatten()
        targets = self.index[rows]
        self.out_x[targets] = self.tracker.best_x[rows.to(device)].float().cpu()  # type: ignore[index]
        for k in self.out_state:
            self.out_state[k][targets] = self.tracker.best_state[k][rows.to(device)].float().cpu()
        self.selected[targets] = self.tracker.best_iteration[rows.to(device)].cpu()  # type: ignore[index]
        self.iterations[targets] = iteration + 1
        for row, target in zip(rows.tolist(), targets.tolist()):
            self.reasons[target] = reasons[row]
        keep = (~done).nonzero().flatten()
        if keep.numel() == 0:
            return False
        keep_dev = keep.to(device)
        self.index = self.index[keep]
        self.objective = self.objective.take(keep_dev)
        self.tracker.take(keep_dev)
        self.radius = self.radius[keep_dev]
        self.z = self.z.detach()[keep_dev].requires_grad_(True)
        self.optimizer = _compact_adam(self.optimizer, list(self.state.values()), keep_dev)
        return True

    def result(self, recorder: Recorder, device: torch.device) -> SolverResult:
        extras = {"selected_iteration": self.selected} | {k: v for k, v in self.out_state.items() if k != "z"}
        return SolverResult(x=self.out_x.to(device), latent=self.out_state["z"].to(device), iterations=self.iterations,
                            stop_reason=self.reasons, seconds=recorder.seconds, nfe=recorder.nfe, trace=recorder.trace,
                            trace_steps=recorder.trace_steps, extras=extras)


class DMPlug(Solver):
    """DMPlug with a ground-truth-free stopping rule; see the module docstring."""

    name: Literal["dmplug"] = "dmplug"
    data_fit = "mse"

    steps: int = Field(3, ge=1, le=1000, description="DDIM steps inside R(z).")
    lr: float = Field(3e-2, gt=0.0, description="Adam learning rate on the seed z.")
    max_iters: int = Field(1000, ge=1, description="Iteration cap: a run stops here whatever its stopping rule.")
    stopping: StoppingRule = Field(ESWMV(window=20, patience=10), description=STOPPING_DESCRIPTION)
    checkpointing: bool = Field(False, description="Recompute R(z)'s activations in backward to save memory.")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="Number format of the network inside R(z) (autocast); the seed, Adam, the data fit and "
        "the stopping rule stay fp32. bf16/fp16 pay off on CUDA (benchmarks/RESULTS.md, 'DMPlug on CUDA').")
    seed_on_sphere: bool = Field(True, description="Keep each seed z on the sphere of its starting norm (projected "
                                 "after every Adam step), so R(z) stays in the prior's typical set; false: z is free, "
                                 "as in the official code.")

    @property
    def last_step(self) -> int:
        return self.max_iters - 1

    def reverse(self, prior: DiffusionPrior, z: Tensor) -> Tensor:
        """R(z): deterministic DDIM from z (taken as x at the first timestep) to an image in [-1, 1] (through the
        decoder for a latent prior)."""
        timesteps = prior.schedule.ddim_timesteps(self.steps)
        x = z
        autocast = torch.autocast(z.device.type, dtype=AUTOCAST[self.precision], enabled=self.precision != "fp32")
        for i, t in enumerate(timesteps):
            t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
            with autocast:
                if self.checkpointing and torch.is_grad_enabled():
                    x0, eps = checkpoint(prior.denoise, x, t, use_reentrant=False)
                else:
                    x0, eps = prior.denoise(x, t)
            x = ddim_step(x0, eps, prior.schedule.alpha_bar(t_prev))
        return prior.decode(x).clamp(-1.0, 1.0)

    def _solve(self, prior: DiffusionPrior, objective: Objective | None, seeds: list[int],
               callback: Callback | None) -> SolverResult:
        objective = self.fitted(objective)
        generators = sample_generators(seeds)
        recorder = self.recorder(len(seeds))
        z = randn(generators, prior.space_shape, prior.device)
        return self.optimise_seed(prior, objective.start(generators, prior.device), z, recorder, callback)

    def optimise_seed(self, prior: DiffusionPrior, objective: Objective, z: Tensor, recorder: Recorder,
                      callback: Callback | None) -> SolverResult:
        """Adam on z (and on what the objective learns) from `z`; each row returns the iterate its stopping rule
        chose, and leaves the batch when it stops."""
        if self.stopping.rule == "discrepancy" and objective.operator is None:
            raise PriorflowError("the discrepancy principle needs measurements (an InverseProblem), not a custom loss")
        rows = ActiveRows(z, objective, self.lr, self.stopping.tracker(), prior.image_shape)
        last = self.max_iters - 1
        for it in range(self.max_iters):
            x = to_unit(self.reverse(prior, rows.z))
            loss = rows.objective(x)
            valid = torch.isfinite(loss)
            stop = rows.tracker.update(it, x, rows.state, loss, valid)
            reasons = [rows.tracker.reason if s else "" for s in stop.tolist()]
            for row in (~valid).nonzero().flatten().tolist():
                reasons[row] = STOP_NON_FINITE
            if it == last:
                reasons = [r or STOP_MAX_ITERS for r in reasons]
            if callback is not None:
                callback(it, x.detach(), rows.index)
            recorder.snapshot(it, rows.z, rows.index)
            if it < last:
                rows.step(loss, valid, self.seed_on_sphere)
            recorder.step(rows.index, nfe=self.steps)
            if not rows.finish(reasons, it):
                break
        return rows.result(recorder, prior.device)


class DMPlugLatent(DMPlug):
    """DMPlug over a latent prior: R(z) = few-step deterministic latent DDIM, then the decoder; Adam on the latent
    seed z; the stopping rule watches the decoded images. Published nowhere: DMPlug's authors were asked for it
    (their issue #2); the options and defaults are DMPlug's, tuned on the validation digits (benchmarks/RESULTS.md)."""

    name: Literal["dmplug_latent"] = "dmplug_latent"  # type: ignore[assignment]
    space = "latent"
    seed_on_sphere: bool = Field(False, description="Keep each latent seed on the sphere of its starting norm (see dmplug).")
    stopping: StoppingRule = Field(ESWMV(window=20, patience=50), description=STOPPING_DESCRIPTION)
