"""Staff refunds of a completed order (`pizzeria.refunds`): part of what its bill captured
goes back through the payment provider, once per key, never more than was captured, and
both books (the provider's and the ledger's) say the same.

The library runs against a real Temporal server, a real worker and the session's payment
provider; the command and the API route run against a stack of their own (a dev server, a
`pizzeria worker` and `pizzeria api`).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from temporalio.client import Client, WorkflowHandle

from pizzeria.config import DriverSimulation
from pizzeria.ledger import Ledger
from pizzeria.ledger.refunds import staff_refunds
from pizzeria.models import STEP_SEND_BILL, dollars, order_ref
from pizzeria.ops.processes import free_port
from pizzeria.payments.port import MoneyState
from pizzeria.payments.process import LOCAL_SECRET_KEY
from pizzeria.payments.stripe_gateway import StripeGateway
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
from pizzeria.workflows import PizzaOrderWorkflow
from tests.helpers import eventually, failure_of, run_pizzeria
from tests.helpers.api_stack import Api, order_body
from tests.helpers.money_books import CountingGateway, RunMoney, money_of, run_ref

pytestmark = pytest.mark.timeout(240)
BILLED = 3500  # the exercise's three pizzas, 500 off
PROBLEM = "application/problem+json"
AT_ONCE = {"Prefer": "respond-async"}
KEYED = {"Idempotency-Key": "a-key-for-a-wrong-request"}


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
    with pytest.raises(RefundRefused, match=re.escape("$0.00 is left")):
        await refund(completed, 1, key())
    money = await books(gateway, ledger, completed)
    assert money.payment.state == MoneyState.REFUNDED
    assert sorted(r.amount for r in money.refunds) == [1200, BILLED - 1200]
    assert {r.id for r in money.refunds} == {first.refund_id, second.refund_id}
    assert money.ledger.refunded_by_staff == BILLED and money.ledger.money == "refunded"


async def test_more_than_was_captured_is_refused_and_nothing_moves(
    completed, refund, gateway, ledger
) -> None:
    with pytest.raises(RefundRefused, match=re.escape(f"captured {dollars(BILLED)}")):
        await refund(completed, BILLED + 1, key())
    await refund(completed, 3000, key())
    with pytest.raises(RefundRefused, match=re.escape("$5.00 is left")):
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
    with pytest.raises(RefundKeyConflict, match=re.escape("not $8.00")):
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
    with pytest.raises(RefundUnanswered, match="retry with the same key") as lost:
        await refund(completed, 600, chosen, attempts=2)
    said = str(lost.value)  # one line, saying it once
    assert "\n" not in said and said.count("did not answer") == 1, said
    pending = await books(gateway, ledger, completed)
    assert [r.amount for r in pending.refunds] == [600]  # made once, though asked twice
    assert (pending.ledger.refunded_by_staff, pending.ledger.staff_refunds_pending) == (0, 600)
    # Another key meanwhile counts the pending claim as given back.
    with pytest.raises(RefundRefused, match=r"\$6\.00 already went back"):
        await refund(completed, BILLED - 599, key())
    provider_faults("")
    # Another refund meanwhile says which part of "in all" has no answer yet.
    other = await refund(completed, 100, key())
    assert (other.refunded, other.unanswered) == (700, 600)
    made = await refund(completed, 600, chosen)
    assert not made.replayed and made.left == BILLED - 700 and made.unanswered == 0
    money = await books(gateway, ledger, completed)
    assert sorted(r.id for r in money.refunds) == sorted([made.refund_id, other.refund_id])
    assert (money.ledger.refunded_by_staff, money.ledger.staff_refunds_pending) == (700, 0)
    assert money.payment.amount_refunded == 700


async def test_a_provider_that_cannot_be_reached_made_no_refund_and_says_so(
    completed, client, ledger, gateway
) -> None:
    # Connections refused: nothing was sent, so nothing was made ("may or may not" would
    # send the operator to look for a refund that cannot exist). The retry makes it once.
    nowhere = StripeGateway(LOCAL_SECRET_KEY, f"http://127.0.0.1:{free_port()}", timeout=2)
    chosen = key()
    try:
        with pytest.raises(RefundUnanswered) as unreached:
            await refund_order(
                client, ledger, nowhere, number_of(completed), 300, "cold", chosen, attempts=2
            )
    finally:
        await nowhere.close()
    said = str(unreached.value)
    assert "nothing reached it, so the refund of $3.00 is not made" in said, said
    assert "may or may not" not in said
    made = await refund_order(client, ledger, gateway, number_of(completed), 300, "cold", chosen)
    assert made.amount == 300 and not made.replayed
    money = await books(gateway, ledger, completed)
    assert [r.amount for r in money.refunds] == [300]


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


async def test_an_order_terminated_after_its_bill_is_refunded_as_a_completed_one(
    worker, start, activities, refund, gateway, ledger
) -> None:
    """Terminated from outside during its driver search: past its pivot nothing of it is
    undone, so its customer's money comes back only by a refund, which is not refused."""
    activities.driver = DriverSimulation(rounds=600, seconds_per_round=0.1, found_probability=0)
    async with worker():
        handle = await start(sample_order(card=GOOD_CARD, prep_seconds=0))
        ref = await run_ref(handle)
        await eventually(lambda: STEP_SEND_BILL in ledger.run_rows(ref), "the bill", 60)
        await handle.terminate("stopped from outside during the driver search")
    made = await refund(handle, BILLED, key(), reason="the pizza never came")
    assert (made.refunded, made.left) == (BILLED, 0)
    money = await books(gateway, ledger, handle)
    assert money.payment.state == MoneyState.REFUNDED
    assert money.ledger.refunded_by_staff == BILLED


