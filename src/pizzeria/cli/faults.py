"""``pizzeria faults``: make steps or compensations fail on purpose."""

from __future__ import annotations

import click

from pizzeria import config
from pizzeria.cli.common import UserError, out
from pizzeria.temporal.faults import (
    FILE_WAY_OUT,
    EnvironmentFaultError,
    Fault,
    FaultPlan,
    FaultSyntaxError,
    parse_faults,
    write_faults,
)


@click.group(name="faults")
def faults() -> None:
    """Make steps or compensations fail on purpose (read by workers at each attempt)."""


@faults.command("set")
@click.argument("spec")
def faults_set(spec: str) -> None:
    """Turn faults on: SPEC is STEP=MODE[:N][@RATE], several separated by commas.

    MODE is fail, timeout, refuse, decline, out_of_stock, lost or late (docs/faults.md).
    The faults already set stay, unless SPEC sets the same step and mode again; `pizzeria
    faults clear` turns them all off.
    """
    try:
        new = parse_faults(spec)
    except FaultSyntaxError as error:
        raise UserError(str(error)) from None
    if not new:
        raise UserError("give at least one fault, STEP=MODE (`pizzeria faults clear` clears)")
    merged = {**faults_in_force(FaultPlan(config.faults_file(), env_value="")), **new}
    write_faults(config.faults_file(), merged)
    out.print("Faults: " + ", ".join(str(f) for f in merged.values()))


@faults.command("clear")
def faults_clear() -> None:
    """Turn every fault off."""
    write_faults(config.faults_file(), {})
    out.print("Faults cleared.")


@faults.command("show")
def faults_show() -> None:
    """List the faults in force (file and PIZZERIA_FAULTS)."""
    current = faults_in_force(FaultPlan(config.faults_file()))
    out.print("Faults: " + (", ".join(str(f) for f in current.values()) or "none"))


def faults_in_force(plan: FaultPlan) -> dict[str, Fault]:
    """The plan's faults; a file that cannot be read is one line naming it and the way out
    (every step of every order fails while it is there, docs/faults.md)."""
    try:
        faults = plan.current()
    except EnvironmentFaultError as error:  # `clear` empties the file, not the variable
        raise UserError(str(error)) from None
    except FaultSyntaxError as error:
        raise UserError(f"{error}; {FILE_WAY_OUT}") from None
    if plan.refusal is not None:  # another user could have written it: never obeyed
        raise UserError(plan.refusal)
    return faults
