"""One prior per worker process, loaded on first use and reused by every shard the worker solves."""

from __future__ import annotations

import functools

from priorflow.bundled import autoencoder_path, prior_path
from priorflow.config import RunConfig
from priorflow.solvers import DiffusionPrior, load_prior


@functools.lru_cache(maxsize=2)
def cached_prior(spec: str, device: str, autoencoder: str | None = None, scaling_factor: float | None = None) -> DiffusionPrior:
    return load_prior(prior_path(spec), device, autoencoder_path(autoencoder) if autoencoder else None, scaling_factor)


def run_prior(config: RunConfig, device: str) -> DiffusionPrior:
    """The prior (with its autoencoder, if any) that `config` names, cached per process."""
    return cached_prior(config.prior, device, config.autoencoder, config.scaling_factor)