async def test_a_running_order_is_refused_its_bill_has_not_captured_yet(
    start, refund, ledger
) -> None:
    handle = await start(sample_order(card=GOOD_CARD, prep_seconds=0))  # no worker runs it
    with pytest.raises(RefundRefused, match="is RUNNING"):
        await refund(handle, 100, key())


async def test_an_order_that_does_not_exist_is_a_lookup_error(client, ledger, gateway) -> None:
    with pytest.raises(LookupError, match="no order NOPE-"):
        await refund_order(client, ledger, gateway, f"NOPE-{key()}", 100, "why", key())


async def test_an_order_placed_again_has_each_run_refunded_by_its_run_id(
    worker, start, client, task_queue, refund, gateway, ledger
) -> None:
    async with worker():
        first = await start(sample_order(card=GOOD_CARD, prep_seconds=0))
        await first.result()
        first_run = (await first.describe()).run_id
        again = await client.start_workflow(
            PizzaOrderWorkflow.order_pizza,
            sample_order(number_of(first), card=GOOD_CARD, prep_seconds=0),
            id=first.id,
            task_queue=task_queue,
        )
        await again.result()
    second_run = (await again.describe()).run_id
    assert second_run != first_run
    older = await refund(first, 500, key(), run_id=first_run.upper())
    latest = await refund(first, 700, key())  # no run named: the latest run
    assert (older.run_id, older.refunded, older.left) == (first_run, 500, BILLED - 500)
    assert (latest.run_id, latest.refunded, latest.left) == (second_run, 700, BILLED - 700)
    for run, given in ((first_run, 500), (second_run, 700)):
        money = await money_of(gateway, ledger, order_ref(first.id, run))
        assert [r.amount for r in money.refunds] == [given]
        assert money.ledger.refunded_by_staff == given
    with pytest.raises(RefundRefused, match=re.escape(f"{dollars(BILLED - 500)} is left")):
        await refund(first, BILLED, key(), run_id=first_run)
    other = str(uuid.uuid4())
    with pytest.raises(LookupError, match=f"has no run {other}"):
        await refund(first, 100, key(), run_id=other)


