"""Temporal's side of the check: every run of the order workflow, what it was asked, how
it ended.

Each run's history is read once: its first event holds the order the run was given, its
closing event the confirmation it returned or the error it failed with. The payloads are
decoded here, on the client side, with the codec (the server only ever saw ciphertext).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from pizzeria.failures import cause_chain, error_type_of, innermost
from pizzeria.history.reader import ENDED_FROM_OUTSIDE, closed_status
from pizzeria.models import WORKFLOW_TYPE, OrderConfirmation, PizzaOrder, order_ref
from pizzeria.temporal.codec import CodecKeyError
from pizzeria.workflows import PizzaOrderWorkflow

DEFAULT_QUERY = f'WorkflowType = "{WORKFLOW_TYPE}"'
COMPLETED = "COMPLETED"
OPEN = "RUNNING"
# Closed without completing: every effect must have been undone.
UNDONE = ("FAILED", "CANCELLED", *ENDED_FROM_OUTSIDE)
OUTCOMES = (COMPLETED, *UNDONE, OPEN)
# How the SDK records a patch in the history: a marker holding {"id": <patch id>, ...}.
#: The Update by which an operator marks failed compensations handled outside the system.
RESOLVE_UPDATE = "resolve_manually"  # PizzaOrderWorkflow.resolve_manually's name
PATCH_MARKER = "core_patch"
PATCH_DATA = "patch-data"
CONCURRENCY = 16  # histories read at once
PROGRESS_SECONDS = 2.0  # at most one progress report this often

#: ``progress(done, total)``: called as histories are read.
Progress = Callable[[int, int], None]


class CannotCheck(Exception):
    """The check cannot be made (a payload it cannot decrypt, a server that went away):
    not a verdict on the ledger. The message is one line for the user."""


@dataclass
class OrderRecord:
    """What Temporal says about one run of an order."""

    workflow_id: str
    run_id: str
    status: str
    amount: int | None = None  # a completed order's confirmation
    error_type: str | None = None  # how a failed order failed
    settled_by_hand: str | None = None  # a compensation resolved by an operator, with note
    details: str = ""  # an open order: what it is doing (e.g. "Needs attention: ...")
    needs_attention: bool = False  # an open order whose saga waits for an operator
    order: PizzaOrder | None = None  # what the run was asked for
    unreadable: str | None = None  # why its order or result could not be read
    undecryptable: str | None = None  # encrypted under a key this checker lacks
    confirmation: OrderConfirmation | None = None  # what a completed run returned
    patches: frozenset[str] = frozenset()  # the patch ids its history records

    @property
    def order_ref(self) -> str:
        return order_ref(self.workflow_id, self.run_id)


def failure_type(error: BaseException | None) -> str:
    """The typed error clients see, else the innermost cause (say, an activity timeout)."""
    typed = error_type_of(error)
    if typed is not None or error is None:
        return typed or "unknown"
    return type(innermost(error)).__name__


def hand_resolution(error: BaseException | None) -> str | None:
    """The operator's note when a compensation was resolved by hand (not retried)."""
    for link in cause_chain(error):
        if isinstance(link, ApplicationError) and link.details:
            first = link.details[0]
            if isinstance(first, dict) and first.get("repaired_by") == "resolved manually":
                return str(first.get("note") or "")
    return None


async def decoded(
    client: Client, record: OrderRecord, payloads: Sequence[Payload], kind: type
) -> Any:
    """The first payload as ``kind``, decrypted here; None when it cannot be read (noted
    on the record: a key this checker lacks, or bytes that are no ``kind``)."""
    converter = client.data_converter
    try:
        plain = list(payloads)
        if converter.payload_codec is not None:
            plain = await converter.payload_codec.decode(plain)
    except CodecKeyError as error:
        record.undecryptable = str(error)
        return None
    except Exception as error:  # ciphertext that fails authentication: hostile bytes
        record.unreadable = f"cannot decrypt: {type(error).__name__} {error}".strip()
        return None
    try:
        return converter.payload_converter.from_payloads(plain[:1], [kind])[0]
    except Exception as error:  # any shape a hostile client sent (RecursionError included)
        record.unreadable = f"not a {kind.__name__}: {str(error)[:120]}"
        return None


