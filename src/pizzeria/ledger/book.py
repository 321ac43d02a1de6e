"""The ledger's logic, written once: each effect claimed under its key, stock taken only
when it is there. A backend (sqlite.py, postgres.py) adds only how to reach the database,
how to run one transaction, and what to lock; the SQL itself is in sql.py.

Every step is one transaction that first *claims* its idempotency key: an insert that does
nothing when the key exists, after which the existing row is read back and returned with
``applied=False``. The primary key decides, so two workers racing on one key leave one row,
and a transaction retried after a lost connection (which may have committed) finds its own
row instead of taking effect twice. The rest of the transaction then checks that the step
was not compensated already and applies it; any refusal rolls the claim back with it.

Stock is taken with one conditional update per ingredient (``quantity >= n``), never read
and then written, in a fixed ingredient order so that concurrent takes cannot deadlock.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, TypeVar

from pizzeria.ledger import schema
from pizzeria.ledger.records import (
    LATE_PAYMENT_UNDONE,
    REAUTHORIZE_HOLD,
    AlreadyBilled,
    Delivery,
    Effect,
    LedgerError,
    LedgerNotFound,
    LedgerReadOnly,
    LedgerSnapshot,
    OrderLedger,
    per_order_totals,
)
from pizzeria.ledger.sql import (
    Claim,
    Tx,
    already_received,
    claim,
    claim_unless_undone,
    find,
    put_back,
    read_deliveries,
    read_effects,
    read_stock,
    refund,
    release,
    take,
)
from pizzeria.menu import INGREDIENTS
from pizzeria.models import (
    COMPENSATE_REFUND_CUSTOMER,
    COMPENSATE_REVERT_INVENTORY,
    MONEY_HELD,
    MONEY_REFUNDED,
    STEP_PROCESS_CREDIT_CARD,
    STEP_REFUND_UNDELIVERED,
    STEP_SEND_BILL,
    STEP_UPDATE_INVENTORY,
)
from pizzeria.temporal.tracing import span

__all__ = ["SCHEMA_LOCK", "Ledger", "Tx"]  # Tx: its home is sql.py, callers may find it here

T = TypeVar("T")

# Held while a ledger is created or upgraded, so that workers starting together do not
# run the same migration twice.
SCHEMA_LOCK = "pizzeria ledger schema"


class Ledger(ABC):
    """Stock, charges, refunds and bills. Methods block: call them from a thread."""

    #: Said after "no ledger at ...: a worker creates it" when the database exists but
    #: holds none of the ledger's tables (a backend's own hint).
    WITHOUT_TABLES = ""

    def __init__(self, location: str, *, read_only: bool) -> None:
        self.location = location  # for messages: a file path, or a URL without password
        self.read_only = read_only

    # -- what a backend provides -------------------------------------------------------

    @abstractmethod
    def _transaction(
        self, body: Callable[[Tx], T], *, lock: str | None = None, writes: bool = True
    ) -> T:
        """Run ``body`` in one transaction, all of it or nothing. ``lock`` names what no
        other writer may work on meanwhile (one run's steps); ``writes=False`` reads one
        consistent snapshot."""

    @abstractmethod
    def _table_names(self, tx: Tx) -> set[str]: ...

    def _column_names(self, tx: Tx, table: str) -> set[str]:
        """The columns of ``table``: asked only while creating or upgrading the tables."""
        raise NotImplementedError(f"{type(self).__name__} cannot upgrade a ledger")

    @abstractmethod
    def close(self) -> None: ...

    # -- opening -----------------------------------------------------------------------

    def _prepare(self, initial_stock: int) -> None:
        """Writable: create or upgrade the tables and seed missing stock. Read-only: only
        check that a ledger of the current version is there."""
        if self.read_only:
            self._transaction(self._check_readable, writes=False)
            return

        def create_or_upgrade(tx: Tx) -> None:
            tables = self._table_names(tx)
            version = schema.recorded_version(tx, tables)
            schema.refuse_damaged(tables, version, self.location)
            schema.upgrade(tx, version, self.location, lambda t: self._column_names(tx, t))
            for name in INGREDIENTS:
                tx.run(
                    "INSERT INTO stock (ingredient, initial, quantity) VALUES (?, ?, ?)"
                    " ON CONFLICT (ingredient) DO NOTHING",
                    (name, initial_stock, initial_stock),
                )

        self._transaction(create_or_upgrade, lock=SCHEMA_LOCK)

    def _check_readable(self, tx: Tx) -> None:
        tables = self._table_names(tx)
        version = schema.recorded_version(tx, tables)
        if version == 0:  # a database, without the ledger's tables
            raise LedgerNotFound(f"no ledger at {self.location}: {self._who_creates_it(tx)}")
        schema.refuse_other_than_latest(version, self.location)
        schema.refuse_damaged(tables, version, self.location)

    def _who_creates_it(self, tx: Tx) -> str:
        """Said of a place with no ledger yet: who will create it, or what stops them."""
        return f"a worker creates it{self.WITHOUT_TABLES}"

    def schema_version(self) -> int:
        return self._transaction(
            lambda tx: schema.recorded_version(tx, self._table_names(tx)), writes=False
        )

    def _write(self, order_ref: str, body: Callable[[Tx], T]) -> T:
        if self.read_only:
            raise LedgerReadOnly(f"the ledger at {self.location} was opened read-only")
        with span("ledger transaction", order_ref=order_ref, ledger=type(self).__name__):
            return self._transaction(body, lock=order_ref)

    # -- reading -----------------------------------------------------------------------

    def stock(self) -> dict[str, dict[str, int]]:
        return self._transaction(read_stock, writes=False)

    def effects(self, order_ref: str | None = None) -> list[dict[str, Any]]:
        return self._transaction(lambda tx: read_effects(tx, order_ref), writes=False)

    def run_rows(self, order_ref: str) -> dict[str, Effect]:
        """The run's rows (tombstones included) by step, read in one transaction."""

        def body(tx: Tx) -> dict[str, Effect]:
            steps = {row["step"] for row in read_effects(tx, order_ref)}
            return {step: effect for step in steps if (effect := find(tx, order_ref, step))}

        return self._transaction(body, writes=False)

    def orders(self) -> list[OrderLedger]:
        """Per run of an order: charged, refunded and billed amounts, stock still held."""
        return per_order_totals(self.effects())

    def snapshot(self) -> LedgerSnapshot:
        """Stock and every effect read in one transaction: a consistent picture even while
        workers write, so that stock conservation can be checked at any moment."""
        return self._transaction(
            lambda tx: LedgerSnapshot(
                stock=read_stock(tx), effects=read_effects(tx, None), deliveries=read_deliveries(tx)
            ),
            writes=False,
        )

    # -- deliveries --------------------------------------------------------------------

    def receive(self, key: str, ingredient: str, portions: int) -> Delivery:
        """Add a delivery to stock, once per key: a delivery recorded again (a retry after
        a lost answer) finds its row and adds nothing. `DeliveryKeyReused` when the key
        names another delivery; `LedgerError` for an ingredient the ledger does not stock."""
        if self.read_only:
            raise LedgerReadOnly(f"the ledger at {self.location} was opened read-only")

        def body(tx: Tx) -> Delivery:
            now = time.time()
            inserted = tx.run(
                "INSERT INTO deliveries (delivery_key, ingredient, portions, created_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (delivery_key) DO NOTHING",
                (key, ingredient, portions, now),
            )
            if not inserted:
                return already_received(tx, key, ingredient, portions)
            if not tx.run(
                "UPDATE stock SET quantity = quantity + ? WHERE ingredient = ?",
                (portions, ingredient),
            ):
                # Raised inside the transaction: the delivery row is rolled back with it.
                raise LedgerError(f"the ledger at {self.location} stocks no {ingredient!r}")
            return Delivery(key, ingredient, portions, now, applied=True)

        return self._transaction(body)

    # -- inventory ---------------------------------------------------------------------

    def take_stock(self, order_ref: str, order_number: str, ingredients: dict[str, int]) -> Effect:
        """Take an order's ingredients out of stock, once per run."""

        def body(tx: Tx) -> Effect:
            claimed = claim_unless_undone(
                tx,
                Claim(order_ref, order_number, STEP_UPDATE_INVENTORY, ingredients=ingredients),
                undone_by=COMPENSATE_REVERT_INVENTORY,
                refusal=f"inventory for {order_ref} was already reverted; not taking stock now",
            )
            if claimed.applied:
                take(tx, ingredients)
            return claimed

        return self._write(order_ref, body)

    def put_back_stock(self, order_ref: str, order_number: str) -> Effect:
        """Undo `take_stock` of this run; a tombstone when nothing was taken."""
        return self._write(order_ref, lambda tx: put_back(tx, order_ref, order_number))

    # -- money -------------------------------------------------------------------------

    def charge(
        self,
        order_ref: str,
        order_number: str,
        amount: int,
        card_last4: str,
        *,
        payment_id: str = "",
        money_state: str = "",
    ) -> Effect:
        """Record the run's hold (``payment_id``, in ``money_state`` held) once; refused
        when its refund already ran. Without a payment id: a charge in the ledger alone."""
        hold = Claim(
            order_ref, order_number, STEP_PROCESS_CREDIT_CARD, amount, reference=card_last4
        )
        hold.payment_id, hold.money_state = payment_id, money_state
        return self._unless_refunded(hold, "charging")

    def refund(self, order_ref: str, order_number: str) -> Effect:
        """Refund exactly what this run charged in the ledger alone; a tombstone when
        nothing was charged (see `release` for money at a payment provider)."""
        return self._write(order_ref, lambda tx: refund(tx, order_ref, order_number))

    def release(
        self,
        order_ref: str,
        order_number: str,
        *,
        seen_hold: tuple[str | None, str | None],
        payment_id: str = "",
        money_state: str = "",
    ) -> Effect:
        """refund_customer's row once the provider released (or refunded) the run's money:
        the amount held, a tombstone when nothing was held. ``seen_hold``: the payment ids
        of the run's hold and of its renewal as the caller saw them (None: none);
        `HoldChanged` when either changed since: look again."""
        wanted = Claim(order_ref, order_number, "", payment_id=payment_id, money_state=money_state)
        return self._write(order_ref, lambda tx: release(tx, wanted, seen_hold))

    def reauthorized(
        self, order_ref: str, order_number: str, amount: int, payment_id: str, expired: str
    ) -> Effect:
        """The new hold the bill made when the run's first one (``expired``) ran out; once,
        refused once the run's refund ran. Not a second charge: it replaces the first."""
        hold = Claim(order_ref, order_number, REAUTHORIZE_HOLD, amount, reference=expired)
        hold.payment_id, hold.money_state = payment_id, MONEY_HELD
        return self._unless_refunded(hold, "holding again")

    def bill(
        self,
        order_ref: str,
        order_number: str,
        amount: int,
        confirmation: str,
        *,
        payment_id: str = "",
        money_state: str = "",
    ) -> Effect:
        """Record the bill (the capture ``payment_id``) once; refused when the run's
        charge was already compensated.

        The bill is the pivot: once the refund ran, the order is being undone, and a bill
        arriving late (an attempt that outlived its timeout) would bill an undone order.
        """
        billed = Claim(order_ref, order_number, STEP_SEND_BILL, amount, reference=confirmation)
        billed.payment_id, billed.money_state = payment_id, money_state
        return self._unless_refunded(billed, "billing")

    def _unless_refunded(self, wanted: Claim, not_doing: str) -> Effect:
        """``wanted``'s row, written once; refused (`LateStepRefused`) once the run's refund
        ran, saying what is ``not_doing`` now."""
        ref = wanted.order_ref
        return self._write(
            ref,
            lambda tx: claim_unless_undone(
                tx,
                wanted,
                undone_by=COMPENSATE_REFUND_CUSTOMER,
                refusal=f"{ref} was already refunded; not {not_doing} now",
            ),
        )

    def refund_after_bill(
        self, order_ref: str, order_number: str, amount: int, payment_id: str, refund_id: str
    ) -> Effect:
        """A billed order given its money back (no driver took it): once per run."""
        refund = Claim(
            order_ref, order_number, STEP_REFUND_UNDELIVERED, amount, reference=refund_id
        )
        refund.payment_id, refund.money_state = payment_id, MONEY_REFUNDED
        return self._write(order_ref, lambda tx: claim(tx, refund))

    def late_payment_undone(
        self, order_ref: str, order_number: str, amount: int, payment_id: str, money_state: str
    ) -> Effect:
        """A payment a late step made after its compensation ran, and undid at once."""
        undone = Claim(order_ref, order_number, LATE_PAYMENT_UNDONE, amount)
        undone.payment_id, undone.money_state = payment_id, money_state
        return self._write(order_ref, lambda tx: claim(tx, undone))

    # -- an operator's way out ---------------------------------------------------------

    def abandon_run(self, order_ref: str, order_number: str) -> tuple[Effect, Effect]:
        """Both compensations of a run at once, for a run an operator gives up on: the
        stock put back, the charge refunded, each a tombstone when there was nothing, so
        that no step of the run can take effect afterwards (the bill neither: it is refused
        once the refund is written). Refused for a billed run, which only goes forward.
        """

        def body(tx: Tx) -> tuple[Effect, Effect]:
            billed = find(tx, order_ref, STEP_SEND_BILL)
            if billed is not None:
                raise AlreadyBilled(
                    f"{order_ref} was billed {billed.amount} cents: past its pivot an order "
                    "only goes forward, so there is nothing the ledger may undo"
                )
            return put_back(tx, order_ref, order_number), refund(tx, order_ref, order_number)

        return self._write(order_ref, body)