async def test_a_run_id_that_is_not_one_is_refused_before_anything_is_asked(
    client, ledger, gateway
) -> None:
    for wrong in ("latest", "1234abcd", "{" + str(uuid.uuid4()) + "}", uuid.uuid4().hex):
        with pytest.raises(RefundInvalid) as refused:
            await refund_order(client, ledger, gateway, "ANY", 100, "why", key(), run_id=wrong)
        assert refused.value.field == "run_id"
    assert gateway.calls == {}


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
    # Far too large, either way: refused as such, not an error of the arithmetic (was a 500).
    assert dollars_to_cents("1.0") == 100  # the JSON number 1e0, as the API reads it
    # Only ASCII digits and a point: no exponent, sign, space, or digits of another script.
    for wrong in (
        "5.001",
        "-1",
        "0",
        "NaN",
        "lots",
        "3.778298201256043e+151",
        "-1e40",
        "1e-40",
        "1e1",
        "0.1e1",
        " 2.00 ",
        "+2",
        "\u0661\u0662",
        "\uff15.00",
        "5.",
        ".5",
    ):
        with pytest.raises(RefundInvalid, match="amount"):
            dollars_to_cents(wrong)


# -- the command and the API route, on a stack of their own -----------------------------------


@pytest.fixture
async def http(api: Api) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api.url, timeout=60) as client:
        yield client


async def staff_order(http: httpx.AsyncClient, api: Api, card: str = GOOD_CARD) -> tuple[str, str]:
    """An order staff place with a number of their own, followed until it closed: (its
    number, its customer's token)."""
    number = f"REFUND-{uuid.uuid4().hex[:8]}"
    answer = await http.post(
        "/orders", json=order_body(number, card), headers={**api.staff, **AT_ONCE}
    )
    assert answer.status_code == 202, answer.text
    token: str = answer.json()["order_token"]

    async def closed() -> bool:
        view = await http.get(f"/orders/{number}", headers=api.staff)
        return bool(view.json()["status"] != "RUNNING")

    await eventually(closed, f"order {number} to close", 90, 0.2)
    return number, token


def refund_post(
    http: httpx.AsyncClient, number: str, body: dict[str, Any], headers: dict[str, str]
) -> Any:
    return http.post(f"/orders/{number}/refunds", json=body, headers=headers)


async def test_staff_refund_an_order_once_per_key_over_http_and_its_view_shows_it(
    http, api
) -> None:
    number, _ = await staff_order(http, api)
    chosen = {**api.staff, "Idempotency-Key": key()}
    body = {"amount": "5.00", "reason": "one pizza arrived cold"}
    first = await refund_post(http, number, body, chosen)
    assert first.status_code == 201, first.text
    made = first.json()
    assert (made["amount"], made["captured"], made["refunded"], made["left"]) == (
        500,
        BILLED,
        500,
        3000,
    )
    assert made["refund_id"].startswith("re_") and made["replayed"] is False
    view = (await http.get(f"/orders/{number}", headers=api.staff)).json()
    assert made["run_id"] == view["run_id"]
    named = await refund_post(
        http,
        number,
        {"amount_cents": 1, "reason": "its run named", "run_id": made["run_id"]},
        {**api.staff, "Idempotency-Key": key()},
    )
    assert named.status_code == 201 and named.json()["run_id"] == made["run_id"], named.text
    again = await refund_post(http, number, {"amount_cents": 500, "reason": "cold"}, chosen)
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["refund_id"] == made["refund_id"]
    other = await refund_post(http, number, {"amount_cents": 600, "reason": "cold"}, chosen)
    assert other.status_code == 422 and other.headers["content-type"] == PROBLEM
    assert other.json()["type"].endswith("idempotency-key-reused")
    beyond = await refund_post(
        http,
        number,
        {"amount_cents": 3000, "reason": "all"},
        {**api.staff, "Idempotency-Key": key()},
    )
    assert beyond.status_code == 409 and beyond.headers["content-type"] == PROBLEM
    assert "$29.99 is left" in beyond.json()["detail"]
    view = (await http.get(f"/orders/{number}", headers=api.staff)).json()
    assert sorted((r["amount"], r["state"]) for r in view["refunds"]) == [
        (1, "refunded"),
        (500, "refunded"),
    ]
    assert made["refund_id"] in {r["refund_id"] for r in view["refunds"]}
    assert view["ledger"]["billed"] == BILLED
    assert view["ledger"]["refunded_by_staff"] == 501  # the money block says it too


