"""DMPlug (Wang et al., NeurIPS 2024): optimise the seed z of a few-step deterministic DDIM so that A(R(z)) fits y.

R(z) is DDIM with eta = 0 over timesteps [666, 333, 0] (3 steps, 'leading' spacing), x0 clamped and epsilon
re-derived at each step, output clamped: the official code's sampler. Adam on z minimises the mean squared data
fit of each sample. A stopping rule (ES-WMV by default) picks the iterate to return, per sample; a stopped sample
leaves the batch, so it stops costing compute. The blind variant also learns each sample's blur kernel as a
softmax over logits (non-negative, sums to 1), with its own learning rate.

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
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from priorflow.errors import PriorflowError
from priorflow.solvers.base import Callback, Solver, SolverResult, randn, to_unit
from priorflow.solvers.mpgd import MPGD
from priorflow.solvers.noise import sample_generators
from priorflow.solvers.operators import BlindBlur
from priorflow.solvers.priors.diffusion import ddim_step
from priorflow.solvers.priors.prior import DiffusionPrior
from priorflow.solvers.problem import InverseProblem, MeasurementFit, Objective
from priorflow.solvers.stopping import ESWMV, STOP_MAX_ITERS, STOP_NON_FINITE, FixedIterations, StoppingRule

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

    def _start(self, prior: DiffusionPrior, problem: InverseProblem | Objective | None, seeds: list[int],
               drawn: Tensor) -> tuple[Tensor, int]:
        """The seed Adam starts from and the network evaluations spent finding it: DMPlug's is the Gaussian draw."""
        return drawn, 0

    def _extra_parameters(self, problem: object, generators: list[torch.Generator], device: torch.device) -> dict[str, Tensor]:
        return {}

    def _loss(self, x: Tensor, objective: Objective, params: dict[str, Tensor]) -> Tensor:
        return objective(x)

    def _learning_rates(self) -> dict[str, float]:
        return {"z": self.lr}

    def _solve(
        self,
        prior: DiffusionPrior,
        objective: Objective | None,
        problem: InverseProblem | Objective | None,
        seeds: list[int],
        callback: Callback | None,
    ) -> SolverResult:
        assert objective is not None
        if self.stopping.rule == "discrepancy" and not isinstance(problem, InverseProblem):
            raise PriorflowError("the discrepancy principle needs measurements (an InverseProblem), not a custom loss")
        device, n = prior.device, len(seeds)
        generators = sample_generators(seeds)
        recorder = self.recorder(n)
        z, start_nfe = self._start(prior, problem, seeds, randn(generators, prior.space_shape, device))
        if start_nfe:
            recorder.step(torch.arange(n), nfe=start_nfe)
        radius = z.flatten(1).norm(dim=1)
        params = {"z": z} | self._extra_parameters(problem, generators, device)
        params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        rates = self._learning_rates()
        optimizer = torch.optim.Adam([{"params": [p], "lr": rates[k]} for k, p in params.items()])
        tracker = self.stopping.tracker()
        active = torch.arange(n)
        out_x = torch.zeros(n, *prior.image_shape)
        out_params = {k: torch.zeros(n, *v.shape[1:]) for k, v in params.items()}
        iterations = torch.zeros(n, dtype=torch.long)
        selected = torch.zeros(n, dtype=torch.long)
        reasons = [""] * n

        for it in range(self.max_iters):
            x = to_unit(self.reverse(prior, params["z"]))
            loss = self._loss(x, objective, params)
            valid = torch.isfinite(loss)
            stop = tracker.update(it, x, params, loss, valid)
            reason = [tracker.reason if s else "" for s in stop.tolist()]
            for row in (~valid).nonzero().flatten().tolist():
                reason[row] = STOP_NON_FINITE
            if it == self.max_iters - 1:
                reason = [r or STOP_MAX_ITERS for r in reason]
            if callback is not None:
                callback(it, x.detach(), active)
            recorder.snapshot(it, params["z"], active)
            if it < self.max_iters - 1:
                optimizer.zero_grad(set_to_none=True)
                loss[valid].sum().backward()
                optimizer.step()
                if self.seed_on_sphere:
                    with torch.no_grad():
                        params["z"].copy_(_on_sphere(params["z"], radius))
            recorder.step(active, nfe=self.steps)

            done = torch.tensor([bool(r) for r in reason])
            if done.any():
                rows = done.nonzero().flatten()
                targets = active[rows]
                out_x[targets] = tracker.best_x[rows.to(device)].float().cpu()  # type: ignore[index]
                for k in out_params:
                    out_params[k][targets] = tracker.best_state[k][rows.to(device)].float().cpu()
                selected[targets] = tracker.best_iteration[rows.to(device)].cpu()  # type: ignore[index]
                iterations[targets] = it + 1
                for row, target in zip(rows.tolist(), targets.tolist()):
                    reasons[target] = reason[row]
                keep = (~done).nonzero().flatten()
                if keep.numel() == 0:
                    break
                keep_dev = keep.to(device)
                active = active[keep]
                objective = objective.take(keep_dev)
                tracker.take(keep_dev)
                radius = radius[keep_dev]
                params = {k: v.detach()[keep_dev].requires_grad_(True) for k, v in params.items()}
                optimizer = _compact_adam(optimizer, list(params.values()), keep_dev)

        extras = {"selected_iteration": selected} | {k: v for k, v in out_params.items() if k != "z"}
        return SolverResult(
            x=out_x.to(device),
            latent=out_params["z"].to(device),
            iterations=iterations,
            stop_reason=reasons,
            seconds=recorder.seconds,
            nfe=recorder.nfe,
            trace=recorder.trace,
            trace_steps=recorder.trace_steps,
            extras=extras,
        )


