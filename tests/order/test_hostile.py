"""Hostile starts: whatever the bytes and however many arguments, an order closes at once.

Sent straight to ``PizzaOrderWorkflow`` (as any client of the exercise can), JSON nested a
thousand levels deep, ciphertext that cannot be opened, no argument or two, fail the
order within seconds with a non-retryable ``InvalidOrderError``: before any effect, on
the first workflow task (none retried), and the worker serves the next good order.

Not the customer's fault, and so not failed: a well-formed payload under a key this
worker lacks (a key rotation half done) waits, visibly, for a worker that has the key.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import subprocess
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio import workflow
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import RawValue
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from pizzeria import menu, order_fields
from pizzeria.cli.orders import render_report
from pizzeria.client import OrderRefused, abandon_order
from pizzeria.history.timeline import order_report
from pizzeria.ledger import LateStepRefused, Ledger, open_ledger
from pizzeria.models import STEPS, PizzaOrder, order_number_of, order_ref, workflow_id_for
from pizzeria.ops.check.reconcile import reconcile
from pizzeria.ops.check.records import order_record
from pizzeria.ops.processes import free_port
from pizzeria.payments.port import MoneyState
from pizzeria.samples import GOOD_CARD, sample_order
from pizzeria.temporal.codec import (
    ENCODING,
    KEY_ID,
    NONCE_BYTES,
    CodecKeyError,
    EncryptionCodec,
    key_id_of,
)
from pizzeria.temporal.converter import StrictPayloadConverter
from pizzeria.temporal.faults import parse_faults, write_faults
from pizzeria.worker import ServedActivities, build_worker
from tests.helpers import eventually, failure_of, pizzeria, run_pizzeria, unique_number
from tests.helpers.money_books import money_of
from tests.helpers.orders import exercise_json

pytestmark = pytest.mark.timeout(120)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(100, 132))  # a key the test worker does not have
KEYS = [(key_id_of(KEY), KEY)]
BOTH_KEYS = [(key_id_of(OTHER_KEY), OTHER_KEY), *KEYS]
CLOSES_WITHIN = 10  # seconds


def good_order(number: str | None = None) -> dict[str, Any]:
    order = exercise_json(GOOD_CARD)
    order["order_number"] = number or unique_number("HOSTILE")
    order["settings"] = {"prep_seconds": 0}
    return order


def json_payload(data: bytes | str) -> Payload:
    raw = data.encode() if isinstance(data, str) else data
    return Payload(metadata={"encoding": b"json/plain"}, data=raw)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def with_field(name: str, json_text: str) -> str:
    """The good order, as JSON text, with one field set to raw JSON text."""
    order = good_order()
    order.pop(name, None)
    return json.dumps(order)[:-1] + f', "{name}": {json_text}}}'


def encrypted(data: bytes, key_id: bytes | None) -> Payload:
    metadata = {"encoding": ENCODING}
    if key_id is not None:
        metadata[KEY_ID] = key_id
    return Payload(metadata=metadata, data=data)


def sealed(plain: bytes, key: bytes = KEY) -> Payload:
    """``plain`` encrypted as the codec does, whether or not it is a payload inside."""
    nonce = os.urandom(NONCE_BYTES)
    return encrypted(nonce + AESGCM(key).encrypt(nonce, plain, None), key_id_of(key).encode())


def tampered(payload: Payload) -> Payload:
    data = bytearray(payload.data)
    data[-1] ^= 0x01
    return Payload(metadata=payload.metadata, data=bytes(data))


def good_sealed(key: bytes = KEY, order: dict[str, Any] | None = None) -> Payload:
    return sealed(json_payload(json.dumps(order or good_order())).SerializeToString(), key)


HOSTILE_STARTS: dict[str, Callable[[], list[Payload]]] = {
    "JSON nested 1000 deep in a field the contract ignores": lambda: [
        json_payload(with_field("coupon", nested(1000)))
    ],
    "JSON nested 1000 deep as the items": lambda: [json_payload(with_field("items", nested(1000)))],
    "JSON objects nested 1000 deep as the card": lambda: [
        json_payload(with_field("credit_card_info", '{"a":' * 1000 + "1" + "}" * 1000))
    ],
    "JSON nested 100000 deep": lambda: [json_payload(nested(100_000))],
    "JSON nested 1000 deep, encrypted under the worker's key": lambda: [
        sealed(json_payload(with_field("coupon", nested(1000))).SerializeToString())
    ],
    "no argument": lambda: [],
    "two orders": lambda: [json_payload(json.dumps(good_order()))] * 2,
    "two unreadable arguments": lambda: [json_payload(b"{"), json_payload(b"\xff")],
    "encrypted, naming no key": lambda: [encrypted(os.urandom(80), None)],
    "encrypted, naming an empty key id": lambda: [encrypted(os.urandom(80), b"")],
    "encrypted, naming a key id that is not text": lambda: [encrypted(os.urandom(80), b"\xff\0")],
    "encrypted, too short to be ciphertext": lambda: [
        encrypted(os.urandom(20), key_id_of(OTHER_KEY).encode())
    ],
    "encrypted garbage under the worker's key": lambda: [
        encrypted(os.urandom(80), key_id_of(KEY).encode())
    ],
    "tampered ciphertext under the worker's key": lambda: [tampered(good_sealed())],
    "sealed bytes that are no payload": lambda: [sealed(b"\xff\xff\xff\xff")],
    "sealed nothing": lambda: [sealed(b"")],
}


def with_codec(client: Client, keys: Sequence[tuple[str, bytes]]) -> Client:
    """The test client, with a codec holding ``keys`` (the newest first)."""
    config = client.config()
    codec = EncryptionCodec(keys)
    config["data_converter"] = dataclasses.replace(DataConverter.default, payload_codec=codec)
    return Client(**config)


@pytest.fixture
def keyed_worker(client: Client, served: ServedActivities, task_queue: str) -> Callable[..., Any]:
    """``async with keyed_worker(keys):`` the order worker, decrypting with ``keys``."""

    @asynccontextmanager
    async def running(keys: Sequence[tuple[str, bytes]] = KEYS) -> AsyncIterator[Worker]:
        async with build_worker(with_codec(client, keys), served, task_queue=task_queue) as w:
            yield w

    return running


async def start_raw(
    client: Client, task_queue: str, payloads: list[Payload], workflow_id: str | None = None
) -> WorkflowHandle[Any, Any]:
    """Payloads as they are, through a client without a codec: what any client can send."""
    return await client.start_workflow(
        "PizzaOrderWorkflow",
        args=[RawValue(payload) for payload in payloads],
        id=workflow_id or workflow_id_for(unique_number("HOSTILE")),
        task_queue=task_queue,
    )


async def workflow_task_attempts(handle: WorkflowHandle[Any, Any]) -> list[int]:
    """The attempt of every workflow task scheduled, and -1 for each one that failed."""
    attempts = []
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
            attempts.append(event.workflow_task_scheduled_event_attributes.attempt)
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            attempts.append(-1)
    return attempts


async def no_activity_ran(handle: WorkflowHandle[Any, Any]) -> bool:
    return not [
        event
        async for event in handle.fetch_history_events()
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]


async def completes(client: Client, task_queue: str, ledger: Ledger) -> None:
    """A good order after the hostile one: the worker still serves customers."""
    order = good_order()
    handle = await start_raw(
        client,
        task_queue,
        [json_payload(json.dumps(order))],
        workflow_id_for(order["order_number"]),
    )
    result = await with_codec(client, KEYS).get_workflow_handle(handle.id).result()
    assert result["status"] == "SUCCESS" and result["amount"] == 3500
    assert [(row.charged, row.billed) for row in ledger.orders()] == [(3500, 3500)]


@pytest.mark.parametrize("payloads", list(HOSTILE_STARTS.values()), ids=list(HOSTILE_STARTS))
async def test_a_hostile_start_fails_the_order_at_once_before_any_effect(
    client, keyed_worker, ledger, task_queue, payloads
):
    stock = ledger.stock()
    async with keyed_worker():
        handle = await start_raw(client, task_queue, payloads())
        cause = await failure_of(handle, seconds=CLOSES_WITHIN)
        assert isinstance(cause, ApplicationError), repr(cause)
        assert (cause.type, cause.non_retryable) == ("InvalidOrderError", True), cause.message
        assert cause.message.startswith("Cannot read the order"), cause.message
        assert len(cause.message) < 400  # one line a person can read, not the input back
        assert await workflow_task_attempts(handle) == [1]  # one task, never retried
        assert await no_activity_ran(handle)
        assert ledger.effects() == [] and ledger.stock() == stock
        await completes(client, task_queue, ledger)


async def test_an_order_under_a_key_the_worker_lacks_waits_for_a_worker_with_the_key(
    client, keyed_worker, ledger, task_queue
):
    """A key rotation half done: clients encrypt with a new key that this worker lacks."""
    stock = ledger.stock()
    missing = key_id_of(OTHER_KEY)
    order = good_order()
    handle = await start_raw(
        client, task_queue, [good_sealed(OTHER_KEY, order)], workflow_id_for(order["order_number"])
    )
    async with keyed_worker(KEYS):

        async def stuck() -> Any:
            return (await order_report(client, handle))["failing_workflow_task"]

        failing = await eventually(stuck, "the workflow task to fail", seconds=CLOSES_WITHIN)
    assert missing in failing["error"] and "does not have" in failing["error"], failing
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING  # not failed
    assert await no_activity_ran(handle)
    assert ledger.effects() == [] and ledger.stock() == stock
    async with keyed_worker(BOTH_KEYS):  # the rotation completed: the order goes on
        result = await with_codec(client, BOTH_KEYS).get_workflow_handle(handle.id).result()
    assert result["status"] == "SUCCESS" and result["amount"] == 3500
    assert [(row.charged, row.billed) for row in ledger.orders()] == [(3500, 3500)]


async def test_one_order_number_is_one_order_whatever_the_workflow_id(
    client, keyed_worker, ledger, task_queue
):
    """Two starts of one order under two ids would both charge the card: only the id the
    number gives is served, the other is refused before any effect."""
    order = good_order()
    order["settings"] = {"prep_seconds": 2}
    number = order["order_number"]
    payload = [json_payload(json.dumps(order))]
    async with keyed_worker():
        first = await start_raw(client, task_queue, payload, workflow_id_for(number))
        for other_id in (workflow_id_for(number) + "-again", f"order-{number}", number):
            other = await start_raw(client, task_queue, payload, other_id)
            cause = await failure_of(other, seconds=CLOSES_WITHIN)
            assert isinstance(cause, ApplicationError) and cause.non_retryable
            assert cause.type == "InvalidOrderError"
            assert f"must run as workflow {workflow_id_for(number)}" in cause.message
            assert await no_activity_ran(other)
        result = await with_codec(client, KEYS).get_workflow_handle(first.id).result()
    assert result["amount"] == 3500
    assert [(row.charged, row.billed) for row in ledger.orders()] == [(3500, 3500)]


# -- the decoder, fuzzed: codec, then strict converter, as the worker reads an order -------


STRICT = StrictPayloadConverter()
CODEC = EncryptionCodec(KEYS)


def read_as_the_worker(payload: Payload) -> PizzaOrder | None:
    """Decrypt and decode one start argument as an order: the order (or None, JSON null),
    or the `ApplicationError` that fails the order; a key the worker lacks raises
    `CodecKeyError` (the workflow task fails and waits); anything else is a bug."""
    (decoded,) = asyncio.run(CODEC.decode([payload]))
    (order,) = STRICT.from_payloads([decoded], [PizzaOrder])
    assert order is None or isinstance(order, PizzaOrder)
    return order


def assert_read_or_refused(payload: Payload) -> None:
    try:
        order = read_as_the_worker(payload)
    except ApplicationError as refused:
        assert (refused.type, refused.non_retryable) == ("InvalidOrderError", True)
        assert refused.message.startswith("Cannot read the order: ")
        return
    except CodecKeyError as waiting:
        # Only a well-formed payload naming a key this worker lacks may wait.
        key_id = payload.metadata[KEY_ID].decode()
        assert payload.metadata["encoding"] == ENCODING
        assert key_id not in dict(KEYS) and key_id in str(waiting)
        assert len(payload.data) >= 28
        return
    # What decodes is then either a valid order or refused by the menu, nothing else.
    with contextlib.suppress(order_fields.OrderRejected):
        menu.validate_order(order)  # type: ignore[arg-type]


ENCODINGS = st.sampled_from(
    [b"json/plain", ENCODING, b"binary/null", b"binary/plain", b"json/protobuf", b"", b"x/y"]
)
KEY_IDS = st.one_of(
    st.none(),
    st.binary(max_size=16),
    st.sampled_from([key_id_of(KEY).encode(), key_id_of(OTHER_KEY).encode(), b""]),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=300), encoding=ENCODINGS, key_id=KEY_IDS)
def test_any_bytes_decode_into_an_order_or_a_refusal(data: bytes, encoding: bytes, key_id):
    metadata = {"encoding": encoding}
    if key_id is not None:
        metadata[KEY_ID] = key_id
    assert_read_or_refused(Payload(metadata=metadata, data=data))


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300))
def test_any_bytes_sealed_under_the_workers_key_decode_into_an_order_or_a_refusal(data: bytes):
    assert_read_or_refused(sealed(data))
    assert_read_or_refused(sealed(json_payload(data).SerializeToString()))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
FIELDS = st.sampled_from(
    ["items", "customer", "credit_card_info", "address", "settings", "order_number", "coupon"]
)


@settings(max_examples=300, deadline=None)
@given(field=FIELDS, value=JSON)
def test_any_json_in_any_field_decodes_into_an_order_or_a_refusal(field: str, value: Any):
    text = with_field(field, json.dumps(value))
    assert_read_or_refused(json_payload(text))
    assert_read_or_refused(sealed(json_payload(text).SerializeToString()))


@settings(max_examples=60, deadline=None)
@given(
    depth=st.integers(min_value=1, max_value=5000),
    opener=st.sampled_from(["[", '{"a":', '[{"b":']),
    field=FIELDS,
)
def test_json_nested_to_any_depth_decodes_into_an_order_or_a_refusal(
    depth: int, opener: str, field: str
):
    closer = {"[": "]", '{"a":': "}", '[{"b":': "}]"}[opener]
    deep = opener * depth + "1" + closer * depth
    assert_read_or_refused(json_payload(deep))
    assert_read_or_refused(json_payload(with_field(field, deep)))


# -- an order stuck anyway: status shows why, repair --abandon ends it safely -------------


@workflow.defn(name="PizzaOrderWorkflow", sandboxed=False)
class BadDeploy:
    """A deploy that changed the order's steps without a patch: replaying an order the
    real code started fails (nondeterminism) on every attempt of its workflow task."""

    @workflow.run
    async def run(self, order: Any) -> None:
        await workflow.sleep(3600)  # a timer, where the history holds an activity


STUCK_ON_DEV_SERVER = pytest.mark.dev_server_only(
    "on the time-skipping test server the bad deploy's workflow task twice did not fail in "
    "time (waits of 30 s and 90 s, on a loaded machine); runs on the dev server"
)


async def stuck_after(
    client: Client, worker: Any, start: Any, ledger: Ledger, faults_file: Any, step: str
) -> WorkflowHandle[Any, Any]:
    """An order whose ``step`` keeps failing (retried), then a bad deploy: stuck for good,
    holding what the steps before ``step`` did."""
    write_faults(faults_file, parse_faults(f"{step}=fail"))
    before = STEPS[STEPS.index(step) - 1]
    # No workflow cache: the next workflow task goes to the task queue, not to this
    # worker's sticky queue, so the bad deploy gets it once this worker is gone.
    async with worker(max_cached_workflows=0) as serving:
        handle = await start(sample_order(card=GOOD_CARD, prep_seconds=0))

        def reached() -> bool:
            return any(effect["step"] == before for effect in ledger.effects())

        await eventually(reached, f"the order to reach {step}")
        task_queue = serving.task_queue
    async with Worker(client, task_queue=task_queue, workflows=[BadDeploy]):
        await handle.signal("nudge")  # a workflow task: the bad deploy replays the order
        await stuck_report(client, handle)
    stuck: WorkflowHandle[Any, Any] = handle
    return stuck


async def stuck_report(client: Client, handle: WorkflowHandle[Any, Any]) -> dict[str, Any]:
    async def stuck() -> Any:
        report = await order_report(client, handle)
        return report if report["failing_workflow_task"] else None

    # Generous: on a loaded machine the first worker's shutdown and the bad deploy's first
    # poll take their time before the task fails.
    report: dict[str, Any] = await eventually(
        stuck, "the workflow task to keep failing", seconds=90
    )
    return report


@pytest.mark.timeout(240)
@STUCK_ON_DEV_SERVER
async def test_a_stuck_order_shows_its_failing_task_and_abandon_undoes_its_effects(
    client, worker, start, ledger, faults_file, gateway
):
    stock = ledger.stock()
    handle = await stuck_after(client, worker, start, ledger, faults_file, "send_bill")
    number = order_number_of(handle.id)
    report = await order_report(client, handle)
    # Stuck with the stock taken and the card charged.
    (held,) = ledger.orders()
    assert (held.charged, held.billed) == (3500, 0) and held.stock_held
    assert "nondetermin" in report["failing_workflow_task"]["error"].lower(), report
    shown = render_report(report)
    assert shown.startswith(f"Order {number}: RUNNING - STUCK: its workflow task keeps failing")
    assert f"repair {number} --abandon" in shown
    abandoned = await abandon_order(client, ledger, number, gateway=gateway)
    assert (abandoned.status, abandoned.refunded) == ("RUNNING", 3500)
    assert abandoned.put_back == held.stock_held
    description = await handle.describe()
    # The card hold is let go at the provider too: nothing is left to expire.
    money = await money_of(gateway, ledger, order_ref(handle.id, description.run_id))
    assert [p.state for p in money.payments] == [MoneyState.RELEASED]
    assert description.status == WorkflowExecutionStatus.TERMINATED
    (row,) = ledger.orders()
    assert (row.charged - row.refunded, row.billed, row.stock_held) == (0, 0, {})
    assert ledger.stock() == stock
    # What `pizzeria check` finds for this run: nothing wrong.
    record = await order_record(client, handle.id, description.run_id)
    assert record is not None and record.status == "TERMINATED"
    assert reconcile([record], ledger.snapshot()).violations == []
    # A step of that run arriving late changes nothing: a repeat finds its row, the bill
    # (which never ran) is refused.
    ref = order_ref(handle.id, description.run_id)
    assert ledger.charge(ref, number, 3500, "4242").applied is False
    assert ledger.take_stock(ref, number, held.stock_held).applied is False
    with pytest.raises(LateStepRefused):
        ledger.bill(ref, number, 3500, "P1")
    assert ledger.stock() == stock and ledger.orders() == [row]
    again = await abandon_order(client, ledger, number, gateway=gateway)  # nothing left
    assert (again.status, again.refunded, again.put_back) == ("TERMINATED", 0, {})


@pytest.mark.timeout(240)
@STUCK_ON_DEV_SERVER
async def test_a_billed_order_is_not_abandoned_and_a_closed_one_neither(
    client, worker, start, ledger, faults_file
):
    stuck = await stuck_after(client, worker, start, ledger, faults_file, "notify_delivery_driver")
    with pytest.raises(OrderRefused, match="billed"):
        await abandon_order(client, ledger, order_number_of(stuck.id))
    assert (await stuck.describe()).status == WorkflowExecutionStatus.RUNNING
    await stuck.terminate("test: done")
    write_faults(faults_file, {})
    async with worker():
        done = await start(sample_order(card=GOOD_CARD, prep_seconds=0))
        await done.result()
    with pytest.raises(OrderRefused, match=r"already closed \(COMPLETED\)"):
        await abandon_order(client, ledger, order_number_of(done.id))
    assert [(row.charged, row.refunded, row.billed) for row in ledger.orders()] == [
        (3500, 0, 3500),
        (3500, 0, 3500),
    ]


async def test_from_the_cli_a_stuck_order_is_shown_abandoned_and_checked(stack):
    """The operator's way, end to end: `pizzeria status` names the failing task,
    `pizzeria repair --abandon` ends the order, `pizzeria check` finds nothing wrong."""
    number = unique_number("STUCK")
    order = good_order(number)
    plain = await Client.connect(stack["address"])
    handle = await start_raw(
        plain, "pizza-tasks", [good_sealed(OTHER_KEY, order)], workflow_id_for(number)
    )

    def status() -> subprocess.CompletedProcess[str]:
        return pizzeria(stack, "status", number)

    def stuck() -> str | None:
        shown = status().stdout
        return shown if "RUNNING - STUCK" in shown else None  # the number says STUCK too

    shown = await eventually(stuck, "the order to be stuck", interval=0.5)
    assert shown.startswith(f"Order {number}: RUNNING - STUCK: its workflow task keeps failing")
    assert key_id_of(OTHER_KEY) in shown and f"repair {number} --abandon" in shown
    cancel = pizzeria(stack, "cancel", number)
    assert cancel.returncode == 2 and "is stuck" in cancel.stderr, cancel.stderr
    # The payment provider down: one line, and the order is left as it was, to try again.
    down = {**stack["env"], "PIZZERIA_PAYMENTS_URL": f"http://127.0.0.1:{free_port()}"}
    refused = run_pizzeria("repair", number, "--abandon", env=down, timeout=90)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("error: ") and "run the command again once it answers" in line
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    abandon = pizzeria(stack, "repair", number, "--abandon")
    assert abandon.returncode == 0, abandon.stderr
    assert f"Order {number}: abandoned" in abandon.stdout
    assert "put back 0 portions of stock, no card hold to release" in abandon.stdout
    assert (await handle.describe()).status == WorkflowExecutionStatus.TERMINATED
    assert status().stdout.startswith(f"Order {number}: TERMINATED - terminated: abandoned")
    check = pizzeria(stack, "check", "--json")
    assert check.returncode == 0 and json.loads(check.stdout)["ok"] is True, check.stdout
    # Nothing was taken, so tombstones stand in: any late step of that run is refused.
    ledger = open_ledger(stack["data"] / "ledger.db")
    ref = order_ref(handle.id, (await handle.describe()).run_id)
    with pytest.raises(LateStepRefused):
        ledger.take_stock(ref, number, {"dough": 3})
    with pytest.raises(LateStepRefused):
        ledger.charge(ref, number, 3500, "4242")
    with pytest.raises(LateStepRefused):
        ledger.bill(ref, number, 3500, "P1")
    ledger.close()
