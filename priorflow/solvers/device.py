"""Where solvers run: CUDA when there is one, else the CPU with a deliberate thread count."""

from __future__ import annotations

import torch

from priorflow.errors import PriorflowError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks CUDA when available; an explicit device that is not available is an error, not a fallback."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise PriorflowError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise PriorflowError(f"device {device!r} requested but CUDA is not available here")
    return resolved


def set_cpu_threads(threads: int) -> None:
    """Intra-op threads for torch on CPU. Use 1 per process when several processes share the cores:
    oversubscribed OpenMP threads spin and slow everything down many times over."""
    if threads < 1:
        raise PriorflowError(f"threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)