class DMPlugLatent(DMPlug):
    """DMPlug over a latent prior: R(z) = few-step deterministic latent DDIM, then the decoder; Adam on the latent
    seed z; the stopping rule watches the decoded images. Published nowhere: DMPlug's authors were asked for it
    (their issue #2); the options and defaults are DMPlug's, tuned on the validation digits (benchmarks/RESULTS.md)."""

    name: Literal["dmplug_latent"] = "dmplug_latent"  # type: ignore[assignment]
    space = "latent"
    seed_on_sphere: bool = Field(False, description="Keep each latent seed on the sphere of its starting norm (see dmplug).")
    stopping: StoppingRule = Field(ESWMV(window=20, patience=50), description=STOPPING_DESCRIPTION)


class DMPlugBlind(DMPlug):
    """Blind deblurring: z and each sample's kernel logits w (k*k) are optimised jointly; the kernel is softmax(w),
    the forward model a zero-padded 'same' convolution (DMPlug's bid.py).

    The official code starts w at N(0, 1) (`kernel_init="random"`) and leaves the kernel free (`centre_kernel=False`).
    A blind problem cannot tell a kernel shifted one way from an image shifted the other, and with a prior that
    places digits where it likes, many restorations came out shifted by 1-2 pixels. The defaults start from the
    uniform kernel (w = 0), keep the kernel's centre of mass in its middle, and learn it slowly. Chosen on 12
    validation digits blurred as the deblur_gauss task (7x7 kernel unknown; the blurred image scores 21.7 dB):
    official init and free kernel with kernel_lr 0.1 (the former defaults) 21.3 dB, below the blurred image;
    uniform init, free kernel, kernel_lr 0.01 24.2 dB; centred, kernel_lr 0.01, lr 0.01, ES-WMV W=20 P=300 27.4 dB
    (P=200: 27.3; kernel_lr 0.03: 25.8 at best; lr 0.03 and kernel_lr 0.003 were worse without centring).
    """

    name: Literal["dmplug_blind"] = "dmplug_blind"  # type: ignore[assignment]
    lr: float = Field(1e-2, gt=0.0, description="Adam learning rate on the seed z.")
    kernel_lr: float = Field(1e-2, gt=0.0, description="Adam learning rate on the kernel logits.")
    kernel_init: Literal["uniform", "random"] = Field(
        "uniform", description="Kernel logits at the start: uniform (0: the box kernel, centred) or random (N(0, 1), "
        "the official code's).")
    centre_kernel: bool = Field(True, description="Keep the kernel's centre of mass in its middle (the image then "
                                "cannot drift by shifting the kernel the other way); false: the official code's kernel.")
    stopping: StoppingRule = Field(ESWMV(window=20, patience=300), description=STOPPING_DESCRIPTION)
    seed_on_sphere: bool = Field(False, description="Keep each seed on the sphere of its starting norm (see dmplug).")
    couples = False  # its loss rebuilds the data fit with each sample's kernel estimate

    def _extra_parameters(self, problem: object, generators: list[torch.Generator], device: torch.device) -> dict[str, Tensor]:
        if not isinstance(problem, InverseProblem) or not isinstance(problem.operator, BlindBlur):
            raise PriorflowError("dmplug_blind needs measurements of a blind_blur operator")
        k = problem.operator.kernel_size
        logits = randn(generators, (k * k,), device)  # drawn either way, so z's stream is the same for both inits
        return {"kernel_logits": logits if self.kernel_init == "random" else torch.zeros_like(logits)}

    def _loss(self, x: Tensor, objective: Objective, params: dict[str, Tensor]) -> Tensor:
        assert isinstance(objective, MeasurementFit) and isinstance(objective.operator, BlindBlur)
        logits = params["kernel_logits"]
        k = objective.operator.kernel_size
        return MeasurementFit(objective.y, objective.operator.with_kernel(self.kernel(logits, k)), "mse")(x)

    def kernel(self, logits: Tensor, k: int) -> Tensor:
        """The (B, k, k) kernels of (B, k*k) logits: softmax, centred if centre_kernel."""
        kernel = torch.softmax(logits, dim=1).view(-1, k, k)
        return centre_kernels(kernel) if self.centre_kernel else kernel

    def _learning_rates(self) -> dict[str, float]:
        return {"z": self.lr, "kernel_logits": self.kernel_lr}

    def _solve(self, prior, objective, problem, seeds, callback):  # type: ignore[override]
        result = super()._solve(prior, objective, problem, seeds, callback)
        k = problem.operator.kernel_size  # type: ignore[union-attr]
        logits = result.extras.pop("kernel_logits")
        result.extras["kernel"] = self.kernel(logits, k)
        return result


