"""One run of an order as the three books see it: the record every rule reads.

Every run either side knows becomes a `RunView`: what Temporal says it became (its
`OrderRecord`, or None for a run Temporal does not know), what its order asked for
(`Asked`: the recipe, the billed amount and the card, computed from the order's items with
the menu, never read from the ledger), what the ledger shows (its rows added up, a
`pizzeria.ledger.RunRows`), and the payment provider's records of its holds, captures and
refunds (`RunView.money`, a `provider.RunMoney` filled in by `provider.attach` when the
provider was read). The rules (`rules`, `money_rules`) each read one view and write what
they find into `Findings`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from pizzeria import menu, order_fields
from pizzeria.history.reader import ENDED_FROM_OUTSIDE
from pizzeria.ledger import RunRows
from pizzeria.models import PizzaOrder, order_number_of, split_order_ref
from pizzeria.ops.check.provider import RunMoney
from pizzeria.ops.check.records import COMPLETED, OPEN, OrderRecord
from pizzeria.ops.check.report import Violation

# Who holds stock taken by a run that did not put it back, by what the run became.
HOLDERS = ("consumed", "open", "undone", "unknown")


@dataclass(frozen=True)
class Asked:
    """What a run's order asks of the ledger, from its items and the menu alone."""

    recipe: dict[str, int]  # portions to take out of stock
    amount: int  # cents to charge and bill, the discount included
    #: The last four digits of the card to charge (as the ledger stores them); None for an
    #: order paid with the payment provider's token (the order page's), which holds no
    #: number: the card is then whichever the token stands for, and the provider's books
    #: are checked by the payment's own id.
    card: str | None
    #: What the same items cost at the menu's prices (the discount included); None when
    #: an item names no size of the menu.
    at_menu_prices: int | None = None


def asked_of(order: PizzaOrder) -> Asked | str:
    """What the order asks for, or why it cannot be said (then it may take no effect).

    Only the recipe and the prices: the rest of today's validation may be stricter than
    the one an older order passed, and it is not the ledger's business.
    """
    try:
        recipe = menu.ingredients_for(order.items)
        amount = menu.billed_for(order.items)
        number = order.credit_card_info.number
        prices = [menu.menu_price(item.description) for item in order.items]
        known = [price for price in prices if price is not None]
        at_menu_prices = menu.billed_amount(sum(known)) if len(known) == len(prices) else None
        return Asked(recipe, amount, number[-4:] if number else None, at_menu_prices)
    except order_fields.OrderRejected as rejected:
        return f"the menu refuses its order: {rejected}"
    except Exception as error:  # fields of the wrong type: the workflow refused it too
        return f"its order is malformed: {type(error).__name__}"


@dataclass
class RunView:
    """One run of an order as both sides see it: the record every rule reads."""

    ref: str
    order_number: str
    run_id: str
    record: OrderRecord | None  # None: the ledger has rows of a run Temporal does not know
    ledger: RunRows
    asked: Asked | None = None  # None: Temporal does not know the run, or its order is unread
    order_problem: str = ""  # why ``asked`` is None for a run Temporal knows
    money: RunMoney | None = None  # None: the payment provider was not read

    @property
    def status(self) -> str | None:
        return self.record.status if self.record else None

    @property
    def wrote(self) -> bool:
        """Wrote a row that is not a tombstone."""
        return sum(self.ledger.rows.values()) > 0

    @property
    def touches_ledger(self) -> bool:
        """Holds money, a bill or stock (a tombstone alone is harmless)."""
        money = self.ledger
        return bool(money.charged or money.refunded or money.billed or +money.held)

    @property
    def undone(self) -> bool:
        """Closed without completing: it must have undone every effect (but when it was
        ended from outside past its pivot, `ended_past_its_bill`)."""
        return (
            self.record is not None
            and self.status not in (COMPLETED, OPEN)
            and not self.ended_past_its_bill
        )

    @property
    def ended_past_its_bill(self) -> bool:
        """Ended from outside (terminated, timed out) after its bill: past its pivot an
        order only goes forward, so nothing of it was to be undone; the card was charged
        and the pizza made, and whether it came is the operator's to settle (a refund)."""
        return self.status in ENDED_FROM_OUTSIDE and self.ledger.billed > 0

    @property
    def holder(self) -> str:
        """Who holds the stock this run still holds (see `HOLDERS`)."""
        if self.record is None:
            return "unknown"
        if self.ended_past_its_bill:
            return "consumed"
        return {COMPLETED: "consumed", OPEN: "open"}.get(self.status or "", "undone")


@dataclass
class Findings:
    """What the rules found, and the tallies the report adds up."""

    require_closed: bool = False
    violations: list[Violation] = field(default_factory=list)
    warnings: list[Violation] = field(default_factory=list)
    double_effects: int = 0
    refunds_above_charges: int = 0
    held_by: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    settled: Counter[str] = field(default_factory=Counter)  # charged - refunded as it must be
    open_orders: list[str] = field(default_factory=list)

    def violation(self, kind: str, run: RunView, detail: str) -> None:
        self.violations.append(Violation(kind, run.order_number, run.run_id, detail))

    def double_effect(self, run: RunView, detail: str) -> None:
        self.double_effects += 1
        self.violation("double effect", run, detail)


RunRule = Callable[[RunView, Findings], None]


def run_views(records: list[OrderRecord], runs: dict[str, RunRows]) -> list[RunView]:
    """Every run Temporal knows (in its order), then every other run the ledger holds."""
    views: dict[str, RunView] = {}
    for record in records:
        ref = record.order_ref
        number = order_number_of(record.workflow_id)
        ledger = runs.get(ref) or RunRows(ref)
        view = views.setdefault(ref, RunView(ref, number, record.run_id, record, ledger))
        asked = asked_of(record.order) if record.order is not None else record.unreadable
        if isinstance(asked, Asked):
            view.asked = asked
        else:
            view.order_problem = asked or record.undecryptable or "its history holds no order"
    for ref, ledger in runs.items():
        if ref not in views:
            workflow_id, run_id = split_order_ref(ref)
            number = order_number_of(workflow_id) or ledger.order_number
            views[ref] = RunView(ref, number, run_id, None, ledger)
    return list(views.values())
