"""Errors a user can act on. Each message names what is wrong and, where it helps, what to do."""


class PriorflowError(ValueError):
    """Base class: bad input or configuration, reported without a traceback by the CLI."""


class PriorLoadError(PriorflowError):
    """A prior folder or checkpoint is missing, incomplete, corrupt or of an unknown format."""


class ShapeError(PriorflowError):
    """Tensors whose shapes do not fit the prior, the operator or each other."""


class UnknownNameError(PriorflowError):
    """A solver, operator or noise model name that is not registered."""


def unknown_name(kind: str, name: str, known: list[str]) -> UnknownNameError:
    return UnknownNameError(f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(known))}")
