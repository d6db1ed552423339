"""Every operator by its registered name: what `--operator NAME -o KEY=VALUE` and a run configuration build."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from priorflow.errors import PriorflowError, unknown_name
from priorflow.solvers.physics.blind import BlindBlur
from priorflow.solvers.physics.deepinv import MRI, Tomography
from priorflow.solvers.physics.fourier import PhaseRetrieval
from priorflow.solvers.physics.operators import Blur, Identity, Inpainting, Operator, SuperResolution

OPERATORS: dict[str, Callable[..., Operator]] = {
    "identity": Identity.create,
    "super_resolution": SuperResolution.create,
    "inpainting": Inpainting.create,
    "gaussian_blur": Blur.gaussian,
    "motion_blur": Blur.motion,
    "blind_blur": BlindBlur.create,
    "ct": Tomography.create,
    "mri": MRI.create,
    "phase_retrieval": PhaseRetrieval.create,
}
"""name -> factory(image_shape, sample_seeds, **params)."""


def build_operator(name: str, image_shape: Sequence[int], sample_seeds: Sequence[int], **params: Any) -> Operator:
    """Build a registered operator; per-sample random parameters come from `sample_seeds`."""
    if name not in OPERATORS:
        raise unknown_name("operator", name, list(OPERATORS))
    try:
        return OPERATORS[name](image_shape, sample_seeds, **params)
    except TypeError as exc:
        raise PriorflowError(f"bad parameters for operator {name!r}: {exc}") from exc
