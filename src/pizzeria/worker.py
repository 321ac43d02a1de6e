"""Worker wiring: serve the order workflow and its activities on ``pizza-tasks``.

`served_activities` builds what a worker serves (the activities, the faults injected
around them, the driver simulation); `build_worker` wires it, with the metrics and fault
interceptors, into a Worker. Every worker (``pizzeria worker``, the bench, the demo, the
tests) is built these two ways.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import PollerBehaviorAutoscaling, PollerBehaviorSimpleMaximum, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from pizzeria import config, tuning
from pizzeria.activities import PizzaOrderActivities
from pizzeria.config import DriverSimulation
from pizzeria.ledger import Ledger
from pizzeria.models import ASK_BILL_RECORDED, COMPENSATIONS, STEPS, TASK_QUEUE
from pizzeria.payments.port import PaymentGateway
from pizzeria.payments.provider_config import provider_gateway
from pizzeria.payments.stripe_gateway import StripeGateway
from pizzeria.temporal import one_walk, tracing, type_hints
from pizzeria.temporal.converter import (
    ContextFreeSandboxRunner,
    OneOrderPerStart,
    StrictPayloadConverter,
    takes_no_context,
)
from pizzeria.temporal.faults import FaultInterceptor, FaultPlan
from pizzeria.temporal.metrics import MetricsInterceptor
from pizzeria.workflows import PizzaOrderWorkflow

ACTIVITY_THREADS = 8
#: The order's own module, passed through the workflow sandbox (`order_sandbox`).
ORDER_MODULE = PizzaOrderWorkflow.__module__
# Below a step's 5 s: a provider that hangs is a failed attempt, retried with its key.
PAYMENTS_TIMEOUT_SECONDS = 3.0
PAYMENTS_THREADS = 16


@dataclass(frozen=True)
class ServedActivities:
    """What an order worker serves: the activities and the faults injected around them."""

    implementation: PizzaOrderActivities
    faults: FaultPlan


def payment_gateway(environ: Mapping[str, str] | None = None) -> StripeGateway:
    """The payment provider a worker moves money through: ``PIZZERIA_PAYMENTS_URL`` (with
    ``STRIPE_API_KEY``, or the local provider's key), or ``STRIPE_API_KEY`` alone for
    Stripe's test mode; with neither, the local provider of the data folder."""
    return provider_gateway(environ, timeout=PAYMENTS_TIMEOUT_SECONDS, threads=PAYMENTS_THREADS)


def served_activities(
    ledger: Ledger,
    *,
    faults: FaultPlan | None = None,
    driver: DriverSimulation | None = None,
    payments: PaymentGateway | None = None,
) -> ServedActivities:
    """The order's activities against ``ledger``, as ``pizzeria worker`` serves them.

    Unless given, the faults are those of ``PIZZERIA_FAULTS`` and the faults file of the
    data folder, the driver simulation is read from the environment, and the payment
    provider is `payment_gateway`'s.
    """
    return ServedActivities(
        PizzaOrderActivities(
            ledger, driver or DriverSimulation.from_env(), payments=payments or payment_gateway()
        ),
        faults or FaultPlan(config.faults_file()),
    )


def activities_of(implementation: PizzaOrderActivities) -> Sequence[Any]:
    """Every step and compensation, registered under its name of the wire contract, and
    the ledger's answer a cancel on the fast path asks for."""
    names = (*STEPS, *COMPENSATIONS, ASK_BILL_RECORDED)
    return [getattr(implementation, name) for name in names]


@dataclass(frozen=True)
class WorkerScale:
    """How much one worker takes on at once, and how it stops (``pizzeria worker``'s options).

    None leaves the SDK's default: 100 activity slots, 100 workflow task slots, 5 pollers
    of each kind. Autoscaled pollers start at 5 (fewer if ``max_pollers`` is lower) and
    follow the server's hints between 1 and ``max_pollers`` (default 100).
    """

    max_concurrent_activities: int | None = None
    max_concurrent_workflow_tasks: int | None = None
    poller_autoscaling: bool = False
    max_pollers: int | None = None
    graceful_shutdown_seconds: float = 0.0

    def worker_options(self) -> dict[str, Any]:
        """The keyword arguments of `build_worker` (and so of the SDK's Worker)."""
        options: dict[str, Any] = {
            "graceful_shutdown_timeout": timedelta(seconds=self.graceful_shutdown_seconds)
        }
        if self.max_concurrent_activities is not None:
            options["max_concurrent_activities"] = self.max_concurrent_activities
        if self.max_concurrent_workflow_tasks is not None:
            options["max_concurrent_workflow_tasks"] = self.max_concurrent_workflow_tasks
        if self.poller_autoscaling:
            maximum = self.max_pollers or 100
            behavior: Any = PollerBehaviorAutoscaling(maximum=maximum, initial=min(5, maximum))
            options["workflow_task_poller_behavior"] = behavior
            options["activity_task_poller_behavior"] = behavior
        elif self.max_pollers is not None:
            # The sticky queue and the shared one each need a workflow poller.
            workflow_pollers = max(2, self.max_pollers)
            options["workflow_task_poller_behavior"] = PollerBehaviorSimpleMaximum(workflow_pollers)
            options["activity_task_poller_behavior"] = PollerBehaviorSimpleMaximum(self.max_pollers)
        return options

    def describe(self) -> str:
        """One line for the worker's banner."""
        activities = self.max_concurrent_activities or 100
        tasks = self.max_concurrent_workflow_tasks or 100
        if self.poller_autoscaling:
            pollers = f"autoscaled up to {self.max_pollers or 100}"
        else:
            pollers = f"{self.max_pollers or 5} of each kind"
        return (
            f"Slots: {activities} activities, {tasks} workflow tasks; pollers: {pollers}; "
            f"SIGTERM lets activities in flight finish for {self.graceful_shutdown_seconds:g} s"
        )


def order_sandbox(context_free: bool, passthrough: Sequence[str] = ()) -> SandboxedWorkflowRunner:
    """The SDK's workflow sandbox, with the order's module (and ``passthrough``) passed
    through it, and without its trip per payload when the converter reads no context.

    By default the sandbox runs a workflow's module again for every new run, and with it
    ``@workflow.defn``'s checks of the class: about 2 ms of the worker's CPU per order, on
    the way to the order's first step. The order's module defines the workflow class and
    constants, no state; every module it runs (the saga, the steps, the menu) was already
    passed through. Passed through, its code still runs under the sandbox's restricted
    builtins, but the sandbox no longer swaps the modules it reads for restricted proxies:
    `tests/order/test_determinism.py` checks instead that the order's modules import
    nothing that could make a run differ on replay, and every recorded history replays
    with the SDK's full sandbox (`Replayer`'s default), which runs the module again.
    """
    restrictions = SandboxRestrictions.default.with_passthrough_modules(ORDER_MODULE, *passthrough)
    if context_free:
        return ContextFreeSandboxRunner(restrictions=restrictions)
    return SandboxedWorkflowRunner(restrictions=restrictions)


def build_worker(
    client: Client,
    activities: ServedActivities,
    task_queue: str = TASK_QUEUE,
    sandbox_passthrough: Sequence[str] = (),
    **options: Any,
) -> Worker:
    """The order worker. Whatever converter the client has, the worker decodes strictly,
    and an order started with another number of arguments than one fails at once.

    Interceptors given in ``options`` run inside ours; faults run inside the metrics, so an
    injected failure is counted like a real one. Its activations and completions are walked
    once for their payloads, not three times (`pizzeria.temporal.one_walk`), and the
    dataclasses in payloads are decoded with their type hints read once per class
    (`pizzeria.temporal.type_hints`).
    """
    one_walk.install()
    type_hints.install()
    strict = dataclasses.replace(
        client.data_converter, payload_converter_class=StrictPayloadConverter
    )
    client_config = client.config()
    client_config["data_converter"] = strict
    client = Client(**client_config)
    options.setdefault(
        "workflow_runner", order_sandbox(takes_no_context(strict), sandbox_passthrough)
    )
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[PizzaOrderWorkflow],
        activities=activities_of(activities.implementation),
        # Every activity is async today; a blocking one would run here, one slot per thread.
        activity_executor=concurrent.futures.ThreadPoolExecutor(
            max_workers=max(ACTIVITY_THREADS, options.get("max_concurrent_activities") or 0)
        ),
        interceptors=[
            *tracing.worker_interceptors(client),  # none unless OTEL_* asks
            OneOrderPerStart(),
            *([MetricsInterceptor()] if tuning.is_on("metrics") else []),
            *([FaultInterceptor(activities.faults)] if tuning.is_on("faults") else []),
            *options.pop("interceptors", []),
        ],
        **options,
    )


def stop_requested(again: Callable[[int], None] | None = None) -> asyncio.Event:
    """An event set by Ctrl-C or SIGTERM from now on: whoever serves a worker waits on it,
    then leaves the worker's ``async with`` so that the worker stops cleanly. ``again``,
    if given, is called with the signal's number when one comes after the event is set
    (the user who will not wait for the steps in flight)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def requested(signum: int) -> None:
        if stop.is_set() and again is not None:
            again(signum)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, requested, signum)
    return stop
