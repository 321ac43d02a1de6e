"""One batch: a bounded number of workflows at a fixed number in flight; and what their
histories say."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle

from pizzeria.client import start_order
from pizzeria.failures import error_type_of
from pizzeria.ops.baseline import (
    BAD_CARD_SHAPE,
    EMPTY_SHAPE,
    GOOD_ORDER_SHAPE,
    BaselineShape,
    BaselineWorkflow,
    LocalBaselineWorkflow,
)
from pizzeria.ops.bench.cases import PREP_SECONDS, BenchError, Case
from pizzeria.ops.bench.sampling import cpu_seconds, own_cpu_seconds
from pizzeria.ops.bench.stack import Stack
from pizzeria.samples import BAD_CARD, GOOD_CARD, sample_order

RSS_SAMPLE_SECONDS = 0.2


@dataclass
class Batch:
    run: int
    case: str
    concurrency: int
    workflows: int
    seconds: float
    latencies: list[float]
    server_cpu: float
    worker_cpu: float
    client_cpu: float
    peak_rss: int
    workflow_ids: list[str] = field(default_factory=list)
    provider_calls: int = 0  # the workers' calls to the payment provider (see .provider)
    provider_seconds: float = 0.0  # their durations added up
    provider_cpu: float = 0.0  # the provider process's CPU seconds meanwhile


async def start_case(
    client: Client, case: Case, workflow_id: str, task_queue: str
) -> WorkflowHandle[Any, Any]:
    if case.saga:
        order = sample_order(
            workflow_id,
            card=BAD_CARD if case.bad_card else GOOD_CARD,
            prep_seconds=PREP_SECONDS,
            fast_path=case.fast_path or None,
            is_delivery=not case.pickup,
        )
        return await start_order(client, order, task_queue)
    shape: BaselineShape = (
        EMPTY_SHAPE if case.no_steps else BAD_CARD_SHAPE if case.bad_card else GOOD_ORDER_SHAPE
    )
    run = LocalBaselineWorkflow.run if case.fast_path else BaselineWorkflow.run
    return await client.start_workflow(run, shape, id=workflow_id, task_queue=task_queue)


async def run_one(client: Client, case: Case, workflow_id: str, task_queue: str) -> str:
    handle = await start_case(client, case, workflow_id, task_queue)
    try:
        await handle.result()
    except WorkflowFailureError as failure:
        kind = error_type_of(failure.cause)
        if kind != case.expected_error:
            raise BenchError(
                f"{case.name} {workflow_id} failed with {kind}: {failure.cause}"
            ) from failure
        return handle.id
    if case.expected_error is not None:
        raise BenchError(f"{case.name} {workflow_id} completed instead of failing")
    return handle.id


class PeakMemory:
    """The workers' highest resident memory, sampled while a batch runs."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.peak = stack.worker_rss()

    async def sample(self) -> None:
        while True:
            await asyncio.sleep(RSS_SAMPLE_SECONDS)
            self.peak = max(self.peak, self.stack.worker_rss())


async def run_batch(
    client: Client, stack: Stack, case: Case, concurrency: int, count: int, tag: str, run: int
) -> Batch:
    """Run ``count`` workflows of a case with ``concurrency`` of them in flight at a time."""
    latencies: list[float] = []
    workflow_ids: list[str] = []
    pending = iter(range(count))
    memory = PeakMemory(stack)

    async def lane() -> None:
        for index in pending:
            started = time.perf_counter()
            workflow_ids.append(await run_one(client, case, f"{tag}-{index}", stack.task_queue))
            latencies.append(time.perf_counter() - started)

    sampler = asyncio.create_task(memory.sample())
    stack.provider_calls.mark()
    server_before, worker_before = cpu_seconds(stack.server_pid), stack.worker_cpu()
    provider_before = stack.provider_cpu()
    client_before, started = own_cpu_seconds(), time.perf_counter()
    try:
        # Bounded in time as in count: a stuck workflow fails the run instead of hanging it.
        async with asyncio.timeout(60 + 5 * count / concurrency):
            await asyncio.gather(*(lane() for _ in range(min(concurrency, count))))
    except TimeoutError:
        stack.check_alive()
        raise BenchError(
            f"{case.name} at concurrency {concurrency} did not finish in time"
        ) from None
    finally:
        sampler.cancel()
    calls = stack.provider_calls.since()
    return Batch(
        run=run,
        case=case.name,
        concurrency=concurrency,
        workflows=count,
        seconds=time.perf_counter() - started,
        latencies=latencies,
        server_cpu=cpu_seconds(stack.server_pid) - server_before,
        worker_cpu=stack.worker_cpu() - worker_before,
        client_cpu=own_cpu_seconds() - client_before,
        peak_rss=max(memory.peak, stack.worker_rss()),
        workflow_ids=workflow_ids,
        provider_calls=calls.count,
        provider_seconds=calls.seconds,
        provider_cpu=stack.provider_cpu() - provider_before,
    )


@dataclass
class HistoryFacts:
    concurrency: int
    events: int
    bytes: int
    compensation_seconds: float | None  # failing step to last compensation done


async def history_facts(client: Client, workflow_id: str, concurrency: int) -> HistoryFacts:
    """Events and bytes of one history; for a failed order, how long undoing it took.

    The compensation time runs from the failing step's ActivityTaskFailed event to the last
    ActivityTaskCompleted event after it, both as stamped by the server.
    """
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    failed_at: float | None = None
    last_done: float | None = None
    for event in history.events:
        stamp = event.event_time.seconds + event.event_time.nanos / 1e9
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED and failed_at is None:
            failed_at = stamp
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED and failed_at:
            last_done = stamp
    return HistoryFacts(
        concurrency=concurrency,
        events=len(history.events),
        bytes=sum(event.ByteSize() for event in history.events),
        compensation_seconds=(last_done - failed_at) if failed_at and last_done else None,
    )


@dataclass
class StackFacts:
    """What one stack (one baseline/saga pair) showed besides the batches."""

    run: int
    pair: tuple[str, str]
    histories: dict[str, list[HistoryFacts]]  # per case
    ledger_rows: int
    ledger_payload_bytes: int
    ledger_file_bytes: int
    orders: int
    idle_rss: int
