"""The dev server this program starts is never left behind: not when it cannot start, not
when the user interrupts it while it starts; and it serves search attributes as docs say."""

from __future__ import annotations

import socket
import uuid

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from pizzeria.models import ORDER_STATUS
from pizzeria.ops.processes import dev_server, private_dev_server
from pizzeria.temporal import devserver
from pizzeria.temporal.devserver import DevServerError
from tests.helpers import eventually


def test_a_dev_server_interrupted_while_it_starts_is_stopped(monkeypatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> bool:
        raise KeyboardInterrupt  # Ctrl-C once the port is open, before it serves

    monkeypatch.setattr(devserver, "serving", interrupted)
    server = private_dev_server(headless=True)
    with pytest.raises(KeyboardInterrupt):
        server.start()
    assert server.process is not None and server.process.poll() is not None
    assert not devserver.port_open(server.port)


def test_a_taken_web_ui_port_is_said_before_the_server_starts() -> None:
    with socket.socket() as ui:
        ui.bind(("127.0.0.1", 0))
        ui.listen()
        server = private_dev_server(ui_port=ui.getsockname()[1])
        with pytest.raises(DevServerError, match=r"the Web UI's port \d+ is already in use"):
            server.start()
    assert server.process is None  # nothing was started


async def test_search_attributes_come_from_the_cache_and_a_new_one_works_soon() -> None:
    """Our dev servers read search attributes from their cache (devserver.DYNAMIC_CONFIG):
    OrderStatus, registered at the start, works at once; one registered while the server
    runs works within seconds, as docs/commands.md says."""
    assert devserver.SEARCH_ATTRIBUTES_FROM_CACHE in devserver.DYNAMIC_CONFIG
    with dev_server(None, headless=True) as server:
        client = await Client.connect(server.address)

        async def starts_with(key: SearchAttributeKey[str]) -> bool:
            try:
                await client.start_workflow(
                    "NoSuchWorkflow",
                    id=f"sa-{uuid.uuid4()}",
                    task_queue="nobody-polls",
                    search_attributes=TypedSearchAttributes([SearchAttributePair(key, "x")]),
                )
            except RPCError as error:
                assert error.status == RPCStatusCode.INVALID_ARGUMENT, error
                return False
            return True

        assert await starts_with(ORDER_STATUS)
        later = SearchAttributeKey.for_keyword("RegisteredLater")
        assert not await starts_with(later)
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=client.namespace,
                search_attributes={later.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD},
            )
        )
        await eventually(lambda: starts_with(later), "the search attribute registered later")


async def test_a_dynamic_config_value_given_to_the_dev_server_reaches_it() -> None:
    """``DevServer(dynamic_config=...)`` (``pizzeria bench --server-option``): the server
    runs with it, here a cap on workflow id length."""
    with dev_server(None, headless=True, dynamic_config=("limit.maxIDLength=40",)) as server:
        client = await Client.connect(server.address)
        await client.start_workflow("NoSuchWorkflow", id="x" * 40, task_queue="nobody-polls")
        with pytest.raises(RPCError) as refused:
            await client.start_workflow("NoSuchWorkflow", id="x" * 41, task_queue="nobody-polls")
        assert refused.value.status == RPCStatusCode.INVALID_ARGUMENT
