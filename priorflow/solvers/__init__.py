"""priorflow.solvers: diffusion-prior solvers for y = A(x) + n, in pure PyTorch.

    prior = load_prior(path)
    op = build_operator("super_resolution", prior.image_shape, seeds, factor=4)
    problem = simulate_measurements(x, op, build_noise("gaussian", sigma=0.05), seeds)  # or InverseProblem(y, op)
    result = build_solver("dmplug").solve(prior, problem, seeds)
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from priorflow.errors import PriorflowError, unknown_name
from priorflow.solvers.base import AUTO, OTHER_OPERATORS, Solver, SolverResult, operator_name
from priorflow.solvers.dmplug import DMPlug, DMPlugBlind, DMPlugLatent, DMPlugWarm
from priorflow.solvers.mpgd import MPGD, MPGDAE, MPGDZ, MPGDLatent
from priorflow.solvers.noise import NOISE_MODELS, build_noise, sample_generators
from priorflow.solvers.operators import OPERATORS, build_operator
from priorflow.solvers.priors.autoencoder import Autoencoder, load_autoencoder
from priorflow.solvers.priors.prior import DiffusionPrior, load_prior
from priorflow.solvers.problem import NOISE_SEED_OFFSET, InverseProblem, Objective, PerSampleLoss, simulate_measurements
from priorflow.solvers.sampling import DDIM, DPS, DPSLatent
from priorflow.solvers.stopping import ESWMV, Discrepancy, FixedIterations

SOLVERS: dict[str, type[Solver]] = {cls.model_fields["name"].default: cls for cls in (DMPlug, DMPlugBlind, DMPlugLatent, DMPlugWarm, MPGD, MPGDAE, MPGDZ, MPGDLatent, DPS, DPSLatent, DDIM)}

OPERATOR_NAMES = frozenset(OPERATORS)
NOISE_MODELS_NAMES = frozenset(NOISE_MODELS)

SolverConfig = Annotated[
    DMPlug | DMPlugBlind | DMPlugLatent | DMPlugWarm | MPGD | MPGDAE | MPGDZ | MPGDLatent | DPS | DPSLatent | DDIM, Field(discriminator="name")]


def build_solver(name: str, **params: Any) -> Solver:
    """A solver by name with its options validated: errors name the bad option, and list the valid ones for an
    unknown option."""
    if name not in SOLVERS:
        raise unknown_name("solver", name, list(SOLVERS))
    try:
        return TypeAdapter(SolverConfig).validate_python({"name": name, **params})
    except ValidationError as exc:
        raise PriorflowError(options_error(name, exc)) from exc


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an option's annotation allows (through Optional, unions and Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, typing.Annotated):
        return [m for arg in typing.get_args(annotation) for m in _models(arg)]
    return []


def _tag(model: type[BaseModel]) -> str | None:
    """The discriminator value of a tagged model (a solver's name, a stopping rule's rule)."""
    for key in ("name", "rule"):
        if key in model.model_fields and isinstance(model.model_fields[key].default, str):
            return model.model_fields[key].default
    return None


def _locate(name: str, loc: tuple[Any, ...]) -> tuple[str, type[BaseModel]]:
    """The dotted option path of a validation error's location, and the model that holds its last part."""
    model: type[BaseModel] = SOLVERS[name]
    union: dict[str | None, type[BaseModel]] = {}
    path: list[str] = []
    for part in map(str, loc[1:]):  # loc[0] is the solver's name (the union's tag)
        if part in union:  # the tag of a nested union (stopping: es_wmv) names the model, not an option
            model, union = union[part], {}
            continue
        path.append(part)
        members = _models(model.model_fields[part].annotation) if part in model.model_fields else []
        if len(members) == 1:
            model = members[0]
        union = {_tag(m): m for m in members} if len(members) > 1 else {}
    return ".".join(path), model


def options_error(name: str, exc: ValidationError) -> str:
    """One message for a solver's bad options: each unknown option with the valid ones, each bad value with why."""
    problems = []
    for error in exc.errors():
        option, model = _locate(name, tuple(error["loc"]))
        if error["type"] == "extra_forbidden":
            parent, _, key = option.rpartition(".")
            valid = sorted(f for f in model.model_fields if f != "name")
            where = f"solver {name}" if not parent else f"{parent} of solver {name}"
            problems.append(f"unknown option {key!r} for {where}; valid options: {', '.join(valid)}")
        else:
            problems.append(f"bad value for option {option!r} of solver {name}: {error['msg']}")
    return "; ".join(problems)


