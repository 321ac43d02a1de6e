"""The worker's payload passes in one walk (`pizzeria.temporal.one_walk`): the activation a
workflow sees and the completion sent to the server are the ones the SDK's three walks
give, payload for payload, with headers or without; external storage keeps the SDK's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from temporalio.api.common.v1 import Payload, SearchAttributes
from temporalio.bridge.proto.workflow_activation import workflow_activation_pb2 as activation
from temporalio.bridge.proto.workflow_commands import workflow_commands_pb2 as commands
from temporalio.bridge.proto.workflow_completion import workflow_completion_pb2 as completion
from temporalio.converter import DataConverter, PayloadCodec

from pizzeria.temporal import one_walk
from pizzeria.temporal.codec import EncryptionCodec


class Tagging(PayloadCodec):
    """A codec whose output shows which payloads it saw, and how many times."""

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._tagged(p, b"e") for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._tagged(p, b"d") for p in payloads]

    @staticmethod
    def _tagged(payload: Payload, tag: bytes) -> Payload:
        seen = payload.metadata.get("seen", b"")
        return Payload(metadata={**payload.metadata, "seen": seen + tag}, data=payload.data)


def plain(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=f'"{text}"'.encode())


def an_activation() -> activation.WorkflowActivation:
    start = activation.WorkflowActivationJob(
        initialize_workflow=activation.InitializeWorkflow(
            workflow_type="PizzaOrderWorkflow",
            arguments=[plain("order")],
            headers={"trace": plain("header")},
        )
    )
    update = activation.WorkflowActivationJob(
        do_update=activation.DoUpdate(
            id="u", name="order_accepted", input=[plain("ask")], headers={"h": plain("h2")}
        )
    )
    resolved = activation.WorkflowActivationJob(
        resolve_activity=activation.ResolveActivity(seq=3, is_local=True)
    )
    resolved.resolve_activity.result.completed.result.CopyFrom(plain("stock held"))
    return activation.WorkflowActivation(run_id="r", jobs=[start, update, resolved])


def a_completion() -> completion.WorkflowActivationCompletion:
    local = commands.WorkflowCommand(
        schedule_local_activity=commands.ScheduleLocalActivity(
            seq=4,
            activity_type="charge_customer",
            arguments=[plain("card")],
            headers={"trace": plain("header")},
        )
    )
    answer = commands.WorkflowCommand(
        update_response=commands.UpdateResponse(protocol_instance_id="u", completed=plain("held"))
    )
    done = commands.WorkflowCommand(
        complete_workflow_execution=commands.CompleteWorkflowExecution(result=plain("delivered"))
    )
    upsert = commands.WorkflowCommand(
        upsert_workflow_search_attributes=commands.UpsertWorkflowSearchAttributes(
            search_attributes=SearchAttributes(indexed_fields={"OrderStatus": plain("accepted")})
        )
    )
    return completion.WorkflowActivationCompletion(
        run_id="r",
        successful=completion.Success(commands=[local, answer, upsert, done]),
    )


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


@pytest.mark.parametrize("headers", [True, False])
def test_one_walk_decodes_an_activation_as_the_sdks_three_walks_do(headers: bool) -> None:
    converter = DataConverter(payload_codec=Tagging())
    by_sdk, by_one = an_activation(), an_activation()
    run(one_walk._SDK_DECODE(by_sdk, converter, headers, storage_concurrency_limit=1))
    run(one_walk.decode_activation(by_one, converter, headers, 1))
    assert by_one == by_sdk
    start = by_one.jobs[0].initialize_workflow
    assert start.arguments[0].metadata["seen"] == b"d"  # once, not three times
    assert by_one.jobs[2].resolve_activity.result.completed.result.metadata["seen"] == b"d"
    assert ("seen" in start.headers["trace"].metadata) is headers


@pytest.mark.parametrize("headers", [True, False])
def test_one_walk_encodes_a_completion_as_the_sdks_three_walks_do(headers: bool) -> None:
    converter = DataConverter(payload_codec=Tagging())
    by_sdk, by_one = a_completion(), a_completion()
    run(one_walk._SDK_ENCODE(by_sdk, converter, headers, storage_concurrency_limit=1))
    run(one_walk.encode_completion(by_one, converter, headers, 1))
    assert by_one == by_sdk
    local, answer, upsert, done = by_one.successful.commands
    assert local.schedule_local_activity.arguments[0].metadata["seen"] == b"e"
    assert answer.update_response.completed.metadata["seen"] == b"e"
    assert done.complete_workflow_execution.result.metadata["seen"] == b"e"
    # Search attributes stay readable by the server: never encoded.
    attributes = upsert.upsert_workflow_search_attributes.search_attributes.indexed_fields
    assert "seen" not in attributes["OrderStatus"].metadata


def test_what_one_walk_encrypts_the_codec_decrypts_back() -> None:
    converter = DataConverter(payload_codec=EncryptionCodec([("k1", b"k" * 32)]))
    sent = a_completion()
    run(one_walk.encode_completion(sent, converter, True, 1))
    argument = sent.successful.commands[0].schedule_local_activity.arguments[0]
    assert argument.metadata["encoding"] == b"binary/encrypted"
    assert b"card" not in argument.data
    [back] = run(converter.payload_codec.decode([argument]))  # type: ignore[union-attr]
    assert back == plain("card")


def test_with_external_storage_the_sdks_own_walks_run(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    async def sdk_decode(*args: Any, **kwargs: Any) -> str:
        calls.append("decode")
        return "sdk"

    async def sdk_encode(*args: Any, **kwargs: Any) -> str:
        calls.append("encode")
        return "sdk"

    monkeypatch.setattr(one_walk, "_SDK_DECODE", sdk_decode)
    monkeypatch.setattr(one_walk, "_SDK_ENCODE", sdk_encode)
    converter = DataConverter()
    object.__setattr__(converter, "external_storage", object())  # any storage at all
    assert run(one_walk.decode_activation(an_activation(), converter, True, 4)) == "sdk"
    assert run(one_walk.encode_completion(a_completion(), converter, True, 4)) == "sdk"
    assert calls == ["decode", "encode"]


async def test_the_order_worker_walks_each_activation_once(
    worker, start, order, ledger, monkeypatch
):
    walks: list[str] = []
    walk = one_walk._walk_once

    async def counted(message: Any, steps: Any, headers: bool, metadata: Any = None) -> Any:
        walks.append(type(message).__name__)
        return await walk(message, steps, headers, metadata)

    monkeypatch.setattr(one_walk, "_walk_once", counted)
    async with worker():
        confirmation = await (await start(order)).result()
    assert one_walk.sdk_matches()  # else the SDK changed and one_walk needs a look
    assert confirmation.status == "SUCCESS"
    (row,) = ledger.orders()
    assert (row.charged, row.billed) == (3500, 3500)
    # One walk each way per activation: an order of five steps has at least six of them.
    assert walks.count("WorkflowActivation") >= 6
    assert walks.count("WorkflowActivation") == walks.count("WorkflowActivationCompletion")


def test_an_sdk_whose_functions_changed_is_left_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    import temporalio.bridge.worker as sdk_worker

    monkeypatch.setattr(sdk_worker, "decode_activation", one_walk._SDK_DECODE)
    monkeypatch.setattr(sdk_worker, "encode_completion", one_walk._SDK_ENCODE)
    changed = ["activation", "data_converter", "decode_headers", "storage", "new_parameter"]
    monkeypatch.setitem(one_walk._PARAMETERS, one_walk._SDK_DECODE, changed)
    assert not one_walk.install()
    assert sdk_worker.decode_activation is one_walk._SDK_DECODE
    assert sdk_worker.encode_completion is one_walk._SDK_ENCODE
