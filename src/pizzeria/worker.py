"""Worker wiring: connect to Temporal the SDK's way and serve the order workflow.

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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.envconfig import ClientConfig
from temporalio.runtime import Runtime
from temporalio.worker import Worker

from pizzeria import config, tuning
from pizzeria.activities import PizzaOrderActivities
from pizzeria.codec import data_converter
from pizzeria.config import DriverSimulation
from pizzeria.converter import OneOrderPerStart, StrictPayloadConverter
from pizzeria.faults import FaultInterceptor, FaultPlan
from pizzeria.ledger import Ledger
from pizzeria.metrics import MetricsInterceptor
from pizzeria.models import COMPENSATIONS, STEPS, TASK_QUEUE
from pizzeria.workflows import PizzaOrderWorkflow

DEFAULT_ADDRESS = "localhost:7233"
#: What a worker prints once it polls its task queue (``pizzeria worker`` and the
#: benchmark's worker): the sign that orders placed now will be picked up.
READY_LINE = "Worker polling task queue"


async def connect(
    address: str | None = None,
    namespace: str | None = None,
    runtime: Runtime | None = None,
    encrypt: bool = True,
    converter: DataConverter | None = None,
    lazy: bool = False,
) -> Client:
    """A client from the SDK's env config (TEMPORAL_ADDRESS, profiles, TLS, API key).

    Only when nothing is configured does the address default to localhost:7233, so the same
    command runs against a dev server here and a Temporal cluster elsewhere. Payloads are
    encrypted (see codec.py); with ``encrypt=False`` they are sent plain but encrypted ones
    are still decrypted. ``converter`` replaces the codec's converter (a reader that must
    not create a key file brings its own). A ``lazy`` client connects at its first call
    (``pizzeria api`` starts, and says it is not ready, while Temporal is still down).
    """
    config: dict[str, Any] = dict(ClientConfig.load_client_connect_config())
    if address:
        config["target_host"] = address
    config.setdefault("target_host", DEFAULT_ADDRESS)
    if namespace:
        config["namespace"] = namespace
    config["data_converter"] = converter or data_converter(encrypt=encrypt)
    return await Client.connect(**config, runtime=runtime, lazy=lazy)


@dataclass(frozen=True)
class ServedActivities:
    """What an order worker serves: the activities and the faults injected around them."""

    implementation: PizzaOrderActivities
    faults: FaultPlan


def served_activities(
    ledger: Ledger,
    *,
    faults: FaultPlan | None = None,
    driver: DriverSimulation | None = None,
) -> ServedActivities:
    """The order's activities against ``ledger``, as ``pizzeria worker`` serves them.

    Unless given, the faults are those of ``PIZZERIA_FAULTS`` and the faults file of the
    data folder, and the driver simulation is read from the environment.
    """
    return ServedActivities(
        PizzaOrderActivities(ledger, driver or DriverSimulation.from_env()),
        faults or FaultPlan(config.faults_file()),
    )


def activities_of(implementation: PizzaOrderActivities) -> Sequence[Any]:
    """Every step and compensation, registered under its name of the wire contract."""
    return [getattr(implementation, name) for name in (*STEPS, *COMPENSATIONS)]


def build_worker(
    client: Client,
    activities: ServedActivities,
    task_queue: str = TASK_QUEUE,
    **options: Any,
) -> Worker:
    """The order worker. Whatever converter the client has, the worker decodes strictly,
    and an order started with another number of arguments than one fails at once.

    Interceptors given in ``options`` run inside ours; faults run inside the metrics, so an
    injected failure is counted like a real one.
    """
    strict = dataclasses.replace(
        client.data_converter, payload_converter_class=StrictPayloadConverter
    )
    client_config = client.config()
    client_config["data_converter"] = strict
    client = Client(**client_config)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[PizzaOrderWorkflow],
        activities=activities_of(activities.implementation),
        activity_executor=concurrent.futures.ThreadPoolExecutor(max_workers=8),
        interceptors=[
            OneOrderPerStart(),
            *([MetricsInterceptor()] if tuning.is_on("metrics") else []),
            *([FaultInterceptor(activities.faults)] if tuning.is_on("faults") else []),
            *options.pop("interceptors", []),
        ],
        **options,
    )


def stop_requested() -> asyncio.Event:
    """An event set by Ctrl-C or SIGTERM from now on: whoever serves a worker waits on it,
    then leaves the worker's ``async with`` so that the worker stops cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop
