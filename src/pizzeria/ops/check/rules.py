"""The invariants between Temporal and the ledger, one small function each, over one shared
record per run.

Every run either side knows is a `views.RunView`: what Temporal says it became, what its
order asked for (computed from its items with the menu, never read from the ledger), and
what the ledger shows. A rule reads one view and writes what it finds into
`views.Findings`; a new invariant is a new function added to `RUN_RULES`. Tallies
(`RUN_TALLIES`) add up what the report shows without judging it; the rule over the whole
stock, which needs every run's tally, is `stock.stock_conserved`.

The third book joined that way: the payment provider's records of each run's holds,
captures and refunds are `RunView.money` beside ``ledger``, and each invariant between it
and the other two is a function of `money_rules.MONEY_RULES`, which runs after `RUN_RULES`.
"""

from __future__ import annotations

from pizzeria.ledger.records import MONEY_OF_STEP
from pizzeria.models import (
    COMPENSATE_REFUND_CUSTOMER,
    COMPENSATE_REVERT_INVENTORY,
    COMPENSATION_OF,
    MONEY_EXPIRED,
    MONEY_REFUNDED,
    MONEY_RELEASED,
    STEP_PROCESS_CREDIT_CARD,
    STEP_UPDATE_INVENTORY,
    dollars,
)
from pizzeria.ops.check.records import COMPLETED, OPEN
from pizzeria.ops.check.report import Violation
from pizzeria.ops.check.views import Findings, RunRule, RunView

# -- rules: one invariant each ---------------------------------------------------------------


def no_step_after_its_compensations_tombstone(run: RunView, found: Findings) -> None:
    for step, compensation in COMPENSATION_OF.items():
        if run.ledger.rows[step] and compensation in run.ledger.tombstones:
            found.double_effects += 1
            found.violation(
                "late effect after tombstone",
                run,
                f"{step} took effect after {compensation} found nothing to undo",
            )


def no_bill_after_the_refund(run: RunView, found: Findings) -> None:
    bill_at, refund_at = run.ledger.bill_at, run.ledger.refund_at
    if bill_at is not None and refund_at is not None and bill_at > refund_at:
        found.double_effects += 1
        found.violation("late effect after tombstone", run, "billed after the charge was refunded")


def no_step_written_twice(run: RunView, found: Findings) -> None:
    for step, count in run.ledger.rows.items():
        if count > 1:
            found.double_effect(run, f"{step} written {count}x")
        elif count and step in run.ledger.tombstones:
            found.double_effect(run, f"{step} written both as a row and as a tombstone")


def rows_under_their_own_keys(run: RunView, found: Findings) -> None:
    """A step writes under ``<order ref>/<step>`` and nowhere else: any other key is a
    row the primary key could not stop from doubling an effect."""
    for key in run.ledger.misfiled:
        found.violation("row under a foreign key", run, f"{key} is not the key of its run and step")


def rows_name_their_order(run: RunView, found: Findings) -> None:
    """Every row of a run names the run's order (the number its history was given): a row
    moved to another number is an effect `ledger` shows under an order that never had it."""
    if run.record is None:
        return  # `no_rows_of_an_unknown_run`'s
    given = getattr(run.record.order, "order_number", None)
    expected = given if isinstance(given, str) else run.order_number
    others = sorted(number for number in run.ledger.numbers if number != expected)
    if others:
        found.violation(
            "row of another order",
            run,
            f"rows of this run name order {', '.join(others)}; the run is order {expected}",
        )


#: What refund_customer leaves a payment it let go of: the hold voided, or found expired,
#: or what was captured refunded.
LET_GO = (MONEY_RELEASED, MONEY_EXPIRED, MONEY_REFUNDED)


def money_rows_say_what_their_step_did(run: RunView, found: Findings) -> None:
    """A hold leaves the money held, a bill captured, the refund of an undelivered order
    refunded: a row saying otherwise tells `ledger` a story the provider never lived."""
    for step, payment_id, state in run.ledger.payments:
        did = MONEY_OF_STEP.get(step)
        if did is not None and state != did:
            found.violation(
                "money state differs from its step",
                run,
                f"{step}'s row says payment {payment_id} is {state}; {step} leaves it {did}",
            )
        elif step == COMPENSATE_REFUND_CUSTOMER and state not in LET_GO:
            found.violation(
                "money state differs from its step",
                run,
                f"{step}'s row says payment {payment_id} is {state or 'nothing'}; {step} "
                f"leaves it {', '.join(LET_GO[:-1])} or {LET_GO[-1]}",
            )