async def test_a_customers_token_cannot_refund_and_nothing_moves(http, api) -> None:
    number, token = await staff_order(http, api)
    body = {"amount_cents": 100, "reason": "I want my money"}
    as_customer = {"Authorization": f"Bearer {token}", "Idempotency-Key": key()}
    refused = await refund_post(http, number, body, as_customer)
    assert refused.status_code == 403 and refused.headers["content-type"] == PROBLEM
    anonymous = await refund_post(http, number, body, {"Idempotency-Key": key()})
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
    forged = {"Authorization": "Bearer not-a-token", "Idempotency-Key": key()}
    assert (await refund_post(http, number, body, forged)).status_code == 401
    view = await http.get(f"/orders/{number}", headers={"Authorization": f"Bearer {token}"})
    assert view.status_code == 200 and view.json()["refunds"] == []


@pytest.mark.parametrize(
    ("body", "headers", "status", "field"),
    [
        ({"amount_cents": 100, "reason": "x"}, {}, 422, "Idempotency-Key"),
        ({"amount_cents": 100, "amount": "1.00", "reason": "x"}, KEYED, 422, "amount_cents"),
        ({"reason": "x"}, KEYED, 422, "amount_cents"),
        ({"amount_cents": 0, "reason": "x"}, KEYED, 422, "amount"),
        ({"amount": "1.005", "reason": "x"}, KEYED, 422, "amount"),
        ({"amount_cents": "100", "reason": "x"}, KEYED, 422, "amount_cents"),
        ({"amount_cents": 100, "reason": "cold\u202e"}, KEYED, 422, "reason"),
        ({"amount_cents": 100}, KEYED, 422, "reason"),
        ({"amount_cents": 100, "reason": "x", "run_id": "latest"}, KEYED, 422, "run_id"),
        ({"amount_cents": 100, "reason": "x", "run_id": "a" * 37}, KEYED, 422, "run_id"),
    ],
)
async def test_a_wrong_refund_request_is_a_problem_naming_its_field(
    http, api, body, headers, status, field
) -> None:
    answer = await refund_post(http, "ANY-ORDER", body, {**api.staff, **headers})
    assert answer.status_code == status and answer.headers["content-type"] == PROBLEM
    assert field in json.dumps(answer.json()), answer.text


async def test_refunds_of_an_unknown_or_a_failed_order_are_refused(http, api) -> None:
    unknown = await refund_post(
        http, "NO-SUCH-ORDER", {"amount_cents": 1, "reason": "x"}, {**api.staff, **KEYED}
    )
    assert unknown.status_code == 404
    number, _ = await staff_order(http, api, card=BAD_CARD)
    failed = await refund_post(
        http, number, {"amount_cents": 1, "reason": "x"}, {**api.staff, "Idempotency-Key": key()}
    )
    assert failed.status_code == 409 and "FAILED" in failed.json()["detail"]


