"""Every solver by name: the registry the CLI, run configurations and benchmarks build solvers from."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError

from priorflow.errors import PriorflowError, unknown_name
from priorflow.solvers.algorithms.base import Solver
from priorflow.solvers.algorithms.dmplug import DMPlug, DMPlugLatent
from priorflow.solvers.algorithms.dmplug_blind import DMPlugBlind
from priorflow.solvers.algorithms.dmplug_warm import DMPlugWarm
from priorflow.solvers.algorithms.mpgd import MPGD, MPGDAE, MPGDZ, MPGDLatent
from priorflow.solvers.algorithms.sampling import DDIM, DPS, DPSLatent
from priorflow.solvers.options import options_error

SolverConfig = Annotated[
    DMPlug | DMPlugBlind | DMPlugLatent | DMPlugWarm | MPGD | MPGDAE | MPGDZ | MPGDLatent | DPS | DPSLatent | DDIM,
    Field(discriminator="name"),
]
"""Any solver's configuration, told apart by its `name` (what a run configuration's `solver:` section holds)."""

SOLVERS: dict[str, type[Solver]] = {
    cls.model_fields["name"].default: cls
    for cls in (DMPlug, DMPlugBlind, DMPlugLatent, DMPlugWarm, MPGD, MPGDAE, MPGDZ, MPGDLatent, DPS, DPSLatent, DDIM)
}
_ADAPTER: TypeAdapter[Solver] = TypeAdapter(SolverConfig)


def build_solver(name: str, **params: Any) -> Solver:
    """A solver by name with its options validated: errors name the bad option, and list the valid ones for an
    unknown option."""
    if name not in SOLVERS:
        raise unknown_name("solver", name, list(SOLVERS))
    try:
        return _ADAPTER.validate_python({"name": name, **params})
    except ValidationError as exc:
        raise PriorflowError(options_error(SOLVERS[name], exc.errors())) from exc
