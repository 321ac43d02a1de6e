"""The package's two wings: the order service in front, the tools that prove it beside it.

The core of the service (models, menu, saga, workflows, activities, ledger) must never
depend on the tools' wing (`pizzeria.ops`) or the command line (`pizzeria.cli`), directly
or through another module of ours: the workflow sandbox imports what the workflow
imports, and a worker deployed without the tools must still run every order.

Every command is in `pizzeria.cli`: the tools' wing is a library (no click in it). The
worker's wiring (`pizzeria.worker`, and with it the workflow) is imported only by what
runs a worker: ``pizzeria worker``, the demo, the benchmark's worker process.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pizzeria

PACKAGE = Path(pizzeria.__file__).parent
CORE = ("models", "menu", "saga", "workflows", "activities", "ledger")
FORBIDDEN = ("pizzeria.ops", "pizzeria.cli")
#: Whoever imports `pizzeria.worker`: the worker command, the demo, the bench's worker.
WORKER_IMPORTERS = {"pizzeria.cli.service", "pizzeria.demo", "pizzeria.ops.bench.worker"}


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


def all_modules() -> list[str]:
    """Every module of the package, by its dotted name."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def imports_of(module: str, ours: bool = True) -> set[str]:
    """The modules of ours (else every module) that ``module`` imports, anywhere in it."""
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
    if not ours:
        return found
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
    assert "pizzeria.ops.processes" in reachable_from("pizzeria.cli.chaos")
    assert "pizzeria.ops.check.reconcile" in reachable_from("pizzeria.cli")
    assert {"pizzeria.cli.check", "pizzeria.ops.bench.worker"} <= set(all_modules())
    assert "click" in imports_of("pizzeria.cli.check", ours=False)


def test_every_command_is_in_the_cli_and_the_tools_wing_is_a_library() -> None:
    """No click outside `pizzeria.cli`: no command is defined anywhere else, and nothing
    but the CLI turns the tools' errors into exit codes."""
    with_click = {
        module
        for module in all_modules()
        if any(name.split(".")[0] == "click" for name in imports_of(module, ours=False))
    }
    outside = {module for module in with_click if not module.startswith("pizzeria.cli")}
    assert outside == set(), f"click outside pizzeria.cli: {sorted(outside)}"


def test_only_the_cli_imports_the_tools_wing() -> None:
    """`pizzeria.ops` is a library of the CLI (and the tests): no other module of the
    package imports it, the demo and the API included."""
    importers = {
        module
        for module in all_modules()
        if not module.startswith(("pizzeria.cli", "pizzeria.ops"))
        and any(
            name == "pizzeria.ops" or name.startswith("pizzeria.ops.")
            for name in imports_of(module)
        )
    }
    assert importers == set(), f"the tools' wing imported outside the CLI: {sorted(importers)}"


#: The most lines a module of the package, and a function in it, may run to.
MODULE_LINES, FUNCTION_LINES = 400, 60


def test_no_module_over_400_lines_and_no_function_over_60() -> None:
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        where = path.relative_to(PACKAGE.parent)
        if len(text.splitlines()) > MODULE_LINES:
            too_long.append(f"{where}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > FUNCTION_LINES:
                    too_long.append(f"{where}:{node.lineno} {node.name}: {length} lines")
    assert too_long == [], too_long


def test_only_what_runs_a_worker_imports_the_worker_wiring() -> None:
    """Waiting for a worker (the tools' processes, chaos's fleet) needs its ready line and
    its grace period, not the workflow: those live in `pizzeria.config`."""
    importers = {module for module in all_modules() if "pizzeria.worker" in imports_of(module)}
    assert importers == WORKER_IMPORTERS
    for module in ("pizzeria.ops.processes", "pizzeria.ops.chaos.fleet"):
        reached = reachable_from(module)
        assert "pizzeria.worker" not in reached and "pizzeria.workflows" not in reached, module


def test_the_benchmark_baseline_imports_nothing_of_ours() -> None:
    """The sandbox re-imports a workflow's module for every workflow: the baseline must
    stay as cheap as the bare engine it stands for."""
    assert reachable_from("pizzeria.ops.baseline") == {}


TESTS = Path(__file__).parent
#: Test folders and the part of the package each one covers.
TEST_FOLDERS = {
    "order": "the order itself (models, menu, saga, workflows, activities)",
    "ledger": "pizzeria.ledger",
    "payments": "pizzeria.payments and pizzeria.money",
    "temporal": "pizzeria.temporal",
    "history": "pizzeria.history",
    "client": "pizzeria.client",
    "api": "pizzeria.api",
    "cli": "pizzeria.cli",
    "ops": "pizzeria.ops",
}


def test_tests_mirror_the_tree_and_share_only_the_helpers_package() -> None:
    """Each test module sits in the folder of what it tests; what tests share lives in
    `tests.helpers`, never in another test module."""
    folders = {p.name for p in TESTS.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(TEST_FOLDERS) | {"helpers"}
    loose = sorted(p.name for p in TESTS.glob("test_*.py") if p.name != "test_layout.py")
    assert loose == [], f"test modules outside a folder: {loose}"
    for path in TESTS.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                last = node.module.split(".")[-1]
                assert not last.startswith("test_"), f"{path} imports {node.module}"


def test_the_module_map_in_the_design_names_every_module_where_it_is():
    """docs/design.md's map is read to find one's way in the code: every module is on it,
    under its package (an ``__init__.py`` only when it holds more than a docstring)."""
    design = (PACKAGE.parents[1] / "docs" / "design.md").read_text()
    block = design.split("```\nsrc/pizzeria/\n", 1)[1].split("```", 1)[0]
    listed, folders = set(), ["src/pizzeria"]
    for line in block.splitlines():
        depth = (len(line) - len(line.lstrip())) // 2
        name = line.split()[0]
        folders = folders[:depth]
        if name.endswith("/"):
            folders.append(name.rstrip("/"))
        else:
            listed.add("/".join([*folders[1:], name]))
    for path in PACKAGE.rglob("*.py"):
        module = path.relative_to(PACKAGE).as_posix()
        body = ast.parse(path.read_text()).body
        docstring_only = len(body) <= 2 and all(
            isinstance(node, ast.Expr | ast.ImportFrom) for node in body
        )
        if path.name == "__init__.py" and docstring_only:
            continue
        assert module in listed, f"{module} is not on docs/design.md's module map"
    assert not {module for module in listed if not (PACKAGE / module).exists()}
