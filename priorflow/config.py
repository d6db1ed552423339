"""The run configuration: one validated object shared by the CLI and the flows, loadable from YAML or TOML."""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from priorflow.bundled import BUNDLED_AUTOENCODERS, BUNDLED_PRIORS
from priorflow.errors import PriorflowError, unknown_name
from priorflow.solvers.algorithms.dmplug import DMPlug
from priorflow.solvers.algorithms.tiling import Window
from priorflow.solvers.catalog import SOLVERS, SolverConfig
from priorflow.solvers.options import options_error
from priorflow.solvers.physics.noise import NOISE_MODELS
from priorflow.solvers.physics.registry import OPERATORS
from priorflow.storage.layout import Kind
from priorflow.storage.urls import normalize_url


class Spec(BaseModel):
    """A registered operator or noise model by name, with its parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class SlurmSpec(BaseModel):
    """SLURM jobs that each start Dask workers (dask-jobqueue): the settings a user edits for their cluster."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    partition: str = Field(description="SLURM partition (queue) to submit to.")
    account: str | None = Field(None, description="SLURM account to charge, if the site needs one.")
    jobs: int = Field(1, ge=1, description="SLURM jobs to start; each runs one Dask worker per GPU (or one on CPU).")
    gpus_per_job: int = Field(1, ge=0, description="GPUs per job (--gres=gpu:N); 0 for CPU-only jobs.")
    cores_per_job: int = Field(8, ge=1, description="CPU cores per job.")
    memory: str = Field("32GB", description="Memory per job, e.g. 32GB.")
    walltime: str = Field("04:00:00", description="Wall-clock limit per job, HH:MM:SS.")
    prologue: list[str] = Field(default_factory=list, description="Shell lines run before the workers start, e.g. activating the environment.")
    directives: list[str] = Field(default_factory=list, description="Extra #SBATCH directives, e.g. --constraint=a100.")


class ClusterConfig(BaseModel):
    """Where the shards run: a new LocalCluster (default), an existing Dask scheduler, or SLURM jobs."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    address: str | None = Field(None, description="tcp://host:port of a running scheduler; None starts a cluster.")
    workers: int | None = Field(None, ge=1, description="LocalCluster workers (default: one per GPU, else 2).")
    gpu: bool | None = Field(None, description="One GPU per task (default: when the cluster has GPUs).")
    tasks_per_gpu: int = Field(1, ge=1, description="Solver tasks allowed to share one GPU at a time.")
    slurm: SlurmSpec | None = Field(None, description="Start the workers as SLURM jobs (needs dask-jobqueue).")

    @model_validator(mode="after")
    def _one_kind(self) -> ClusterConfig:
        if self.address and self.slurm:
            raise ValueError("give either address (an existing scheduler) or slurm (new SLURM jobs), not both")
        if self.workers and (self.address or self.slurm):
            raise ValueError("workers sizes a LocalCluster; with address or slurm the cluster decides its workers")
        return self


class TilingConfig(BaseModel):
    """Images larger than the prior are restored in overlapping tiles of the prior's size (priorflow.solvers.algorithms.tiling)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    overlap: int | None = Field(None, ge=0, description="Pixels adjacent tiles share (default: a quarter of the "
                                "prior's side, at least twice the operator's margin, on its grid).")
    window: Window = Field("cosine", description="Blending of overlapping tiles: cosine (sin^2 ramps over the "
                           "overlap) or uniform (the plain mean).")


