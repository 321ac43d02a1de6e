"""Record the histories that test_replay.py replays: ``python -m tests.helpers.record_histories``
(every scenario), or ``python -m tests.helpers.record_histories NAME...`` (only those).

Runs each scenario on the real dev server and writes ``tests/histories/<name>.json``.
Re-record only on purpose: a replay failure after a workflow change means that change
would break orders already running, which is what the replay test is there to catch.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from pizzeria.client.placing import start_with_answer
from pizzeria.config import DriverSimulation
from pizzeria.ledger import Ledger, open_ledger
from pizzeria.models import Pizza
from pizzeria.payments import process
from pizzeria.payments.stripe_gateway import StripeGateway
from pizzeria.samples import BAD_CARD, GOOD_CARD, sample_order
from pizzeria.temporal.devserver import dynamic_config_args
from pizzeria.temporal.faults import FaultPlan, parse_faults, write_faults
from pizzeria.worker import PAYMENTS_TIMEOUT_SECONDS, build_worker, served_activities
from pizzeria.workflows import PizzaOrderWorkflow
from tests.helpers import binary, eventually

HISTORIES = Path(__file__).parents[1] / "histories"
DECLINED_CARD = "4000000000000002"  # Stripe's test card that is declined
TASK_QUEUE = "pizza-record"


async def wait_for(ledger: Ledger, handle: WorkflowHandle[Any, Any], step: str) -> None:
    def happened() -> bool:
        return any(
            e["step"] == step and e["order_ref"].startswith(handle.id) for e in ledger.effects()
        )

    await eventually(happened, f"{step} to happen", seconds=20)


async def settle(handle: WorkflowHandle[Any, Any]) -> None:
    with contextlib.suppress(WorkflowFailureError):
        await handle.result()


async def settled(started: Awaitable[WorkflowHandle[Any, Any]]) -> WorkflowHandle[Any, Any]:
    handle = await started
    await settle(handle)
    return handle


async def main(only: list[str]) -> None:
    HISTORIES.mkdir(exist_ok=True)
    environment = await WorkflowEnvironment.start_local(
        dev_server_existing_path=binary("temporal"),
        dev_server_extra_args=["--log-level", "error", *dynamic_config_args()],
    )
    with (
        tempfile.TemporaryDirectory() as folder,
        process.running(Path(folder) / "payments.db") as provider,
    ):
        ledger = open_ledger(Path(folder) / "ledger.db")
        faults = Path(folder) / "faults.json"
        gateway = StripeGateway(
            process.LOCAL_SECRET_KEY, provider.url, timeout=PAYMENTS_TIMEOUT_SECONDS
        )
        activities = served_activities(
            ledger,
            faults=FaultPlan(faults, env_value=""),
            driver=DriverSimulation(rounds=2, seconds_per_round=0, found_probability=1),
            payments=gateway,
        )
        client = environment.client

        async def start(card: str = GOOD_CARD, **options: Any) -> WorkflowHandle[Any, Any]:
            order = sample_order(
                f"REC-{uuid.uuid4().hex[:6]}", card=card, prep_seconds=0.1, **options
            )
            return await client.start_workflow(
                PizzaOrderWorkflow.order_pizza,
                order,
                id=f"pizza-workflow-order-{order.order_number}",
                task_queue=TASK_QUEUE,
            )

        async def good() -> WorkflowHandle[Any, Any]:
            handle = await start()
            await settle(handle)
            return handle

        async def pickup() -> WorkflowHandle[Any, Any]:
            handle = await start(is_delivery=False)
            await settle(handle)
            return handle

        async def bad_card() -> WorkflowHandle[Any, Any]:
            handle = await start(BAD_CARD)
            await settle(handle)
            return handle

        async def cancelled() -> WorkflowHandle[Any, Any]:
            write_faults(faults, parse_faults("process_credit_card=timeout"))
            handle = await start()
            await wait_for(ledger, handle, "update_inventory")
            await asyncio.sleep(0.2)
            await handle.cancel()
            await settle(handle)
            write_faults(faults, {})
            return handle

        async def cancel_update() -> WorkflowHandle[Any, Any]:
            write_faults(faults, parse_faults("process_credit_card=timeout"))
            handle = await start()
            await wait_for(ledger, handle, "update_inventory")
            await handle.execute_update(PizzaOrderWorkflow.cancel_order, "changed my mind")
            await handle.cancel()
            await settle(handle)
            write_faults(faults, {})
            return handle

        async def repaired(resolve: bool) -> WorkflowHandle[Any, Any]:
            write_faults(faults, parse_faults("refund_customer=fail"))
            handle = await start(BAD_CARD, compensation_attempts=2)
            for _ in range(200):
                state = await handle.query(PizzaOrderWorkflow.saga_state)
                if state["needs_attention"]:
                    break
                await asyncio.sleep(0.1)
            write_faults(faults, {})
            if resolve:
                await handle.execute_update(
                    PizzaOrderWorkflow.resolve_manually, "refunded by phone"
                )
            else:
                await handle.execute_update(PizzaOrderWorkflow.retry_compensations)
            await settle(handle)
            return handle

        async def early_answer(card: str, **options: Any) -> WorkflowHandle[Any, Any]:
            """A pickup placed with its order_accepted Update (Update-with-Start): the
            kitchen waits once the card is held (or the Update fails, for the bad card)."""
            order = sample_order(
                f"REC-{uuid.uuid4().hex[:6]}",
                card=card,
                prep_seconds=0.1,
                is_delivery=False,
                **options,
            )
            started = await start_with_answer(client, order, TASK_QUEUE)
            await started.answer
            await settle(started.handle)
            return started.handle

        async def delivery_refunded() -> WorkflowHandle[Any, Any]:
            """No driver: billed, then refunded in full (refund_undelivered_order)."""
            served = activities.implementation
            found = served.driver
            served.driver = DriverSimulation(rounds=2, seconds_per_round=0, found_probability=0)
            try:
                return await settled(start())
            finally:
                served.driver = found

        scenarios: dict[str, Callable[[], Awaitable[WorkflowHandle[Any, Any]]]] = {
            "good_order": good,
            "pickup": pickup,
            "bad_card": bad_card,
            "cancelled": cancelled,
            "cancel_update": cancel_update,
            "repaired_by_retry": lambda: repaired(False),
            "resolved_manually": lambda: repaired(True),
            "fast_good_order": lambda: settled(start(fast_path=True)),
            "fast_bad_card": lambda: settled(start(BAD_CARD, fast_path=True)),
            "early_hold": lambda: early_answer(GOOD_CARD),
            "early_declined": lambda: early_answer(BAD_CARD),
            "fast_early_hold": lambda: early_answer(GOOD_CARD, fast_path=True),
            # The same, recorded under order-2026-12: no distance for a pickup.
            "fast_pickup_hold": lambda: early_answer(GOOD_CARD, fast_path=True),
            "delivery_refunded": delivery_refunded,
            # A good order recorded under order-2026-12-quiet-close: no outcome memo.
            "quiet_good_order": good,
            "declined": lambda: settled(start(DECLINED_CARD)),
            # Recorded before a size written without a space after it was priced: the
            # order billed what it said ($1.00 for a large pizza), and replays so.
            "unspaced_size": lambda: settled(
                start(is_delivery=False, items=[Pizza("Largewith ham", 100)])
            ),
        }
        assert tuple(scenarios) == SCENARIOS, "SCENARIOS names every scenario, in order"
        async with build_worker(client, activities, task_queue=TASK_QUEUE):
            for name, scenario in scenarios.items():
                if only and name not in only:
                    continue
                handle = await scenario()
                history = await handle.fetch_history()
                (HISTORIES / f"{name}.json").write_text(history.to_json())
                print(f"recorded {name}: {len(history.events)} events")
        ledger.close()
        await gateway.close()
    await environment.shutdown()


#: Every scenario's name (and history file), checked against main's scenarios.
SCENARIOS = (
    "good_order",
    "pickup",
    "bad_card",
    "cancelled",
    "cancel_update",
    "repaired_by_retry",
    "resolved_manually",
    "fast_good_order",
    "fast_bad_card",
    "early_hold",
    "early_declined",
    "fast_early_hold",
    "fast_pickup_hold",
    "delivery_refunded",
    "quiet_good_order",
    "declined",
    "unspaced_size",
)


if __name__ == "__main__":
    unknown = [name for name in sys.argv[1:] if name not in SCENARIOS]
    if unknown:  # --help included: nothing started, no history written
        sys.exit(
            f"usage: python -m tests.helpers.record_histories [NAME...]; unknown: "
            f"{' '.join(unknown)}; the names: {' '.join(SCENARIOS)}"
        )
    asyncio.run(main(sys.argv[1:]))