def no_refund_above_the_charge(run: RunView, found: Findings) -> None:
    if run.ledger.refunded > run.ledger.charged:
        found.refunds_above_charges += 1
        found.violation(
            "refund above charge",
            run,
            f"refunded {run.ledger.refunded} of {run.ledger.charged} charged",
        )


def order_readable(run: RunView, found: Findings) -> None:
    """A run that took effect, or completed, had an order the menu accepts."""
    if run.record is None or run.asked is not None:
        return
    if run.wrote or run.status == COMPLETED:
        done = "completed" if run.status == COMPLETED else "wrote to the ledger"
        found.violation("order unreadable", run, f"{run.order_problem}; yet the run {done}")


def stock_taken_is_the_recipe(run: RunView, found: Findings) -> None:
    asked, rows = run.asked, run.ledger
    if asked is None or not (rows.rows[STEP_UPDATE_INVENTORY] or run.status == COMPLETED):
        return
    if dict(rows.taken) != asked.recipe:
        found.violation(
            "stock taken differs from the order",
            run,
            f"took {portions(rows.taken)}; its items need {portions(asked.recipe)}",
        )


def put_back_what_was_taken(run: RunView, found: Findings) -> None:
    rows = run.ledger
    if not rows.rows[COMPENSATE_REVERT_INVENTORY] or rows.put_back == rows.taken:
        return
    detail = f"put back {portions(rows.put_back)}; took {portions(rows.taken)}"
    found.violation("put back differs from stock taken", run, detail)


def charged_the_order_to_its_card(run: RunView, found: Findings) -> None:
    asked, money = run.asked, run.ledger
    if asked is None or not (money.rows[STEP_PROCESS_CREDIT_CARD] or run.status == COMPLETED):
        return
    if money.charged != asked.amount:
        found.violation(
            "charge differs from the order",
            run,
            f"charged {dollars(money.charged)}; its items come to {dollars(asked.amount)}",
        )
    other_cards = sorted({card for card in money.cards if card != asked.card})
    if other_cards and asked.card is not None:
        found.violation(
            "charged to another card",
            run,
            f"charged card ending {', '.join(other_cards)}; the order's card ends {asked.card}",
        )


def completed_order_billed_its_items(run: RunView, found: Findings) -> None:
    asked, money = run.asked, run.ledger
    if run.status == COMPLETED and asked is not None and money.billed != asked.amount:
        found.violation(
            "bill differs from the order",
            run,
            f"billed {dollars(money.billed)}; its items come to {dollars(asked.amount)}",
        )


def completed_order_billed_its_confirmation(run: RunView, found: Findings) -> None:
    """The bill row is what Temporal returned: its amount and its confirmation number."""
    if run.status != COMPLETED or run.record is None:
        return
    confirmation, money = run.record.confirmation, run.ledger
    if confirmation is None:
        found.violation("bill differs from confirmation", run, "its result cannot be read")
        return
    wanted = (confirmation.amount, [confirmation.confirmation_number])
    if (money.billed, money.confirmations) != wanted:
        billed_as = ", ".join(money.confirmations) or "no bill"
        found.violation(
            "bill differs from confirmation",
            run,
            f"billed {dollars(money.billed)} as {billed_as}; Temporal returned "
            f"{dollars(confirmation.amount)} as {confirmation.confirmation_number}",
        )


def completed_order_charged_its_bill(run: RunView, found: Findings) -> None:
    money = run.ledger
    if run.status == COMPLETED and money.net != money.billed:
        found.violation(
            "charge differs from bill",
            run,
            f"charged {money.charged} - refunded {money.refunded} != billed {money.billed}",
        )


def open_order_only_when_allowed(run: RunView, found: Findings) -> None:
    if run.status == OPEN and found.require_closed:
        assert run.record is not None
        found.violation("still open", run, run.record.details or "running")


def undone_order_kept_nothing(run: RunView, found: Findings) -> None:
    if not run.undone:
        return
    assert run.record is not None
    money, kept = run.ledger, []
    if money.net:
        kept.append(f"charged {money.charged} - refunded {money.refunded} = {money.net}")
    if +money.held:
        kept.append(f"holds {sum(money.held.values())} portions of stock")
    if money.billed:
        kept.append(f"billed {money.billed}")
    if not kept:
        if run.record.settled_by_hand is not None:  # nothing kept, but not by the saga
            detail = f"a compensation resolved by hand: {run.record.settled_by_hand}"
            found.warnings.append(
                Violation("resolved by hand", run.order_number, run.run_id, detail)
            )
        return
    detail = f"{run.record.status.lower()} but " + "; ".join(kept)
    if run.record.settled_by_hand is not None and not money.billed:
        detail += f" (resolved by hand: {run.record.settled_by_hand})"
        warning = Violation("settled outside the ledger", run.order_number, run.run_id, detail)
        found.warnings.append(warning)
    else:
        found.violation("effects kept by an undone order", run, detail)


