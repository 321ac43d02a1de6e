"""Staff refunds of a completed order (`pizzeria.refunds`): part of what its bill captured
goes back through the payment provider, once per key, never more than was captured, and
both books (the provider's and the ledger's) say the same.

The library runs against a real Temporal server, a real worker and the session's payment
provider; the command and the API route run against a stack of their own (a dev server, a
`pizzeria worker` and `pizzeria api`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle

from pizzeria.ledger import Ledger
from pizzeria.ledger.refunds import staff_refunds
from pizzeria.payments import process
from pizzeria.payments.port import MoneyState
from pizzeria.refunds import (
    RefundInvalid,
    RefundKeyConflict,
    RefundRefused,
    RefundUnanswered,
    StaffRefund,
    dollars_to_cents,
    parse_amount,
    refund_order,
)
from pizzeria.samples import BAD_CARD, GOOD_CARD, sample_order
from pizzeria.worker import PAYMENTS_TIMEOUT_SECONDS
from tests.helpers import failure_of
from tests.money_books import CountingGateway, RunMoney, money_of, run_ref

BILLED = 3500  # the exercise's three pizzas, 500 off


@pytest.fixture
async def gateway(provider: process.ProviderProcess) -> AsyncIterator[CountingGateway]:
    """The session's provider, counting the calls that move money (the workers' and ours)."""
    counting = CountingGateway(
        process.LOCAL_SECRET_KEY, provider.url, timeout=PAYMENTS_TIMEOUT_SECONDS
    )
    yield counting
    await counting.close()


@pytest.fixture
async def completed(worker: Any, start: Any) -> AsyncIterator[WorkflowHandle[Any, Any]]:
    """A good order, completed: its bill captured the card."""
    async with worker():
        handle = await start(sample_order(card=GOOD_CARD, prep_seconds=0))
        confirmation = await handle.result()
        assert confirmation.amount == BILLED
        yield handle


def number_of(handle: WorkflowHandle[Any, Any]) -> str:
    return handle.id.removeprefix("pizza-workflow-order-")


def key() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


Refund = Callable[..., Any]


@pytest.fixture
def refund(client: Client, ledger: Ledger, gateway: CountingGateway) -> Refund:
    """``await refund(handle, cents, key=..., reason=...)``: `refund_order` on the order."""

    async def refunding(
        handle: WorkflowHandle[Any, Any],
        cents: int,
        key: str,
        reason: str = "a pizza arrived cold",
        **options: Any,
    ) -> StaffRefund:
        return await refund_order(
            client, ledger, gateway, number_of(handle), cents, reason, key, **options
        )

    return refunding


async def books(
    gateway: CountingGateway, ledger: Ledger, handle: WorkflowHandle[Any, Any]
) -> RunMoney:
    return await money_of(gateway, ledger, await run_ref(handle))


# -- refunds that are made -------------------------------------------------------------------


async def test_a_partial_refund_gives_back_that_much_of_the_capture_in_both_books(
    completed, refund, gateway, ledger
) -> None:
    made = await refund(completed, 500, key(), reason="one pizza arrived cold")
    assert (made.amount, made.captured, made.refunded, made.left) == (500, BILLED, 500, 3000)
    assert made.refund_id.startswith("re_") and not made.replayed
    money = await books(gateway, ledger, completed)
    paid = money.payment
    assert (paid.state, paid.amount_captured, paid.amount_refunded) == (
        MoneyState.CAPTURED,
        BILLED,
        500,
    )
    (given,) = [r for r in money.refunds if r.id == made.refund_id]
    assert given.amount == 500 and given.metadata.get("reason") == "one pizza arrived cold"
    assert (money.ledger.refunded_by_staff, money.ledger.staff_refunds_pending) == (500, 0)
    assert money.ledger.misfiled == [] and money.ledger.money == "captured"
    (row,) = staff_refunds(ledger, money.ref)
    assert (row["amount"], row["state"], row["refund_id"]) == (500, "refunded", made.refund_id)


async def test_two_refunds_give_back_all_that_was_captured_and_then_nothing_more(
    completed, refund, gateway, ledger
) -> None:
    first = await refund(completed, 1200, key())
    second = await refund(completed, BILLED - 1200, key())
    assert (second.refunded, second.left) == (BILLED, 0)
    with pytest.raises(RefundRefused, match="0 is left"):
        await refund(completed, 1, key())
    money = await books(gateway, ledger, completed)
    assert money.payment.state == MoneyState.REFUNDED
    assert sorted(r.amount for r in money.refunds) == [1200, BILLED - 1200]
    assert {r.id for r in money.refunds} == {first.refund_id, second.refund_id}
    assert money.ledger.refunded_by_staff == BILLED and money.ledger.money == "refunded"


async def test_more_than_was_captured_is_refused_and_nothing_moves(
    completed, refund, gateway, ledger
) -> None:
    with pytest.raises(RefundRefused, match=f"captured {BILLED}"):
        await refund(completed, BILLED + 1, key())
    await refund(completed, 3000, key())
    with pytest.raises(RefundRefused, match="500 is left"):
        await refund(completed, 501, key())
    money = await books(gateway, ledger, completed)
    assert [r.amount for r in money.refunds] == [3000]
    assert money.ledger.refunded_by_staff == 3000
    assert len(staff_refunds(ledger, money.ref)) == 1  # the refused ones wrote nothing


async def test_the_same_key_again_gets_the_same_refund_and_another_amount_is_refused(
    completed, refund, gateway, ledger
) -> None:
    chosen = key()
    first = await refund(completed, 700, chosen)
    again = await refund(completed, 700, chosen)
    assert again.replayed and again.refund_id == first.refund_id
    assert (again.refunded, again.left) == (700, BILLED - 700)
    with pytest.raises(RefundKeyConflict, match="not 800"):
        await refund(completed, 800, chosen)
    money = await books(gateway, ledger, completed)
    assert [r.amount for r in money.refunds] == [700]
    assert gateway.calls["refund"] == [money.payment.id]  # asked once, the retry was not


async def test_ten_retries_at_once_with_one_key_make_one_refund(
    completed, refund, gateway, ledger
) -> None:
    chosen = key()
    made = await asyncio.gather(*(refund(completed, 900, chosen) for _ in range(10)))
    assert len({m.refund_id for m in made}) == 1
    money = await books(gateway, ledger, completed)
    assert [r.amount for r in money.refunds] == [900]


async def test_a_lost_answer_then_a_retry_with_the_same_key_makes_one_refund(
    completed, refund, gateway, ledger, provider_faults
) -> None:
    chosen = key()
    provider_faults("refund=lost")  # the refund is made, its answer never comes back
    with pytest.raises(RefundUnanswered, match="retry with the same key"):
        await refund(completed, 600, chosen, attempts=2)
    pending = await books(gateway, ledger, completed)
    assert [r.amount for r in pending.refunds] == [600]  # made once, though asked twice
    assert (pending.ledger.refunded_by_staff, pending.ledger.staff_refunds_pending) == (0, 600)
    # Another key meanwhile counts the pending claim as given back.
    with pytest.raises(RefundRefused, match="600 already went back"):
        await refund(completed, BILLED - 599, key())
    provider_faults("")
    made = await refund(completed, 600, chosen)
    assert not made.replayed and made.left == BILLED - 600
    money = await books(gateway, ledger, completed)
    assert [r.id for r in money.refunds] == [made.refund_id]
    assert (money.ledger.refunded_by_staff, money.ledger.staff_refunds_pending) == (600, 0)
    assert money.payment.amount_refunded == 600


async def test_one_lost_answer_is_retried_within_the_call(
    completed, refund, gateway, ledger, provider_faults
) -> None:
    provider_faults("refund=lost:1")
    made = await refund(completed, 250, key())
    money = await books(gateway, ledger, completed)
    assert [r.id for r in money.refunds] == [made.refund_id]
    assert len(gateway.calls["refund"]) == 2  # the lost one, and the retry answered


# -- refunds that are refused ----------------------------------------------------------------


async def test_a_failed_order_is_refused_it_captured_nothing(
    worker, start, refund, gateway, ledger
) -> None:
    async with worker():
        handle = await start(sample_order(card=BAD_CARD, prep_seconds=0))
        await failure_of(handle)
    with pytest.raises(RefundRefused, match="is FAILED: only a completed order"):
        await refund(handle, 100, key())
    assert staff_refunds(ledger, await run_ref(handle)) == []


async def test_a_running_order_is_refused_its_bill_has_not_captured_yet(
    start, refund, ledger
) -> None:
    handle = await start(sample_order(card=GOOD_CARD, prep_seconds=0))  # no worker runs it
    with pytest.raises(RefundRefused, match="is RUNNING"):
        await refund(handle, 100, key())


async def test_an_order_that_does_not_exist_is_a_lookup_error(client, ledger, gateway) -> None:
    with pytest.raises(LookupError, match="no order NOPE-"):
        await refund_order(client, ledger, gateway, f"NOPE-{key()}", 100, "why", key())


@pytest.mark.parametrize(
    ("cents", "reason", "chosen", "field"),
    [
        (0, "cold", "k-1", "amount"),
        (-5, "cold", "k-1", "amount"),
        (100, "   ", "k-1", "reason"),
        (100, "cold\x1b[31m", "k-1", "reason"),
        (100, "x" * 201, "k-1", "reason"),
        (100, "cold", "", "key"),
        (100, "cold", "has space", "key"),
    ],
)
async def test_a_wrong_request_is_refused_before_anything_is_asked(
    client, ledger, gateway, cents, reason, chosen, field
) -> None:
    with pytest.raises(RefundInvalid) as refused:
        await refund_order(client, ledger, gateway, "ANY", cents, reason, chosen)
    assert refused.value.field == field
    assert gateway.calls == {}


def test_amounts_are_whole_cents_or_dollars_with_two_decimals() -> None:
    assert [parse_amount(t) for t in ("500", "5.00", "$5.00", " 12.34 ", "1,000.00")] == [
        500,
        500,
        500,
        1234,
        100000,
    ]
    for wrong in ("5.0", "5.001", "-5", "0", "0.00", "five", "5e2", "$500"):
        with pytest.raises(RefundInvalid, match="amount"):
            parse_amount(wrong)
    assert dollars_to_cents("5.5") == 550 and dollars_to_cents("12") == 1200
    for wrong in ("5.001", "-1", "0", "NaN", "lots"):
        with pytest.raises(RefundInvalid, match="amount"):
            dollars_to_cents(wrong)