class DMPlugWarm(DMPlug):
    """Ours: DMPlug started from a fast solver's answer instead of a random seed, for a fraction of its compute.

    MPGD (`warm_steps` DDIM steps, no backprop through the network) gives an estimate x; z is found so that R(z) = x
    by inverting R step by step (`invert`); then DMPlug's Adam refines z against y for `max_iters` iterates and
    returns the last one (no ground truth, no noise level). Network evaluations per image: warm_steps +
    (steps - 1) * inversion_iterations + steps * max_iters, 123 with the defaults. Chosen on 12 validation digits
    per task among 54 settings within a fifth of DMPlug's NFE (benchmarks/RESULTS.md, "The moonshot"). On 20 test
    digits per task at sigma 0.05 it beats DMPlug's deployable output by 0.7-1.0 dB at 1/4.6 to 1/7.1 of its NFE,
    and stays 0.4-0.9 dB below DMPlug's oracle best iterate. The free seed is kept: an inverted seed lies well
    inside the Gaussian's typical norm (about half of it), and projecting it onto that sphere changes R(z).
    """

    name: Literal["dmplug_warm"] = "dmplug_warm"  # type: ignore[assignment]
    lr: float = Field(3e-2, gt=0.0, description="Adam learning rate on the seed z.")
    max_iters: int = Field(21, ge=1, description="Iterates of the refinement (the first is R of the inverted seed).")
    stopping: StoppingRule = Field(FixedIterations(), description=STOPPING_DESCRIPTION)
    seed_on_sphere: bool = Field(False, description="Keep the seed on the sphere of the inverted seed's norm.")
    warm_steps: int = Field(50, ge=1, le=1000, description="DDIM steps of the MPGD run that gives the warm start.")
    inversion_iterations: int = Field(5, ge=1, le=100, description="Fixed-point iterations per step of R's inversion.")

    def _start(self, prior: DiffusionPrior, problem: InverseProblem | Objective | None, seeds: list[int],
               drawn: Tensor) -> tuple[Tensor, int]:
        """MPGD's estimate, inverted through R; the Gaussian draw is not used."""
        warm = MPGD(steps=self.warm_steps).solve(prior, problem, seeds)
        return self.invert(prior, warm.x.to(drawn.device) * 2 - 1), self.warm_steps + (self.steps - 1) * self.inversion_iterations

    @torch.no_grad()
    def invert(self, prior: DiffusionPrior, image: Tensor) -> Tensor:
        """A seed z with R(z) close to `image` (in [-1, 1]), found step by step from the last one backwards.

        Each DDIM step of R maps x_t to x_prev = sqrt(ab_prev) x0(x_t) + sqrt(1 - ab_prev) eps(x_t). Given x_prev,
        x_t = sqrt(ab_t) (x_prev - sqrt(1 - ab_prev) eps) / sqrt(ab_prev) + sqrt(1 - ab_t) eps is solved by
        fixed-point iteration on eps = eps(x_t). Plain DDIM inversion evaluates eps at x_prev and the lower timestep
        instead, which at R's 3 steps is far off: on 20 test digits R(z) is 16.6 dB from the image it inverted, against
        25.5 dB after 5 fixed-point iterations (16.9 after 1; benchmarks/moonshot.py run). R's last step, from timestep 0, is taken as the
        identity (alpha_bar there is 0.9999)."""
        schedule = prior.schedule
        timesteps = schedule.ddim_timesteps(self.steps)
        x_prev = image
        for j in range(len(timesteps) - 2, -1, -1):
            t, ab_t, ab_prev = timesteps[j], schedule.alpha_bar(timesteps[j]), schedule.alpha_bar(timesteps[j + 1])
            eps = torch.zeros_like(x_prev)
            for _ in range(self.inversion_iterations):
                x_t = ab_t**0.5 * (x_prev - (1 - ab_prev) ** 0.5 * eps) / ab_prev**0.5 + (1 - ab_t) ** 0.5 * eps
                eps = prior.denoise(x_t, t)[1]
            x_prev = x_t
        return x_prev
