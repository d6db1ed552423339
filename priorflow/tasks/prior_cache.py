"""One prior per worker process, loaded on first use and reused by every shard the worker solves."""

from __future__ import annotations

import functools

from priorflow.bundled import prior_path
from priorflow.solvers import DiffusionPrior, load_prior


@functools.lru_cache(maxsize=2)
def cached_prior(spec: str, device: str) -> DiffusionPrior:
    return load_prior(prior_path(spec), device)