class CouplingConfig(BaseModel):
    """Volumes restored coherently: each shard's slices are solved together with an adjacent-slice penalty
    (priorflow.solvers.algorithms.coupling)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    weight: float = Field(0.0, ge=0, description="Weight of the adjacent-slice penalty (0: independent slices).")
    halo: int = Field(2, ge=0, description="Slices solved on each side of a shard's slab as context, not written.")


class RunConfig(BaseModel):
    """What to restore, with what, and where the results go.

    mode 'measured': the input holds measurements y. mode 'benchmark': the input holds clean images; priorflow
    degrades them with `operator` and `noise` (seeded per sample) and stores measurements and ground truth too.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: str = Field(description="URL of the input Zarr array.")
    output: str = Field(description="URL of the output Zarr group.")
    prior: str = Field("digits16", description="A bundled prior's name, a prior folder or an ADM checkpoint.")
    autoencoder: str | None = Field(None, description="An autoencoder beside a pixel prior, for mpgd_ae and mpgd_z: a "
                                    "bundled name (digits16-ae) or a diffusers VQModel/AutoencoderKL folder.")
    scaling_factor: float | None = Field(None, gt=0, description="Override the autoencoder's latent scaling factor.")
    solver: SolverConfig = Field(default_factory=DMPlug)
    operator: Spec
    noise: Spec = Spec(name="none")
    mode: Literal["measured", "benchmark"] = "measured"
    layout: Kind | None = None
    seed: int = Field(0, ge=0, description="Sample n*D+d is solved with seed + its number.")
    shard_size: int = Field(16, ge=1, description="Samples per shard: one task, one chunk of every output array. "
                            "With tiles it counts tiles: a shard holds as many whole images as fit, at least one.")
    snapshots: int = Field(4, ge=0, description="Latent snapshots kept per sample in `trace` (unless the solver sets trace_every).")
    tiling: TilingConfig = Field(default_factory=TilingConfig, description="Tiles, for images larger than the prior.")
    coupling: CouplingConfig = Field(default_factory=CouplingConfig, description="Coupling of a volume's slices.")
    device: str = "auto"
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description="Where the shards run.")

    @field_validator("operator", "noise")
    @classmethod
    def _registered(cls, spec: Spec, info: ValidationInfo) -> Spec:
        kind, names = ("operator", OPERATORS) if info.field_name == "operator" else ("noise model", NOISE_MODELS)
        if spec.name not in names:
            raise ValueError(str(unknown_name(kind, spec.name, list(names))))
        return spec

    @field_validator("solver", mode="before")
    @classmethod
    def _dmplug_unless_named(cls, solver: Any) -> Any:
        """A solver section without a name is DMPlug's options, as `--solver` is dmplug unless given."""
        return {"name": "dmplug", **solver} if isinstance(solver, dict) and "name" not in solver else solver

    def locations(self) -> dict[str, str | None]:
        """Where the input, the prior and the autoencoder are, one spelling each: the input's URL normalised (local
        paths resolved, file:// as the path, S3 URLs canonical), a prior or autoencoder path resolved (a bundled name
        stays a name)."""
        return {"input": normalize_url(self.input), "prior": _local_path(self.prior, BUNDLED_PRIORS),
                "autoencoder": None if self.autoencoder is None else _local_path(self.autoencoder, BUNDLED_AUTOENCODERS)}

    def located(self) -> RunConfig:
        """This configuration with its locations canonical (`locations()`, the output's URL normalised too): what
        shard tasks are given, so that workers whose working directory is not the driver's find them."""
        return self.model_copy(update=self.locations() | {"output": normalize_url(self.output)})

    def result_fingerprint(self, prior_sha256: str, spelled: dict[str, str | None] | None = None) -> str:
        """Hash of everything that determines the results (not where they go or which machines run them), with its
        `locations()`, so that a run resumes however they are spelled; options left to "auto" count with the value
        they take for this operator. `spelled` hashes the locations as given instead (LOCATIONS: what outputs of
        priorflow before 0.1 hashed), to recognise their results."""
        fields = self.model_dump(mode="json", exclude={"output", "device", "cluster"})
        for name in ("tiling", "coupling"):  # added later: at their defaults they leave older fingerprints as they were
            if getattr(self, name) == type(getattr(self, name))():
                del fields[name]
        fields["solver"] = self.solver.resolved(self.operator.name).model_dump(mode="json")
        fields |= self.locations() if spelled is None else spelled
        blob = json.dumps({**fields, "prior_sha256": prior_sha256}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def recorded_as(self, record: dict[str, Any], prior_sha256: str) -> bool:
        """Whether an output's run record describes this run: the same fingerprint, or, for an output fingerprinted
        with its locations as they were spelled, the same locations spelled as it spells them or as this
        configuration does."""
        held = record["fingerprint"]
        if held == self.result_fingerprint(prior_sha256):
            return True
        spellings = [{name: getattr(self, name) for name in LOCATIONS}]
        theirs = {name: record.get("config", {}).get(name) for name in LOCATIONS}
        if theirs["input"] and theirs["prior"] and self.model_copy(update=theirs).locations() == self.locations():
            spellings.append(theirs)
        return any(held == self.result_fingerprint(prior_sha256, spelled) for spelled in spellings)


LOCATIONS = ("input", "prior", "autoencoder")


def _local_path(spec: str, bundled: dict[str, Path]) -> str:
    """A bundled name as it is, any other path resolved."""
    return spec if spec in bundled else str(Path(spec).expanduser().resolve())


def read_mapping(path: Path, what: str) -> dict[str, Any]:
    """The mapping in a .yaml/.yml/.toml file; unreadable or malformed files are errors that name the file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise PriorflowError(f"cannot read {what} {path}: {exc}") from exc
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise PriorflowError(f"{path} is not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: {exc}") from exc
    if not isinstance(data, dict | None):
        raise PriorflowError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return data or {}


def field_errors(source: str, exc: ValidationError) -> PriorflowError:
    """One message naming every bad field (dotted path) and what is wrong with it; a solver's options are named as
    options (the valid ones listed for an unknown one), a solver that does not exist with the ones that do."""
    problems = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        if loc[:1] == ("solver",) and error["type"] == "union_tag_invalid":
            problems.append(f"solver: {unknown_name('solver', str(error['input'].get('name')), list(SOLVERS))}")
        elif loc[:1] == ("solver",) and len(loc) > 2 and loc[1] in SOLVERS:
            problems.append(f"solver: {options_error(SOLVERS[str(loc[1])], [error | {'loc': loc[1:]}])}")
        else:
            problems.append(f"{'.'.join(map(str, loc)) or 'config'}: {error['msg']}")
    return PriorflowError(f"{source}: {'; '.join(problems)}")


def load_config(path: Path, **overrides: Any) -> RunConfig:
    """A RunConfig from a .yaml/.yml/.toml file; errors name the file and the bad field. An override of a section
    that the file also has (tiling, coupling) replaces it key by key."""
    data = read_mapping(path, "config")
    for key, value in overrides.items():
        data[key] = {**data[key], **value} if key in SECTIONS and isinstance(data.get(key), dict) else value
    return validate_config(data, str(path))


SECTIONS = ("tiling", "coupling")


def load_cluster(path: Path) -> ClusterConfig:
    """A ClusterConfig from a .yaml/.yml/.toml file, e.g. deployments/slurm.yaml."""
    try:
        return ClusterConfig.model_validate(read_mapping(path, "cluster spec"))
    except ValidationError as exc:
        raise field_errors(str(path), exc) from exc


def validate_config(data: dict[str, Any], source: str = "configuration") -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise field_errors(source, exc) from exc