def unknown_options(name: str, params: dict[str, Any]) -> str | None:
    """The message for options that solver `name` does not have (None if all are known; values are not judged)."""
    try:
        TypeAdapter(SolverConfig).validate_python({"name": name, **params})
    except ValidationError as exc:
        unknown = [e for e in exc.errors() if e["type"] == "extra_forbidden"]
        if unknown:
            return options_error(name, ValidationError.from_exception_data(exc.title, unknown))  # type: ignore[arg-type]
    return None


def _constraints(field: Any) -> str:
    """A field's numeric bounds as text: "> 0", "in [1, 1000]", ">= 0"."""
    bounds = {key: getattr(m, key.lower()) for m in field.metadata for key in ("Ge", "Gt", "Le", "Lt") if hasattr(m, key.lower())}
    low = f"[{bounds['Ge']}" if "Ge" in bounds else f"({bounds['Gt']}" if "Gt" in bounds else None
    high = f"{bounds['Le']}]" if "Le" in bounds else f"{bounds['Lt']})" if "Lt" in bounds else None
    if low and high:
        return f" in {low}, {high}"
    if low:
        return f" {'>=' if low[0] == '[' else '>'} {low[1:]}"
    if high:
        return f" {'<=' if high[-1] == ']' else '<'} {high[:-1]}"
    return ""


def _type_name(annotation: Any) -> str:
    models = _models(annotation)
    if models:
        return " | ".join(_tag(m) or m.__name__ for m in models)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if args and typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    return getattr(annotation, "__name__", str(annotation))


def format_value(value: Any) -> str:
    """An option value as it is written in a configuration: a stopping rule as es_wmv(window=20, patience=100)."""
    if isinstance(value, BaseModel):
        fields = {k: v for k, v in value.model_dump().items() if k not in ("rule", "name")}
        return f"{_tag(type(value))}({', '.join(f'{k}={v}' for k, v in fields.items())})"
    return str(value)


def describe_options(name: str) -> list[dict[str, str]]:
    """Each option of solver `name`: its name, type, default and description. An option that defaults to "auto"
    shows its value per operator ("other": any other operator, or a custom loss)."""
    if name not in SOLVERS:
        raise unknown_name("solver", name, list(SOLVERS))
    cls = SOLVERS[name]
    rows = []
    for option, field in cls.model_fields.items():
        if option == "name":
            continue
        default = field.get_default(call_default_factory=True)
        if default is None and option in cls.auto_options:
            table = cls.auto_options[option]
            per_operator = [f"{op} {format_value(v)}" for op, v in table.items() if op != OTHER_OPERATORS]
            shown = f"{AUTO}: per operator: {', '.join(per_operator)}; other {format_value(table[OTHER_OPERATORS])}"
        else:
            shown = format_value(default)
        kind = _type_name(field.annotation) + _constraints(field) + (f" or {AUTO}" if option in cls.auto_options else "")
        rows.append({"option": option, "type": kind, "default": shown, "description": field.description or ""})
    return sorted(rows, key=lambda row: row["option"] == "trace_every")  # the options every solver has, last


__all__ = [
    "DDIM", "DPS", "DPSLatent", "MPGD", "MPGDAE", "MPGDZ", "MPGDLatent", "DMPlug", "DMPlugBlind", "DMPlugLatent", "ESWMV", "Discrepancy", "FixedIterations", "Autoencoder", "DiffusionPrior", "load_autoencoder",
    "InverseProblem", "NOISE_MODELS_NAMES", "OPERATOR_NAMES", "Objective", "PerSampleLoss", "Solver", "SolverConfig", "SolverResult", "SOLVERS",
    "build_noise", "build_operator", "build_solver", "load_prior", "sample_generators", "simulate_measurements", "NOISE_SEED_OFFSET",
    "describe_options", "format_value", "operator_name", "options_error", "unknown_options",
]