async def read_close(client: Client, record: OrderRecord, close: HistoryEvent) -> None:
    """The confirmation a completed run returned, or how a failed run failed."""
    if close.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
        result = close.workflow_execution_completed_event_attributes.result.payloads
        record.confirmation = await decoded(client, record, result, OrderConfirmation)
        if record.confirmation is not None:
            record.amount = record.confirmation.amount
    elif close.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
        try:
            failure = await client.data_converter.decode_failure(
                close.workflow_execution_failed_event_attributes.failure
            )
        except CodecKeyError as undecryptable:
            record.undecryptable = str(undecryptable)
            return
        except Exception as unreadable:  # a failure whose details are hostile bytes
            record.unreadable = f"cannot read its failure: {type(unreadable).__name__}"
            return
        record.error_type = failure_type(failure)
        record.settled_by_hand = hand_resolution(failure)


async def order_record(client: Client, workflow_id: str, run_id: str) -> OrderRecord | None:
    """One run from its history; None when Temporal does not know it."""
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    try:
        history = await handle.fetch_history()
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    events = history.events
    close = events[-1] if events else None
    status = (closed_status(close) if close is not None else None) or OPEN
    record = OrderRecord(workflow_id, run_id, status, patches=patches_of(events))
    if events:
        started = events[0].workflow_execution_started_event_attributes.input.payloads
        record.order = await decoded(client, record, started, PizzaOrder)
    if close is not None and status != OPEN:
        await read_close(client, record, close)
        if record.settled_by_hand is None:  # a cancelled run closes without that failure
            record.settled_by_hand = await resolved_by_update(client, record, events)
    if status == OPEN:
        record.details, record.needs_attention = await open_details(client, workflow_id, run_id)
    return record


async def resolved_by_update(
    client: Client, record: OrderRecord, events: Sequence[HistoryEvent]
) -> str | None:
    """The note of the ``resolve_manually`` Update the run accepted, if any: a failed order
    carries it in its failure too, a cancelled one only here."""
    for event in events:
        if event.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            continue
        asked = event.workflow_execution_update_accepted_event_attributes.accepted_request.input
        if asked.name == RESOLVE_UPDATE:
            note = await decoded(client, record, asked.args.payloads, str)
            return str(note or "")
    return None


def patches_of(events: Sequence[HistoryEvent]) -> frozenset[str]:
    """The patch ids a history records (the SDK's ``core_patch`` markers): which path of
    the workflow's code the run took."""
    found = set()
    for event in events:
        if event.event_type != EventType.EVENT_TYPE_MARKER_RECORDED:
            continue
        marker = event.marker_recorded_event_attributes
        if marker.marker_name != PATCH_MARKER or PATCH_DATA not in marker.details:
            continue
        for payload in marker.details[PATCH_DATA].payloads[:1]:
            try:
                found.add(str(json.loads(payload.data)["id"]))
            except (ValueError, KeyError, TypeError):  # not the SDK's marker: no patch
                continue
    return frozenset(found)


async def open_details(client: Client, workflow_id: str, run_id: str) -> tuple[str, bool]:
    """What an open order is doing, in words (say, "Needs attention: ..."), and whether its
    saga waits for an operator; ("", False) when no worker answers."""
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    try:
        state = await handle.query(PizzaOrderWorkflow.saga_state, rpc_timeout=timedelta(seconds=5))
    except Exception:  # no worker to answer: the order is open all the same
        return "", False
    return str(state.get("details") or ""), bool(state.get("needs_attention"))


async def temporal_records(
    client: Client,
    query: str = DEFAULT_QUERY,
    *,
    limit: int | None = None,
    progress: Progress | None = None,
) -> list[OrderRecord]:
    """Every run of the order workflow that the visibility store lists, read."""
    executions = [
        (execution.id, execution.run_id)
        async for execution in client.list_workflows(query, limit=limit)
    ]
    return await describe_all(client, executions, progress)


async def describe_all(
    client: Client, runs: list[tuple[str, str]], progress: Progress | None = None
) -> list[OrderRecord]:
    """Every run's record, at most `CONCURRENCY` histories in flight at once."""
    gate = asyncio.Semaphore(CONCURRENCY)
    done, reported, last_report = 0, False, time.monotonic()

    async def one(workflow_id: str, run_id: str) -> OrderRecord | None:
        nonlocal done, reported, last_report
        async with gate:
            record = await order_record(client, workflow_id, run_id)
        done += 1
        now = time.monotonic()
        # A check that takes a while says how far it is, and then that it is done.
        due = now - last_report >= PROGRESS_SECONDS or (reported and done == len(runs))
        if progress is not None and due:
            reported, last_report = True, now
            progress(done, len(runs))
        return record

    found = await asyncio.gather(*(one(w, r) for w, r in runs))
    return [record for record in found if record is not None]
