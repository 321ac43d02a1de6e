"""The order's workflow code can only do what replays the same way.

Workers pass the order's modules through the workflow sandbox (`pizzeria.worker.
order_sandbox`): the sandbox then no longer swaps the modules they read (``time``,
``random``, ``uuid``, ``os``...) for proxies that refuse a non-deterministic call while an
order runs. What guards them instead: every module whose code runs inside the workflow
imports only modules that cannot make a run differ on replay (below), and every recorded
history replays both under the SDK's full sandbox and under the workers' own
(tests/order/test_replay.py).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pizzeria
from pizzeria.worker import ORDER_MODULE, order_sandbox

PACKAGE = Path(pizzeria.__file__).parent
#: Every module of ours whose code runs inside the order's workflow.
WORKFLOW_MODULES = (
    "workflows",
    "saga",
    "saga_state",
    "attempts",
    "order_steps",
    "order_hold",
    "order_cancel",
    "order_policy",
    "order_refund",
    "order_undo",
    "order_visibility",
    "menu",
    "order_fields",
    "models",
    "text",
    "tuning",
    "failures",
)
#: Imported by the workflow only to name the activities it runs (their code runs on the
#: activity side, outside the workflow).
ACTIVITY_SIDE = {"pizzeria.activities"}
#: What workflow code may import: nothing that reads a clock, randomness, the process or
#: the outside world. From ``datetime`` only ``timedelta`` (a duration, not a clock); from
#: ``sys`` only ``exc_info`` (the exception being handled, the same on every replay).
ALLOWED = {
    "__future__",
    "asyncio",
    "collections",
    "collections.abc",
    "contextlib",
    "contextvars",
    "dataclasses",
    "enum",
    "re",
    "typing",
    "unicodedata",
}
ALLOWED_FROM = {"datetime": {"timedelta"}, "sys": {"exc_info"}}


def imports_in(module: str) -> list[tuple[str, tuple[str, ...]]]:
    """Every import in a module of ours: (module imported, names taken from it)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found: list[tuple[str, tuple[str, ...]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"pizzeria.{module}: a relative import"
            names = tuple(alias.name for alias in node.names)
            if node.module == "pizzeria":  # from pizzeria import menu: the module pizzeria.menu
                found += [(f"pizzeria.{name}", ()) for name in names]
            else:
                found.append((node.module or "", names))
    return found


def refused_import(name: str, names: tuple[str, ...]) -> bool:
    root = name.split(".")[0]
    if root in ("temporalio", "pizzeria") or name in ALLOWED:
        return False
    return not (name in ALLOWED_FROM and names and set(names) <= ALLOWED_FROM[name])


@pytest.mark.parametrize("module", WORKFLOW_MODULES)
def test_workflow_code_imports_nothing_that_differs_on_replay(module: str) -> None:
    refused = [
        f"{name} ({', '.join(names)})" if names else name
        for name, names in imports_in(module)
        if refused_import(name, names)
    ]
    assert refused == [], f"pizzeria.{module} runs in the workflow and imports {refused}"


def test_the_guard_covers_every_module_the_workflow_imports() -> None:
    """A module of ours newly imported by the workflow must join WORKFLOW_MODULES (or be
    the activities', whose code runs outside it)."""
    ours = {
        name
        for module in WORKFLOW_MODULES
        for name, _ in imports_in(module)
        if name.split(".")[0] == "pizzeria"
    }
    assert ours - ACTIVITY_SIDE <= {f"pizzeria.{module}" for module in WORKFLOW_MODULES}


def test_the_guard_refuses_a_clock_randomness_and_the_process() -> None:
    """Guard of the guard: what the sandbox would have refused at run time, refused here."""
    for name, names in [
        ("time", ()),
        ("random", ()),
        ("uuid", ()),
        ("os", ()),
        ("datetime", ("datetime",)),
        ("datetime", ()),
        ("socket", ()),
    ]:
        assert refused_import(name, names), name
    assert not refused_import("datetime", ("timedelta",))


def test_workers_pass_the_order_module_through_the_sandbox() -> None:
    """The reason for the guard above: the order's module is not run again per order."""
    assert ORDER_MODULE == "pizzeria.workflows"
    for context_free in (True, False):
        passed = order_sandbox(context_free, ("extra.module",)).restrictions.passthrough_modules
        assert {ORDER_MODULE, "extra.module"} <= passed
