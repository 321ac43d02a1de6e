"""What the worker reads: payloads that fail for good on input it cannot read, and one
order per start.

By default a payload the worker cannot decode (broken JSON, invalid UTF-8, an unknown
encoding, JSON nested too deep to parse, a JSON object that is not an order, ciphertext
the codec could not open) fails the *workflow task*, which Temporal retries forever: the
order hangs "Running". Decoding through this converter raises a typed, non-retryable
ApplicationError instead, so such an order fails at once, before any effect, and says why.
The same goes for a start with no argument or with two (`OneOrderPerStart`).

It encodes a dataclass from its fields (`DataclassFieldsEncoder`): the SDK's JSON, without
the deep copy the SDK's encoder makes of the value first.

Since nothing here reads a serialization context, the worker's sandbox need not look one up
for every payload (`ContextFreeSandboxRunner`, used when `takes_no_context`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from temporalio import workflow
from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    ActivitySerializationContext,
    AdvancedJSONEncoder,
    CompositePayloadConverter,
    DataConverter,
    DefaultPayloadConverter,
    EncodingPayloadConverter,
    JSONPlainPayloadConverter,
    SerializationContext,
    StorageDriverStoreContext,
    WorkflowSerializationContext,
)
from temporalio.exceptions import ApplicationError, FailureError
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInstance,
    WorkflowInstanceDetails,
    WorkflowInterceptorClassInput,
)
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox._runner import _Instance as _SandboxedInstance

from pizzeria.models import INVALID_ORDER_ERROR, WORKFLOW_TYPE, PizzaOrder

UNDECODABLE_PAYLOAD_ERROR = "UndecodablePayloadError"
#: The encoding of the payload the codec hands on in place of ciphertext it could not open
#: (see codec.py); its data says why. No converter reads it: decoding it fails the order.
UNREADABLE_ENCODING = b"binary/unreadable"


def unreadable_payload(reason: str) -> Payload:
    return Payload(metadata={"encoding": UNREADABLE_ENCODING}, data=reason.encode())


def _whole_number_problem(order: Any) -> str | None:
    """JSON decoding turns 1500.5 or true into an int field silently: refuse them instead.

    A number that is missing is left to the decoder, which names the missing field.
    """
    if not isinstance(order, dict):
        return None

    def whole_or_missing(value: Any) -> bool:
        return value is None or (isinstance(value, int) and not isinstance(value, bool))

    customer = order.get("customer")
    if isinstance(customer, dict) and not whole_or_missing(customer.get("customer_id")):
        return "customer.customer_id must be a whole number"
    items = order.get("items")
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and not whole_or_missing(item.get("price")):
            return "item price must be whole cents"
    return None


def _refusal(reason: str, is_order: bool) -> ApplicationError:
    what = "the order" if is_order else "a payload"
    return ApplicationError(
        f"Cannot read {what}: {reason[:300]}",
        type=INVALID_ORDER_ERROR if is_order else UNDECODABLE_PAYLOAD_ERROR,
        non_retryable=True,
    )


class DataclassFieldsEncoder(AdvancedJSONEncoder):
    """The SDK's JSON encoder, handing `json` a dataclass's fields as they are instead of
    a deep copy of them (`dataclasses.asdict`): `json` reaches the nested dataclasses,
    lists and dicts itself, so the JSON is the same, in about half the time."""

    def default(self, o: Any) -> Any:
        if dataclasses.is_dataclass(o) and not isinstance(o, type):
            return {field.name: getattr(o, field.name) for field in dataclasses.fields(o)}
        return super().default(o)


def _with_fields_encoder() -> tuple[EncodingPayloadConverter, ...]:
    """The SDK's default encodings, JSON's with `DataclassFieldsEncoder`."""
    return tuple(
        JSONPlainPayloadConverter(encoder=DataclassFieldsEncoder)
        if type(converter) is JSONPlainPayloadConverter
        else converter
        for converter in DefaultPayloadConverter.default_encoding_payload_converters
    )


class StrictPayloadConverter(DefaultPayloadConverter):
    def __init__(self) -> None:
        CompositePayloadConverter.__init__(self, *_with_fields_encoder())

    def from_payloads(
        self, payloads: Sequence[Payload], type_hints: list[type] | None = None
    ) -> list[Any]:
        # The SDK drops the type hints when the number of payloads does not match the
        # workflow's arguments: only a malformed start does that, so it is read as an order.
        is_order = type_hints is None or PizzaOrder in type_hints
        for payload in payloads:
            if payload.metadata.get("encoding") == UNREADABLE_ENCODING:
                raise _refusal(payload.data.decode(errors="replace"), is_order)
        try:
            if type_hints and PizzaOrder in type_hints:
                self._check_order_numbers(payloads, type_hints)
            values = super().from_payloads(payloads, type_hints)
        except FailureError:
            raise
        except Exception as error:  # RecursionError included: JSON nested too deep
            raise _refusal(str(error.__cause__ or error), is_order) from None
        for value, hint in zip(values, type_hints or [], strict=False):
            # Binary and protobuf encodings ignore the type hint: an order is JSON. (JSON
            # null is left to the workflow, which refuses it with the other bad orders.)
            if hint is PizzaOrder and not isinstance(value, PizzaOrder | None):
                raise _refusal(f"expected a JSON object, got {type(value).__name__}", True)
        return values

    @staticmethod
    def _check_order_numbers(payloads: Sequence[Payload], type_hints: list[type]) -> None:
        for payload, hint in zip(payloads, type_hints, strict=False):
            if hint is not PizzaOrder or payload.metadata.get("encoding") != b"json/plain":
                continue
            try:
                problem = _whole_number_problem(json.loads(payload.data))
            except ValueError:
                continue  # not JSON: the decoder says so
            if problem:
                raise _refusal(problem, is_order=True)


class OneOrderPerStart(Interceptor):
    """An order is started with exactly one argument, the order.

    With none or two, the SDK would call the workflow with the wrong number of arguments:
    a TypeError, which fails the workflow task over and over. This fails the order instead.
    """

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return _OneOrderPerStartInbound


class _OneOrderPerStartInbound(WorkflowInboundInterceptor):
    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        if workflow.info().workflow_type == WORKFLOW_TYPE and len(input.args) != 1:
            raise ApplicationError(
                f"Cannot read the order: a {WORKFLOW_TYPE} starts with exactly one "
                f"argument, the order; got {len(input.args)}",
                type=INVALID_ORDER_ERROR,
                non_retryable=True,
            )
        return await super().execute_workflow(input)


def takes_no_context(converter: DataConverter) -> bool:
    """Whether no part of ``converter`` reads a serialization context or stores payloads
    externally: then every context gives the same converter (`DataConverter.with_context`
    returns it as it is), and the context need not be looked for."""
    contexts = (
        WorkflowSerializationContext(namespace="default", workflow_id="w"),
        ActivitySerializationContext(
            namespace="default",
            workflow_id="w",
            workflow_type="t",
            activity_type="a",
            activity_id="1",
            activity_task_queue="q",
            is_local=False,
        ),
    )
    return converter.external_storage is None and all(
        converter.with_context(context) is converter for context in contexts
    )


class ContextFreeSandboxRunner(SandboxedWorkflowRunner):
    """The SDK's sandbox, for a worker whose converter takes no serialization context.

    For every payload sequence of every activation and completion (six passes: decode,
    encode, external storage and its references), the SDK asks the workflow's instance
    for that payload's serialization context, a trip into the sandbox (running code there)
    each time: about 3 to 6 ms of worker time per order. When nothing in the converter
    reads the context (`takes_no_context`), every answer leads to the same converter, so
    this runner's instances answer at once. Everything else is the SDK's sandbox as it is.
    """

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return _ContextFreeInstance(det, self.runner_class, self.restrictions)


class _ContextFreeInstance(_SandboxedInstance):
    def get_serialization_context(self, command_info: Any) -> SerializationContext | None:
        return None  # the context-free converter: the same for every context

    def get_external_store_context(self, command_info: Any) -> StorageDriverStoreContext:
        return _NO_STORE  # no external storage: the context is never read


_NO_STORE = StorageDriverStoreContext()
