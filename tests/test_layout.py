"""The package's two wings: the order service in front, the tools that prove it beside it.

The core of the service (models, menu, saga, workflows, activities, ledger) must never
depend on the tools' wing (`pizzeria.ops`) or the command line (`pizzeria.cli`), directly
or through another module of ours: the workflow sandbox imports what the workflow
imports, and a worker deployed without the tools must still run every order.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pizzeria

PACKAGE = Path(pizzeria.__file__).parent
CORE = ("models", "menu", "saga", "workflows", "activities", "ledger")
FORBIDDEN = ("pizzeria.ops", "pizzeria.cli")


def source_of(module: str) -> Path | None:
    """The file of a module of ours (``pizzeria.x`` or ``pizzeria.x.y``), if it exists."""
    parts = module.split(".")[1:]
    if not parts:
        return PACKAGE / "__init__.py"
    relative = Path(*parts)
    for candidate in (PACKAGE / relative.with_suffix(".py"), PACKAGE / relative / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def imports_of(module: str) -> set[str]:
    """The modules of ours that ``module`` imports, anywhere in its code."""
    path = source_of(module)
    if path is None:
        return set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] == "pizzeria" and source_of(name)}


def reachable_from(module: str) -> dict[str, str]:
    """Every module of ours that ``module`` imports, directly or not, with who imports it."""
    seen: dict[str, str] = {}
    todo = [module]
    while todo:
        current = todo.pop()
        for imported in sorted(imports_of(current)):
            if imported not in seen and imported != module:
                seen[imported] = current
                todo.append(imported)
    return seen


@pytest.mark.parametrize("name", CORE)
def test_the_core_never_imports_the_tools_wing_or_the_cli(name: str) -> None:
    module = f"pizzeria.{name}"
    assert source_of(module) is not None, f"{module} is gone: update CORE"
    reached = reachable_from(module)
    wrong = {
        found: importer
        for found, importer in reached.items()
        if any(found == bad or found.startswith(bad + ".") for bad in FORBIDDEN)
    }
    assert wrong == {}, f"{module} reaches the tools' wing or the CLI: {wrong}"


def test_the_walk_sees_what_a_module_imports() -> None:
    """Guard: the walker finds imports at all (a broken walker would pass the test above)."""
    assert "pizzeria.models" in reachable_from("pizzeria.workflows")
    assert "pizzeria.ops.processes" in reachable_from("pizzeria.ops.chaos.command")
    assert "pizzeria.ops.check.reconcile" in reachable_from("pizzeria.cli")


def test_the_benchmark_baseline_imports_nothing_of_ours() -> None:
    """The sandbox re-imports a workflow's module for every workflow: the baseline must
    stay as cheap as the bare engine it stands for."""
    assert reachable_from("pizzeria.ops.baseline") == {}