async def test_the_command_refunds_once_per_key_and_status_shows_the_refunds(http, api) -> None:
    number, _ = await staff_order(http, api)
    chosen = key()
    args = ("refund", number, "12.50", "--reason", "late delivery", "--key", chosen)
    done = await asyncio.to_thread(run_pizzeria, *args, env=api.env)
    assert done.returncode == 0, done.stderr
    assert f"Order {number}: refunded $12.50 (refund re_" in done.stdout
    assert "captured $35.00, refunded $12.50 in all, $22.50 left" in done.stdout
    again = await asyncio.to_thread(run_pizzeria, *args, env=api.env)
    assert again.returncode == 0 and "was already made" in again.stdout
    beyond = await asyncio.to_thread(
        run_pizzeria, "refund", number, "2251", "--reason", "all", env=api.env
    )
    assert beyond.returncode == 2, beyond.stdout + beyond.stderr
    assert beyond.stderr.startswith("error: ") and len(beyond.stderr.strip().splitlines()) == 1
    assert "$22.50 is left" in beyond.stderr
    status = await asyncio.to_thread(run_pizzeria, "status", number, env=api.env)
    assert status.returncode == 0, status.stderr
    assert "Refunds by staff:" in status.stdout and "$12.50 refunded (refund re_" in status.stdout
    as_json = await asyncio.to_thread(run_pizzeria, "status", number, "--json", env=api.env)
    refunds = json.loads(as_json.stdout)["refunds"]
    assert [(r["amount"], r["state"]) for r in refunds] == [(1250, "refunded")]


async def test_the_command_refunds_the_run_it_names(http, api) -> None:
    number, _ = await staff_order(http, api)
    run = (await http.get(f"/orders/{number}", headers=api.staff)).json()["run_id"]
    args = ("refund", number, "100", "--reason", "cold", "--run", run, "--json")
    done = await asyncio.to_thread(run_pizzeria, *args, env=api.env)
    assert done.returncode == 0, done.stderr
    made = json.loads(done.stdout)
    assert (made["run_id"], made["amount"], made["left"]) == (run, 100, BILLED - 100)
    unknown = str(uuid.uuid4())
    again = ("refund", number, "100", "--reason", "cold", "--run", unknown)
    missing = await asyncio.to_thread(run_pizzeria, *again, env=api.env)
    assert missing.returncode == 1, missing.stdout + missing.stderr
    assert missing.stderr.strip() == f"error: order {number} has no run {unknown}"
    status = ("status", number, "--run", run.upper(), "--json")
    shown = await asyncio.to_thread(run_pizzeria, *status, env=api.env)
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["run_id"] == run and [r["amount"] for r in report["refunds"]] == [100]
    gone = await asyncio.to_thread(run_pizzeria, "status", number, "--run", unknown, env=api.env)
    assert gone.returncode == 1 and "has no run" in gone.stderr, gone.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("ANY", "5.0", "--reason", "x"), "amount: give whole cents"),
        (("ANY", "-5", "--reason", "x"), "amount"),
        (("ANY", "500"), "Missing option '--reason'"),
        (("ANY", "500", "--reason", "tab\there"), "reason: holds control characters"),
        (("ANY", "500", "--reason", "x", "--key", "a key"), "key: 1 to 255"),
        (("ANY", "500", "--reason", "x", "--run", "latest"), "'--run': give the run's whole id"),
    ],
)
def test_a_wrong_refund_command_is_one_line_and_exit_2(
    stack, args: tuple[str, ...], message: str
) -> None:
    done = run_pizzeria("refund", *args, env=stack["env"])
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1
    assert message in done.stderr


def test_the_help_says_how_to_write_the_amount() -> None:
    done = run_pizzeria("refund", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "whole cents (500) or dollars with two decimals (5.00 or $5.00)" in text


def test_dollars_are_said_exactly_however_large() -> None:
    assert [dollars(c) for c in (0, 5, 1500, -250, 123456789)] == [
        "$0.00",
        "$0.05",
        "$15.00",
        "-$2.50",
        "$1,234,567.89",
    ]
    # 10**30 cents went through a float: "$9,999,999,999,999,999,583,119,736,832.00".
    assert dollars(10**30) == "$10,000,000,000,000,000,000,000,000,000.00"
    assert dollars(2**53 + 1) == "$90,071,992,547,409.93"
    assert dollars(None) == "-"
