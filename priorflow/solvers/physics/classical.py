"""Classical reconstructions without a prior, one per physics operator: what the diffusion solvers must beat.

Each takes (operator, y) and returns images in [0, 1] of the operator's image shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from priorflow.errors import PriorflowError
from priorflow.solvers.physics.deepinv import MRI, Tomography
from priorflow.solvers.physics.fourier import PhaseRetrieval, centred_fft2, centred_ifft2
from priorflow.solvers.physics.operators import Operator


def filtered_back_projection(operator: Tomography, y: Tensor) -> Tensor:
    """deepinv's filtered back-projection (ramp filter) of the sinograms, undoing the operator's 1 / W scale."""
    return operator.physics(y).A_dagger(y * operator.image_shape[-1], fbp=True).clamp(0, 1)


def zero_filled(operator: MRI, y: Tensor) -> Tensor:
    """Magnitude of the inverse FFT of the k-space with the unsampled columns set to zero."""
    z = operator.physics(y).A_adjoint(operator.decode_adjoint(y))  # (B * C, 2, H, W): real and imaginary parts
    return z.norm(dim=1).reshape(-1, *operator.image_shape).clamp(0, 1)


def hybrid_input_output(operator: PhaseRetrieval, y: Tensor, seeds: Sequence[int] | None = None, starts: int = 4,
                        iterations: int = 300, error_reduction: int = 50, beta: float = 0.9) -> Tensor:
    """Fienup's hybrid input-output, then error reduction, from `starts` random images per sample; each sample keeps
    the start whose result fits its magnitudes best (no ground truth involved).

    The object constraints are the image's support inside the padding and values in [0, 1]: where the Fourier
    projection g' breaks them, HIO sets g <- g - beta (g' - P(g')), P the projection onto them (Fienup's
    g - beta g' where P(g') = 0). Sample i starts from seeds[i] (default i), whatever batch it is in.
    Reconstructions are defined up to Fourier phase retrieval's trivial ambiguity (the image rotated by 180 degrees
    fits the same magnitudes), which PSNR against the ground truth counts as an error.
    """
    seeds = range(len(y)) if seeds is None else seeds
    if len(seeds) != len(y):
        raise PriorflowError(f"{len(seeds)} seeds for a batch of {len(y)} measurements")
    magnitude = y.clamp_min(0)[:, None]  # (B, 1, C, H', W'): the starts along dim 1
    support = operator.padded(torch.ones(1, *operator.image_shape, device=y.device, dtype=y.dtype)) > 0

    def project(g: Tensor) -> Tensor:
        return torch.where(support, g.clamp(0, 1), torch.zeros_like(g))

    shape = (starts, *operator.image_shape)
    starts_x = torch.stack([torch.rand(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
    g = operator.padded(starts_x).to(y)
    for step in range(iterations + error_reduction):
        fitted = centred_ifft2(magnitude * torch.sgn(centred_fft2(g))).real
        projected = project(fitted)
        g = projected if step >= iterations else torch.where(projected == fitted, fitted, g - beta * (fitted - projected))
    g = project(g)
    ph, pw = operator.pad
    x = g[..., ph : g.shape[-2] - ph, pw : g.shape[-1] - pw]
    misfit = (operator(x.flatten(0, 1)).unflatten(0, (len(y), starts)) - magnitude).flatten(2).norm(dim=2)
    return x[torch.arange(len(y)), misfit.argmin(1)]


BASELINES: dict[str, tuple[str, Callable[[Operator, Tensor], Tensor]]] = {
    "ct": ("filtered back-projection", filtered_back_projection),  # type: ignore[dict-item]
    "mri": ("zero-filled inverse FFT (magnitude)", zero_filled),  # type: ignore[dict-item]
    "phase_retrieval": ("HIO 300 + error reduction 50, best fit of 4 starts", hybrid_input_output),  # type: ignore[dict-item]
}
"""Per operator name: the baseline's description and function."""


def classical_reconstruction(operator: Operator, y: Tensor) -> Tensor:
    """The operator's classical baseline (BASELINES)."""
    if operator.name not in BASELINES:
        raise PriorflowError(f"no classical reconstruction for operator {operator.name}; there is one for {', '.join(BASELINES)}")
    return BASELINES[operator.name][1](operator, y)
