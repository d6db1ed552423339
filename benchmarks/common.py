"""What the solver benchmarks share: the test problems, scores, and DMPlug's oracle and replayed early stopping."""

from __future__ import annotations

import torch


def problem(task: str, split: str, count: int, perturbed: bool = False, noise: tuple | None = None):
    """The first `count` digits of a split, their measurements for `task` (with the benchmark's noise unless
    `noise` = (name, params) is given) and their seeds."""
    from tables import simulate

    from priorflow.datasets import load_digits
    from priorflow.presets import NOISE

    x, _ = load_digits(split, 16, perturbed=perturbed)
    seeds = list(range(count))
    return x[:count], simulate(task, x[:count], seeds, noise or NOISE), seeds


def scores(x: torch.Tensor, truth: torch.Tensor, seconds: float | torch.Tensor) -> dict:
    from priorflow.solvers.metrics import image_metrics

    m = image_metrics(x, truth)
    secs = torch.as_tensor(seconds, dtype=torch.float64)
    return {
        "psnr": float(m["psnr"].mean()), "psnr_std": float(m["psnr"].std()), "ssim": float(m["ssim"].mean()),
        "lpips": None if m["lpips"] is None else float(m["lpips"].mean()),
        "sec_per_image": float(secs.mean()) if secs.ndim else float(secs),
    }


class OracleTracker:
    """Callback that keeps each sample's best PSNR over DMPlug's iterates, using the ground truth (oracle)."""

    def __init__(self, truth: torch.Tensor, keep_trajectory: bool = False) -> None:
        self.truth = truth
        self.best_psnr = torch.full((len(truth),), -1.0, dtype=torch.float64)
        self.best_x = torch.zeros_like(truth)
        self.trajectory: list[list[torch.Tensor]] = [[] for _ in range(len(truth))] if keep_trajectory else []

    def __call__(self, step: int, x: torch.Tensor, index: torch.Tensor) -> None:
        x = x.detach().cpu()
        mse = (x - self.truth[index]).pow(2).flatten(1).mean(1).double()
        p = 10 * torch.log10(1 / mse.clamp_min(1e-20))
        better = p > self.best_psnr[index]
        self.best_psnr[index[better]] = p[better]
        self.best_x[index[better]] = x[better]
        for row, i in enumerate(index.tolist()):
            if self.trajectory:
                self.trajectory[i].append(x[row].clone())


def replay_es(trajectories: list[list[torch.Tensor]], truth: torch.Tensor, window: int, patience: int, cap: int) -> float:
    """Mean PSNR of the iterates ES-WMV(window, patience) capped at `cap` would return on recorded trajectories."""
    from priorflow.solvers.algorithms.stopping import WindowedVarianceTracker
    from priorflow.solvers.metrics import psnr

    chosen = []
    for traj in trajectories:
        tracker = WindowedVarianceTracker(window, patience)
        valid = torch.ones(1, dtype=torch.bool)
        for it, x in enumerate(traj[:cap]):
            if tracker.update(it, x[None], {}, torch.zeros(1), valid)[0]:
                break
        chosen.append(tracker.best_x[0])
    return float(psnr(torch.stack(chosen), truth).mean())
