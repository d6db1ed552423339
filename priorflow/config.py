"""The run configuration: one validated object shared by the CLI and the flows, loadable from YAML or TOML."""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from priorflow.errors import PriorflowError, unknown_name
from priorflow.solvers import NOISE_MODELS_NAMES, OPERATOR_NAMES, SOLVERS, DMPlug, SolverConfig
from priorflow.storage.layout import Kind


class Spec(BaseModel):
    """A registered operator or noise model by name, with its parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class RunConfig(BaseModel):
    """What to restore, with what, and where the results go.

    mode 'measured': the input holds measurements y. mode 'benchmark': the input holds clean images; priorflow
    degrades them with `operator` and `noise` (seeded per sample) and stores measurements and ground truth too.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: str = Field(description="URL of the input Zarr array.")
    output: str = Field(description="URL of the output Zarr group.")
    prior: str = Field("digits16", description="A bundled prior's name or a prior folder.")
    solver: SolverConfig = Field(default_factory=DMPlug)
    operator: Spec
    noise: Spec = Spec(name="none")
    mode: Literal["measured", "benchmark"] = "measured"
    layout: Kind | None = None
    seed: int = Field(0, ge=0, description="Sample n*D+d is solved with seed + its number.")
    shard_size: int = Field(16, ge=1, description="Samples per shard: one task, one chunk of every output array.")
    snapshots: int = Field(4, ge=0, description="Latent snapshots kept per sample in `trace` (unless the solver sets trace_every).")
    device: str = "auto"

    @field_validator("operator", "noise")
    @classmethod
    def _registered(cls, spec: Spec, info: ValidationInfo) -> Spec:
        kind, names = ("operator", OPERATOR_NAMES) if info.field_name == "operator" else ("noise model", NOISE_MODELS_NAMES)
        if spec.name not in names:
            raise ValueError(str(unknown_name(kind, spec.name, list(names))))
        return spec

    def result_fingerprint(self, prior_sha256: str) -> str:
        """Hash of everything that determines the results (not where they go or which device runs them)."""
        fields = self.model_dump(mode="json", exclude={"output", "device"})
        blob = json.dumps({**fields, "prior_sha256": prior_sha256}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


def load_config(path: Path, **overrides: Any) -> RunConfig:
    """A RunConfig from a .yaml/.yml/.toml file; errors name the file and the bad field."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise PriorflowError(f"cannot read config {path}: {exc}") from exc
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise PriorflowError(f"{path} is not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: {exc}") from exc
    return validate_config({**(data or {}), **overrides}, str(path))


def validate_config(data: dict[str, Any], source: str = "configuration") -> RunConfig:
    solver = data.get("solver")
    if isinstance(solver, dict) and solver.get("name", "dmplug") not in SOLVERS:
        raise PriorflowError(f"{source}: solver: {unknown_name('solver', solver['name'], list(SOLVERS))}")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors())
        raise PriorflowError(f"{source}: {problems}") from exc
