"""The options several commands share, and the shapes most options take (an on/off flag,
a number within bounds), so each command declares its own in a line or two."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import click

from pizzeria.cli.common import UserError
from pizzeria.models import run_id_given

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]
LEDGER_HELP = (
    "The ledger: a SQLite file or a postgresql:// URL "
    "[default: $PIZZERIA_LEDGER, else ledger.db in $PIZZERIA_DATA_DIR, else .pizzeria/ledger.db]"
)


def ledger_option_of(
    help: str = LEDGER_HELP, name: str = "ledger_location", metavar: str = "FILE|URL", **more: Any
) -> Decorator:
    """``--ledger``; a command whose ledger means something else says so in its help."""
    return click.option("--ledger", name, metavar=metavar, help=help, **more)


def flag_option(*decls: str, help: str) -> Decorator:
    """An on/off option (``--name``, and its parameter's name when it is another)."""
    return click.option(*decls, is_flag=True, help=help)


class WholeNumberRange(click.IntRange):
    """click's range of whole numbers, saying "not a whole number" of text that is none
    (click's own words are "not a valid integer range")."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            number = click.INT.convert(value, param, ctx)
        except click.BadParameter:
            self.fail(f"{value!r} is not a whole number", param, ctx)
        return super().convert(number, param, ctx)


def int_option(
    flag: str, low: int, high: int | None = None, *, name: str | None = None, **more: Any
) -> Decorator:
    """A whole number from ``low`` to ``high`` (None: no ceiling); a default is shown."""
    return _ranged_option(flag, name, WholeNumberRange(low, high), more)


class FiniteFloatRange(click.FloatRange):
    """click's range of numbers, without ``nan`` (it passes every comparison, so every
    range) and ``inf``: a number of seconds, a share, a limit is finite."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            number = click.FLOAT.convert(value, param, ctx)
        except click.BadParameter:
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)


def float_option(
    flag: str, low: float, high: float | None = None, *, name: str | None = None, **more: Any
) -> Decorator:
    """A finite number from ``low`` to ``high`` (None: no ceiling); a default is shown."""
    return _ranged_option(flag, name, FiniteFloatRange(low, high), more)


def _ranged_option(
    flag: str, name: str | None, kind: click.ParamType[Any, Any], more: dict[str, Any]
) -> Decorator:
    if "default" in more:
        more.setdefault("show_default", True)
    decls = (flag, name) if name else (flag,)
    return click.option(*decls, type=kind, **more)


address_option = click.option(
    "--address", help="Temporal address [default: SDK env config, else localhost:7233]"
)
ledger_option = ledger_option_of()
json_option = flag_option("--json", "as_json", help="Print one JSON object")


def _order_number(ctx: click.Context, param: click.Parameter, value: str) -> str:
    # Any other text may name a run (an exercise client's number the order refused), so
    # only a number that names nothing is refused before Temporal is asked.
    if not value.strip():
        raise click.BadParameter("an order number is needed, not an empty string")
    return value


#: The ORDER_NUMBER of a command that looks an order up.
order_number_argument = click.argument("order_number", callback=_order_number)


def _run_id(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return run_id_given(value)
    except ValueError as wrong:
        raise click.BadParameter(str(wrong)) from None


def run_option(help: str) -> Decorator:
    """``--run RUN_ID``: one run of the order number (each placing of it has its own)."""
    return click.option("--run", "run_id", metavar="RUN_ID", callback=_run_id, help=help)


def refuse_shared_ports(taken: dict[str, int]) -> None:
    """One line (exit 2) when two port options name the same port: ``taken`` maps each
    option to its port."""
    twice = sorted(
        (flag, other)
        for flag, number in taken.items()
        for other, same in taken.items()
        if flag < other and number == same
    )
    if twice:
        raise UserError(
            f"{twice[0][0]} and {twice[0][1]} are the same port ({taken[twice[0][0]]}): "
            "each needs its own"
        )