def ended_from_outside_after_its_bill(run: RunView, found: Findings) -> None:
    """Not a violation (nothing was to be undone), but the customer may have paid for a
    pizza that never came: a warning, with what to do."""
    if not run.ended_past_its_bill:
        return
    assert run.record is not None
    money = run.ledger
    detail = (
        f"{run.record.status.lower()} after its bill of {dollars(money.billed)} (refunded "
        f"{dollars(money.refunded_by_staff)}): if the order never reached its customer, give "
        f"the money back with `pizzeria refund {run.order_number} AMOUNT --reason TEXT`"
    )
    found.warnings.append(
        Violation("ended from outside after its bill", run.order_number, run.run_id, detail)
    )


def priced_from_the_menu(run: RunView, found: Findings) -> None:
    """An order that moved money at prices other than the menu's is a warning: today's
    orders are refused before any effect, so one is either an order started before prices
    came from the menu, or one that got past that check (what to look at)."""
    asked, money = run.asked, run.ledger
    if asked is None or asked.at_menu_prices in (None, asked.amount):
        return
    if not (money.charged or money.billed):
        return
    assert asked.at_menu_prices is not None
    detail = (
        f"its items claim {dollars(asked.amount)}; the menu prices them at "
        f"{dollars(asked.at_menu_prices)} (started before prices came from the menu?)"
    )
    found.warnings.append(Violation("priced off the menu", run.order_number, run.run_id, detail))


def no_rows_of_an_unknown_run(run: RunView, found: Findings) -> None:
    """Every row, a tombstone included, belongs to a run Temporal knows."""
    if run.record is None:
        what = "effects" if run.touches_ledger else "rows"
        detail = f"the ledger holds {what} of {run.ref}, which Temporal does not know"
        found.violation("unknown run", run, detail)


RUN_RULES: tuple[RunRule, ...] = (
    no_step_after_its_compensations_tombstone,
    no_bill_after_the_refund,
    no_step_written_twice,
    rows_under_their_own_keys,
    rows_name_their_order,
    money_rows_say_what_their_step_did,
    no_refund_above_the_charge,
    order_readable,
    stock_taken_is_the_recipe,
    put_back_what_was_taken,
    charged_the_order_to_its_card,
    completed_order_billed_its_items,
    completed_order_billed_its_confirmation,
    completed_order_charged_its_bill,
    open_order_only_when_allowed,
    undone_order_kept_nothing,
    ended_from_outside_after_its_bill,
    priced_from_the_menu,
    no_rows_of_an_unknown_run,
)


def portions(ingredients: dict[str, int]) -> str:
    listed = ", ".join(f"{count} {name}" for name, count in sorted(ingredients.items()) if count)
    return listed or "nothing"


# -- tallies: what the report adds up ----------------------------------------------------------


def tally_stock_held(run: RunView, found: Findings) -> None:
    found.held_by[run.holder].update(run.ledger.held)


def tally_settled(run: RunView, found: Findings) -> None:
    """Orders whose charged - refunded is as it must be: the bill, or 0 when undone."""
    money = run.ledger
    if run.status == COMPLETED:
        assert run.record is not None
        confirmed = money.billed if run.record.amount is None else run.record.amount
        found.settled["completed"] += money.net == money.billed == confirmed
    elif run.undone:
        found.settled["undone"] += money.net == 0


def tally_open_orders(run: RunView, found: Findings) -> None:
    """Open orders are counted; one that waits for an operator is named, as a warning."""
    if run.status != OPEN:
        return
    found.open_orders.append(run.order_number)
    assert run.record is not None
    if run.record.needs_attention:
        detail = (
            f"{run.record.details} (`pizzeria repair {run.order_number} --retry` once the "
            "cause is fixed, or `--resolve NOTE`)"
        )
        found.warnings.append(Violation("needs attention", run.order_number, run.run_id, detail))


RUN_TALLIES: tuple[RunRule, ...] = (tally_stock_held, tally_settled, tally_open_orders)
