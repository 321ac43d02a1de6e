"""What one order costs, exactly: history events, payload bytes as stored, billable actions.

``pizzeria bench --costs`` runs one workflow of each shape on the benchmark's own stack
(deterministic: no timer, one driver round with a driver found at once, no faults, fixed
order numbers, so every figure is the same from run to run) and reads each history raw,
as the server stores it, without decoding anything.

What is counted:

* **events**: every event of the run's history.
* **payload bytes**: for every ``Payload`` message anywhere in any event (inputs, results,
  failure details, memo, search attributes, headers, the summaries of the user metadata),
  the length of its ``data`` plus the lengths of its metadata keys and values. Payloads
  go through the codec, so for ours that is the AES-GCM ciphertext (nonce and tag
  included) and its encoding and key-id metadata; search attributes are never encrypted.
  Strings outside payloads (activity names, failure messages and stack traces, map keys
  such as the memo's field names) are not counted.
* **actions**: as Temporal Cloud bills them (docs.temporal.io/cloud/actions), from the
  history: a workflow start; each activity scheduled, plus each retry (the started
  event's attempt - 1); each timer started; each signal; each update accepted; each
  search attribute upsert except one that only sets ``TemporalChangeVersion`` (exempt);
  a child workflow initiated (2); workflow options updated; and the markers recorded
  (local activities, patches) counted once per workflow task that records any. Memo
  changes (``WorkflowPropertiesModified``) and cancellation requests are not billed.
  Not in the history and so not counted: queries, rejected updates, and activity
  heartbeats (the driver search heartbeats once per round that reaches the server, at
  most one per 8 s; with one round there are none).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle

from pizzeria.client import cancel_order, start_order
from pizzeria.ops.baseline import BAD_CARD_SHAPE, GOOD_ORDER_SHAPE, BaselineWorkflow
from pizzeria.ops.bench.cases import BenchError
from pizzeria.samples import BAD_CARD, GOOD_CARD, sample_order

SHAPES = ("good", "bad", "cancelled", "pickup", "baseline-good", "baseline-bad")
#: The cancelled order waits on this timer, where the cancel lands at a known point.
CANCEL_WAIT_SECONDS = 60.0
PATCH_VERSION_ATTRIBUTE = "TemporalChangeVersion"
SHAPE_TIMEOUT = 60.0

_E = EventType
_ONE_ACTION = {
    _E.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED,
    _E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
    _E.EVENT_TYPE_TIMER_STARTED,
    _E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
    _E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
    _E.EVENT_TYPE_WORKFLOW_EXECUTION_OPTIONS_UPDATED,
}


@dataclass(frozen=True)
class ShapeCost:
    shape: str
    events: int
    payload_bytes: int
    actions: int


def payload_bytes(message: Message) -> int:
    """Data plus metadata of every Payload inside ``message``, however deep."""
    if isinstance(message, Payload):
        metadata = sum(len(key.encode()) + len(value) for key, value in message.metadata.items())
        return len(message.data) + metadata
    total = 0
    for field, value in message.ListFields():
        kind = field.message_type
        if kind is None:
            continue  # a scalar
        if kind.GetOptions().map_entry:
            if kind.fields_by_name["value"].type == FieldDescriptor.TYPE_MESSAGE:
                total += sum(payload_bytes(item) for item in value.values())
        elif field.is_repeated:
            total += sum(payload_bytes(item) for item in value)
        else:
            total += payload_bytes(value)
    return total


def billable_actions(events: Iterable[HistoryEvent]) -> int:
    """Temporal Cloud actions of one history (see the module's docstring)."""
    actions = 0
    marker_tasks: set[int] = set()
    for event in events:
        kind = event.event_type
        if kind in _ONE_ACTION:
            actions += 1
        elif kind == _E.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            actions += max(0, event.activity_task_started_event_attributes.attempt - 1)
        elif kind == _E.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes
            actions += set(fields.indexed_fields) != {PATCH_VERSION_ATTRIBUTE}
        elif kind == _E.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
            actions += 2
        elif kind == _E.EVENT_TYPE_MARKER_RECORDED:
            marker_tasks.add(
                event.marker_recorded_event_attributes.workflow_task_completed_event_id
            )
    return actions + len(marker_tasks)


async def cost_of(client: Client, shape: str, workflow_id: str) -> ShapeCost:
    """The figures of one closed workflow's history, read raw (nothing decoded)."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    events = list(history.events)
    return ShapeCost(
        shape=shape,
        events=len(events),
        payload_bytes=sum(payload_bytes(event) for event in events),
        actions=billable_actions(events),
    )


async def _wait_for_event(handle: WorkflowHandle[Any, Any], kind: EventType.ValueType) -> None:
    deadline = time.monotonic() + SHAPE_TIMEOUT
    while time.monotonic() < deadline:
        async for event in handle.fetch_history_events():
            if event.event_type == kind:
                return
        await asyncio.sleep(0.1)
    raise BenchError(f"{handle.id}: no {EventType.Name(kind)} within {SHAPE_TIMEOUT:.0f} s")


async def run_shape(client: Client, shape: str, number: str, task_queue: str) -> str:
    """Run one workflow of ``shape`` to its end; its workflow id."""
    if shape.startswith("baseline-"):
        plan = BAD_CARD_SHAPE if shape == "baseline-bad" else GOOD_ORDER_SHAPE
        handle: WorkflowHandle[Any, Any] = await client.start_workflow(
            BaselineWorkflow.run, plan, id=f"bench-costs-{number}", task_queue=task_queue
        )
    else:
        order = sample_order(
            number,
            card=BAD_CARD if shape == "bad" else GOOD_CARD,
            is_delivery=shape != "pickup",
            prep_seconds=CANCEL_WAIT_SECONDS if shape == "cancelled" else 0.0,
        )
        handle = await start_order(client, order, task_queue)
        if shape == "cancelled":
            await _wait_for_event(handle, _E.EVENT_TYPE_TIMER_STARTED)
            await cancel_order(client, number, "the customer changed their mind")
    # The bad card, the cancel, the failing baseline end in a failure: that is the shape.
    with contextlib.suppress(WorkflowFailureError):
        async with asyncio.timeout(SHAPE_TIMEOUT):
            await handle.result()
    return handle.id


async def measure_costs(client: Client, task_queue: str) -> list[ShapeCost]:
    """Each shape once, one after the other, and its cost.

    Order numbers have a fixed length (workflow ids and references are inside the
    payloads), so two runs give the same bytes.
    """
    costs = []
    tag = uuid.uuid4().hex[:8].upper()
    for index, shape in enumerate(SHAPES):
        number = f"C{tag}{index}"
        workflow_id = await run_shape(client, shape, number, task_queue)
        costs.append(await cost_of(client, shape, workflow_id))
    return costs


def costs_report(costs: list[ShapeCost]) -> dict[str, Any]:
    return {"shapes": [cost.__dict__ for cost in costs]}
