"""Solver options as people read and write them: validation errors turned into messages that name the option (and
the valid ones, for an unknown option), and the rows of `priorflow solvers`. Written here because pydantic's own
messages name locations inside its discriminated unions ("solver.dmplug.stopping.es_wmv.windw"), not options."""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from priorflow.solvers.algorithms.base import AUTO, OTHER_OPERATORS, Solver


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


def _locate(solver: type[Solver], loc: tuple[Any, ...]) -> tuple[str, type[BaseModel]]:
    """The dotted option path of a validation error's location (below the solver's tag), and the model that holds
    its last part."""
    model: type[BaseModel] = solver
    union: dict[str | None, type[BaseModel]] = {}
    path: list[str] = []
    for part in map(str, loc):
        if part in union:  # the tag of a nested union (stopping: es_wmv) names the model, not an option
            model, union = union[part], {}
            continue
        path.append(part)
        members = _models(model.model_fields[part].annotation) if part in model.model_fields else []
        if len(members) == 1:
            model = members[0]
        union = {_tag(m): m for m in members} if len(members) > 1 else {}
    return ".".join(path), model


def options_error(solver: type[Solver], errors: Sequence[ErrorDetails]) -> str:
    """One message for a solver's bad options: each unknown option with the valid ones, each bad value with why.
    `errors` are pydantic's, located from the solver's tag on (("dmplug", "lr"), as a TypeAdapter of the solver
    union reports them)."""
    name = _tag(solver)
    problems = []
    for error in errors:
        option, model = _locate(solver, tuple(error["loc"])[1:])  # loc[0] is the solver's name (the union's tag)
        if error["type"] == "extra_forbidden":
            parent, _, key = option.rpartition(".")
            valid = sorted(f for f in model.model_fields if f != "name")
            where = f"solver {name}" if not parent else f"{parent} of solver {name}"
            problems.append(f"unknown option {key!r} for {where}; valid options: {', '.join(valid)}")
        else:
            problems.append(f"bad value for option {option!r} of solver {name}: {error['msg']}")
    return "; ".join(problems)


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
    """An option's type as `priorflow solvers` shows it: a fixed set of values as the values (fp32 | bf16 | fp16)."""
    models = _models(annotation)
    if models:
        return " | ".join(_tag(m) or m.__name__ for m in models)
    if typing.get_origin(annotation) is typing.Literal:
        return " | ".join(str(value) for value in typing.get_args(annotation))
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if args and typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if typing.get_origin(annotation) is tuple:
        return f"({', '.join(_type_name(a) for a in args)})"
    return getattr(annotation, "__name__", str(annotation))


def format_value(value: Any) -> str:
    """An option value as it is written in a configuration: a stopping rule as es_wmv(window=20, patience=100)."""
    if isinstance(value, BaseModel):
        fields = {k: v for k, v in value.model_dump().items() if k not in ("rule", "name")}
        return f"{_tag(type(value))}({', '.join(f'{k}={v}' for k, v in fields.items())})"
    return str(value)


def describe_options(solver: type[Solver]) -> list[dict[str, str]]:
    """Each option of a solver: its name, type, default and description. An option that defaults to "auto" shows
    its value per operator ("other": any other operator, or a custom loss)."""
    rows = []
    for option, field in solver.model_fields.items():
        if option == "name":
            continue
        default = field.get_default(call_default_factory=True)
        if default is None and option in solver.auto_options:
            table = solver.auto_options[option]
            per_operator = [f"{op} {format_value(v)}" for op, v in table.items() if op != OTHER_OPERATORS]
            shown = f"{AUTO}: per operator: {', '.join(per_operator)}; other {format_value(table[OTHER_OPERATORS])}"
        else:
            shown = format_value(default)
        kind = _type_name(field.annotation) + _constraints(field) + (f" or {AUTO}" if option in solver.auto_options else "")
        rows.append({"option": option, "type": kind, "default": shown, "description": field.description or ""})
    return sorted(rows, key=lambda row: row["option"] == "trace_every")  # the options every solver has, last
