"""What a Temporal server says that a command checks before relying on it: which workers
poll a task queue lately, and whether the latest orders decrypt with this machine's codec
keys. Read by `pizzeria doctor` (`pizzeria.ops.doctor`) and by the demo, which refuses a
server that other workers or another data folder's orders already use.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import PollerInfo, TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from pizzeria.models import WORKFLOW_TYPE, order_number_of
from pizzeria.temporal.codec import ENCODING, KEY_ID, CodecKeyError, EncryptionCodec
from pizzeria.temporal.converter import UNREADABLE_ENCODING

#: How long one call to the server may take here.
CALL_TIMEOUT = timedelta(seconds=10)

#: A worker long-polls without a pause (a poll returns within about a minute, empty or
#: not): one not seen for this long is gone, though the server lists it some minutes more.
STALE_POLLER_SECONDS = 90.0


async def pollers_of(
    client: Client, task_queue: str, kind: TaskQueueType.ValueType
) -> Sequence[PollerInfo]:
    """The workers the server lists as polling ``task_queue`` for ``kind`` tasks: those
    that stopped too, for a while (see `polled_lately`)."""
    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=kind,
        ),
        timeout=CALL_TIMEOUT,
    )
    return response.pollers


def last_poll(poller: PollerInfo) -> datetime:
    return poller.last_access_time.ToDatetime(tzinfo=UTC)


def polled_lately(poller: PollerInfo, now: datetime) -> bool:
    """Seen polling within `STALE_POLLER_SECONDS`: the server lists a worker that stopped
    a while longer."""
    return (now - last_poll(poller)).total_seconds() <= STALE_POLLER_SECONDS


async def recent_pollers(client: Client, task_queue: str) -> set[str]:
    """The identities of the workers seen polling ``task_queue`` for workflow tasks within
    `STALE_POLLER_SECONDS`."""
    polling = await pollers_of(client, task_queue, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW)
    now = datetime.now(UTC)
    return {poller.identity for poller in polling if polled_lately(poller, now)}


async def first_input(client: Client, workflow_id: str, run_id: str) -> list[Any]:
    """The payloads the order was started with (its first history event)."""
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    async for event in handle.fetch_history_events(page_size=1):
        return list(event.workflow_execution_started_event_attributes.input.payloads)
    return []


async def unreadable_key(codec: EncryptionCodec, payloads: list[Any]) -> str | None:
    """The key id of the first payload this codec cannot decrypt, else None: a key it does
    not hold, or one that does not authenticate the ciphertext."""
    for payload in payloads:
        if payload.metadata.get("encoding") != ENCODING:
            continue  # plain JSON, from a client without the codec
        key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace") or "(none)"
        try:
            (decoded,) = await codec.decode([payload])
        except CodecKeyError:
            return key_id
        if decoded.metadata.get("encoding") == UNREADABLE_ENCODING:
            return key_id
    return None


async def foreign_orders(
    client: Client, keys: list[tuple[str, bytes]], latest: int
) -> tuple[list[str], dict[str, str]]:
    """The order numbers of the ``latest`` orders, and of those among them that these
    keys cannot decrypt, with the key id each needs. Raises RPCError."""
    codec = EncryptionCodec(keys)
    checked: list[str] = []
    foreign: dict[str, str] = {}
    query = f"WorkflowType = '{WORKFLOW_TYPE}'"
    async for execution in client.list_workflows(query, limit=latest):
        number = order_number_of(execution.id)
        checked.append(number)
        needed = await unreadable_key(
            codec, await first_input(client, execution.id, execution.run_id)
        )
        if needed is not None:
            foreign[number] = needed
    return checked, foreign


def foreign_said(checked: list[str], foreign: dict[str, str]) -> str:
    """``2 of the latest 5 orders do not decrypt with this key: A1 (key ...), ...``"""
    orders = ", ".join(f"{number} (key {key})" for number, key in foreign.items())
    return (
        f"{len(foreign)} of the latest {len(checked)} orders do not decrypt with this key: {orders}"
    )
