"""Priors and autoencoders that ship inside the package, addressed by name."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets" / "priors"
BUNDLED_PRIORS = {"digits16": ASSETS / "digits16", "digits16-latent": ASSETS / "digits16-latent"}
BUNDLED_AUTOENCODERS = {"digits16-ae": ASSETS / "digits16-latent" / "vae"}
"""The latent prior's own autoencoder, also usable beside the pixel prior digits16 for MPGD's projections."""


def prior_path(spec: str) -> Path:
    """A bundled prior's folder by name, or the spec itself as a path."""
    return BUNDLED_PRIORS.get(spec, Path(spec).expanduser())


def autoencoder_path(spec: str) -> Path:
    """A bundled autoencoder's folder by name, or the spec itself as a path."""
    return BUNDLED_AUTOENCODERS.get(spec, Path(spec).expanduser())
