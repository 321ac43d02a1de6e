"""The worker's payload passes over an activation, in one walk instead of three.

Before a workflow sees an activation, the SDK walks the whole activation message three
times, each walk handing every list of payloads to one function: the external storage
references' codec, the external storage's retrieval, then the payload codec (our
encryption); after the workflow, the completion is walked three times the other way. The
walk itself is Python visiting every field of the message: about 0.1 ms a walk, six walks
an activation, most of the 2.7 ms of worker CPU that a fast-path pickup spends there (five
activations). With no external storage, two walks out of three only look for payloads
that are not there.

`install` replaces the SDK's two module functions with ones that walk once and hand each
list of payloads to the same three functions in the same order: each list's result is the
same, and so is the message. With external storage configured (its retrievals run several
at a time) the SDK's own functions run, as they are. They are the SDK's private functions:
`install` checks that they are still what it replaces, and leaves the SDK alone otherwise.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import temporalio.bridge.worker as sdk_worker
from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter
from temporalio.converter._extstore import StorageOperationMetrics
from temporalio.worker._command_aware_visitor import CommandAwarePayloadVisitor

from pizzeria.temporal.codec import EncryptionCodec

PayloadStep = Callable[[Sequence[Payload]], Awaitable[list[Payload]]]

_SDK_DECODE = sdk_worker.decode_activation
_SDK_ENCODE = sdk_worker.encode_completion
#: The parameters of the SDK functions replaced (temporalio 1.35, pinned in pyproject.toml).
_PARAMETERS: dict[Callable[..., Any], list[str]] = {
    _SDK_DECODE: ["activation", "data_converter", "decode_headers", "storage_concurrency_limit"],
    _SDK_ENCODE: ["completion", "data_converter", "encode_headers", "storage_concurrency_limit"],
}
#: The converter's functions each SDK walk hands the payloads to, in the SDK's order.
_DECODE_STEPS = (
    "_decode_reference_payload_sequence",
    "_external_retrieve_payload_sequence",
    "_decode_payload_sequence",
)
_ENCODE_STEPS = (
    "_encode_payload_sequence",
    "_external_store_payload_sequence",
    "_encode_reference_payload_sequence",
)


def _chained(steps: Sequence[PayloadStep]) -> PayloadStep:
    async def chained(payloads: Sequence[Payload]) -> list[Payload]:
        result = list(payloads)
        for step in steps:
            result = await step(result)
        return result

    return chained


class _Walker(CommandAwarePayloadVisitor):
    """The SDK's visitor, handing the summaries and details of commands (their user
    metadata) to ``metadata`` when given, everything else to the walk's own steps."""

    def __init__(self, headers: bool, metadata: sdk_worker._Visitor | None) -> None:
        super().__init__(skip_search_attributes=True, skip_headers=not headers)
        self._metadata = metadata

    async def _visit_temporal_api_sdk_v1_UserMetadata(self, fs: Any, o: Any) -> None:
        await super()._visit_temporal_api_sdk_v1_UserMetadata(self._metadata or fs, o)


async def _walk_once(
    message: Any,
    steps: Sequence[PayloadStep],
    headers: bool,
    metadata: Sequence[PayloadStep] | None = None,
) -> StorageOperationMetrics:
    sealing = sdk_worker._Visitor(_chained(metadata)) if metadata is not None else None
    await _Walker(headers, sealing).visit(sdk_worker._Visitor(_chained(steps)), message)
    return StorageOperationMetrics()  # nothing stored or retrieved: no external storage


def _metadata_steps(data_converter: DataConverter) -> list[PayloadStep] | None:
    """A plain worker's (`pizzeria worker --plain-payloads`) steps for the summaries it
    writes: encrypted all the same. A plain client reads the order's input and answers,
    never a step's summary, and a summary names the customer's street (the distance step's).
    None for an encrypting worker: its own steps encrypt them already."""
    codec = data_converter.payload_codec
    if not isinstance(codec, EncryptionCodec) or codec.encrypt:
        return None
    # The codec's step alone: without external storage (see `_walked`), the other two
    # encoding steps hand the payloads back as they are.
    return [codec.sealing().encode]


async def _walked(
    sdk_function: Callable[..., Awaitable[StorageOperationMetrics]],
    step_names: Sequence[str],
    message: Any,
    data_converter: DataConverter,
    headers: bool,
    storage_concurrency_limit: int,
) -> StorageOperationMetrics:
    """One walk with the converter's steps; the SDK's own walks if storage is external."""
    if data_converter.external_storage is not None:
        return await sdk_function(message, data_converter, headers, storage_concurrency_limit)
    steps = [getattr(data_converter, name) for name in step_names]
    metadata = _metadata_steps(data_converter) if step_names is _ENCODE_STEPS else None
    return await _walk_once(message, steps, headers, metadata)


async def decode_activation(
    activation: Any,
    data_converter: DataConverter,
    decode_headers: bool,
    storage_concurrency_limit: int,
) -> StorageOperationMetrics:
    return await _walked(
        _SDK_DECODE,
        _DECODE_STEPS,
        activation,
        data_converter,
        decode_headers,
        storage_concurrency_limit,
    )


async def encode_completion(
    completion: Any,
    data_converter: DataConverter,
    encode_headers: bool,
    storage_concurrency_limit: int,
) -> StorageOperationMetrics:
    return await _walked(
        _SDK_ENCODE,
        _ENCODE_STEPS,
        completion,
        data_converter,
        encode_headers,
        storage_concurrency_limit,
    )


def sdk_matches() -> bool:
    """Whether the SDK's functions are still the three-walk ones this module replaces."""
    for function, parameters in _PARAMETERS.items():
        if list(inspect.signature(function).parameters) != parameters:
            return False
    steps = (*_DECODE_STEPS, *_ENCODE_STEPS)
    steps_there = all(callable(getattr(DataConverter, step, None)) for step in steps)
    return steps_there and hasattr(sdk_worker, "_Visitor")


def install() -> bool:
    """Use the one walk in this process's workers from now on; False if the SDK changed."""
    if not sdk_matches():
        return False
    sdk_worker.decode_activation = decode_activation  # type: ignore[assignment]
    sdk_worker.encode_completion = encode_completion  # type: ignore[assignment]
    return True
