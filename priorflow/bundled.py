"""Priors that ship inside the package, addressed by name."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets" / "priors"
BUNDLED_PRIORS = {"digits16": ASSETS / "digits16"}


def prior_path(spec: str) -> Path:
    """A bundled prior's folder by name, or the spec itself as a path."""
    return BUNDLED_PRIORS.get(spec, Path(spec).expanduser())
