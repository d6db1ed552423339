"""The plan of a run: everything checked once, on the driver, before a server, a cluster or an output exists, and
handed as it is to every shard task.

`make_plan` checks the prior, the input (shape and values), the operator, the noise, the solver and the output
location, and fixes what every shard needs: the input's layout, the geometry of its samples, the solver with its
options resolved, the result fingerprint and the device. Under the output's lease, tasks.output.prepare_output
re-checks the output location authoritatively, creates or reopens the group and lists the shards left to solve.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from priorflow.config import RunConfig
from priorflow.solvers.catalog import SolverConfig
from priorflow.solvers.device import resolve_device
from priorflow.solvers.physics.noise import build_noise
from priorflow.solvers.physics.registry import build_operator
from priorflow.storage.inputs import open_input
from priorflow.storage.layout import SampleLayout, Shard
from priorflow.storage.outputs import OutputGroup
from priorflow.storage.urls import normalize_url
from priorflow.tasks.geometry import Geometry, run_geometry
from priorflow.tasks.priors import run_prior


class RunPlan(BaseModel):
    """A configuration checked against its input, prior and output; what each shard task is given."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    config: RunConfig  # its locations canonical: workers in another directory than the driver find them too
    layout: SampleLayout  # of the input
    geometry: Geometry
    solver: SolverConfig  # "auto" options resolved for the operator, and a trace of about `snapshots` latents
    fingerprint: str
    prior: dict[str, Any]  # the prior's identity: name, path, kind, sha256 (and its autoencoder's)
    prior_space: tuple[int, int, int]  # the shape of a point of the prior's own space (latents for a latent prior)
    operator: dict[str, Any]  # the operator's whole spec, defaults included, as the run record states it
    device: str = "auto"  # where shards solve: "cpu" when the cluster has no GPU for them
    gpu_share: float | None = None  # the Dask GPU resource one shard task asks for; None: CPU only
    has_work: bool = True  # whether the output lacks any sample, as far as can be told without its lease
    notes: tuple[str, ...] = ()  # what the user should know before it starts (a likely mistake that is no error)
    pending: tuple[Shard, ...] | None = None  # what is left to solve of each shard, listed under the lease

    @property
    def output(self) -> str:
        return normalize_url(self.config.output)

    @property
    def restored_layout(self) -> SampleLayout:
        return self.layout.with_sample_shape(self.geometry.image_shape)

    @property
    def pending_samples(self) -> int:
        return sum(shard.size for shard in self.pending or ())

    def describe(self) -> str:
        """What the run will do, in one line: its mode, samples and sizes, tiles, solver and output."""
        config, geometry, layout = self.config, self.geometry, self.layout
        count = (f"{layout.num_samples} images" if layout.kind == "images" else
                 f"{layout.grid[0]} volume{'s' if layout.grid[0] > 1 else ''} of {layout.grid[1]} slices")
        given = "clean images" if config.mode == "benchmark" else "measurements"
        size = "x".join(map(str, layout.sample_shape))
        tiles = f" in {geometry.tiles} tiles of {geometry.grid.tile}x{geometry.grid.tile} each" if geometry.grid else ""
        operator = ", ".join(f"{k}={v}" for k, v in self.operator.items() if k != "name")
        return (f"{config.mode} mode: {count}, {given} of {size}, {self.operator['name']}({operator}), restored at "
                f"{'x'.join(map(str, geometry.image_shape))}{tiles} by {self.solver.name} with prior {self.prior['name']}"
                f" on {self.device}; output {self.output}")

    def same_run(self, record: dict[str, Any]) -> bool:
        """Whether an output's run record is this run's (the output then resumes)."""
        return self.config.recorded_as(record, self.prior["sha256"])


def resolved_solver(config: RunConfig) -> SolverConfig:
    """The configured solver with its "auto" options resolved for the operator (so the run record says what was
    used), and a trace of about `snapshots` latents unless it sets trace_every itself."""
    solver = config.solver.resolved(config.operator.name)
    if solver.trace_every or config.snapshots <= 0:
        return solver
    return solver.model_copy(update={"trace_every": max(1, solver.last_step // config.snapshots)})


def make_plan(config: RunConfig, overwrite: bool = False, device: str | None = None,
              gpu_share: float | None = None) -> RunPlan:
    """Fail fast, with a message naming the problem: a device that is not there, a missing prior or input, shapes
    that do not fit (an image smaller than the prior, larger images with an operator that cannot tile, a coupling
    of images), bad operator or noise parameters, NaN or infinite input values, an output that holds someone else's
    data or overlaps the input, or another configuration's results. `device` is where the shards solve (default
    the configuration's)."""
    resolve_device(config.device)
    prior = run_prior(config, "cpu")
    solver = resolved_solver(config)
    solver.check_prior(prior)
    source = open_input(config.input, prior.channels, config.layout, measurements=config.mode == "measured")
    build_noise(config.noise.name, **config.noise.params)
    at_prior = build_operator(config.operator.name, prior.image_shape, [0], **config.operator.params)
    geometry = run_geometry(config, at_prior, source.layout)
    source.check_values()
    identity = {k: prior.identity[k] for k in ("name", "path", "sha256", "kind")}
    if "autoencoder" in prior.identity:
        identity["autoencoder"] = prior.identity["autoencoder"]
    located = config.located()
    plan = RunPlan(config=located, layout=source.layout, geometry=geometry, solver=solver,
                   fingerprint=config.result_fingerprint(prior.identity["sha256"]), prior=identity,
                   prior_space=prior.space_shape, operator=at_prior.spec(), device=device or config.device,
                   gpu_share=gpu_share)
    found = OutputGroup.check(plan.output, located.input, plan.fingerprint, overwrite, plan.same_run)
    notes = ()
    if config.mode == "measured" and source.clean_images:
        notes = (f"{source.url} holds clean images (written by `priorflow sample-data`), and this run takes its "
                 "samples as measurements; to degrade them and restore them, use --mode benchmark",)
    return plan.model_copy(update={"has_work": _has_work(found, plan), "notes": notes})


def _has_work(found: OutputGroup | None, plan: RunPlan) -> bool:
    if found is None or not plan.same_run(found.run) or "_done" not in found.group:
        return True
    done = found.done()
    layout = plan.layout
    return done.shape != layout.leading or bool(layout.pending(layout.plan(plan.geometry.samples_per_shard), done))
