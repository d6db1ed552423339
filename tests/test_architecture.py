"""The import picture of the package, read from its source: no import circles (imports inside functions count, since
a lazy import is how a circle hides), and no import from a lower layer up to a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "priorflow"

FORBIDDEN = {
    "priorflow.solvers": ("priorflow.tasks", "priorflow.flows", "priorflow.cli", "priorflow.storage", "priorflow.config"),
    "priorflow.storage": ("priorflow.tasks", "priorflow.flows", "priorflow.cli", "priorflow.solvers", "priorflow.config"),
    "priorflow.tasks": ("priorflow.flows", "priorflow.cli"),
    "priorflow.flows": ("priorflow.cli",),
    "priorflow.training": ("priorflow.tasks", "priorflow.flows", "priorflow.cli"),
    "priorflow.solvers.physics": ("priorflow.solvers.algorithms", "priorflow.solvers.priors"),
    "priorflow.solvers.priors": ("priorflow.solvers.algorithms", "priorflow.solvers.physics"),
}
"""Who must not import whom: a layer never reaches up (cli > flows > tasks > solvers, storage), storage never knows
the maths nor the maths storage, and of the solvers' three parts the forward models and the priors know neither
each other nor the algorithms that use them."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The priorflow modules a file imports, anywhere in it: `from a.b import c` is a.b.c when c is a module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                     for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in known}
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) - {name} for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in edges[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_checks_see_what_they_check():
    edges = graph()
    assert "priorflow.solvers.algorithms.dmplug" in edges["priorflow.solvers.algorithms.dmplug_warm"]
    assert "priorflow.storage.lease" in edges["priorflow.flows.restore"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles():
    assert cycles(graph()) == []


def test_no_layer_imports_a_higher_one():
    broken = [f"{source} imports {target}" for source, targets in graph().items() for target in targets
              for layer, above in FORBIDDEN.items() if within(source, layer) and any(within(target, a) for a in above)]
    assert broken == []


def test_no_module_is_over_300_lines_but_the_command_line():
    long = {name: length for name, path in modules().items()
            if (length := len(path.read_text().splitlines())) > 300 and name != "priorflow.cli"}
    assert long == {}
