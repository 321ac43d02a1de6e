"""Worker wiring: connect to Temporal the SDK's way and serve the order workflow."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import signal
from collections.abc import Sequence
from typing import Any

from temporalio.client import Client
from temporalio.envconfig import ClientConfig
from temporalio.runtime import Runtime
from temporalio.worker import Worker

from pizzeria.activities import PizzaOrderActivities
from pizzeria.codec import data_converter
from pizzeria.converter import StrictPayloadConverter
from pizzeria.metrics import MetricsInterceptor
from pizzeria.models import TASK_QUEUE
from pizzeria.workflows import PizzaOrderWorkflow

DEFAULT_ADDRESS = "localhost:7233"


async def connect(
    address: str | None = None,
    namespace: str | None = None,
    runtime: Runtime | None = None,
    encrypt: bool = True,
) -> Client:
    """A client from the SDK's env config (TEMPORAL_ADDRESS, profiles, TLS, API key).

    Only when nothing is configured does the address default to localhost:7233, so the same
    command runs against a dev server here and a Temporal cluster elsewhere. Payloads are
    encrypted (see codec.py); with ``encrypt=False`` they are sent plain but encrypted ones
    are still decrypted.
    """
    config: dict[str, Any] = dict(ClientConfig.load_client_connect_config())
    if address:
        config["target_host"] = address
    config.setdefault("target_host", DEFAULT_ADDRESS)
    if namespace:
        config["namespace"] = namespace
    config["data_converter"] = data_converter(encrypt=encrypt)
    return await Client.connect(**config, runtime=runtime)


def activities_of(implementation: PizzaOrderActivities) -> Sequence[Any]:
    return [
        implementation.get_distance,
        implementation.update_inventory,
        implementation.revert_inventory,
        implementation.process_credit_card,
        implementation.refund_customer,
        implementation.send_bill,
        implementation.notify_delivery_driver,
    ]


def build_worker(
    client: Client,
    activities: PizzaOrderActivities,
    task_queue: str = TASK_QUEUE,
    **options: Any,
) -> Worker:
    """The order worker. Whatever converter the client has, the worker decodes strictly."""
    strict = dataclasses.replace(
        client.data_converter, payload_converter_class=StrictPayloadConverter
    )
    config = client.config()
    config["data_converter"] = strict
    client = Client(**config)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[PizzaOrderWorkflow],
        activities=activities_of(activities),
        activity_executor=concurrent.futures.ThreadPoolExecutor(max_workers=8),
        interceptors=[MetricsInterceptor(), *options.pop("interceptors", [])],
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
