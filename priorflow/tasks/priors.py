"""The priors of this process: loaded once, by the driver to check a run and by a worker for every shard it solves."""

from __future__ import annotations

from priorflow.bundled import autoencoder_path, prior_path
from priorflow.config import RunConfig
from priorflow.solvers.priors.loading import PriorCache
from priorflow.solvers.priors.prior import DiffusionPrior

PRIORS = PriorCache(size=2)  # a worker's prior on its device, and the driver's on the CPU when they share a process


def run_prior(config: RunConfig, device: str) -> DiffusionPrior:
    """The prior (with its autoencoder, if any) that `config` names, on `device`."""
    autoencoder = autoencoder_path(config.autoencoder) if config.autoencoder else None
    return PRIORS.get(prior_path(config.prior), device, autoencoder, config.scaling_factor)
