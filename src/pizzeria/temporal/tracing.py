"""Where the time of an order goes: one OpenTelemetry trace per order, from the API request
through the workflow start, the workflow, each activity, down to the ledger's transactions.

Off unless configured, with the standard variables (docs/tracing.md; read and checked
by `pizzeria.temporal.otel_env`):

- ``OTEL_TRACES_EXPORTER``: ``otlp`` (OTLP over HTTP/protobuf), ``console`` (stderr), or
  ``none``; unset, tracing is on only when an OTLP endpoint is given.
- ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (and the other
  ``OTEL_EXPORTER_OTLP_*``, ``OTEL_BSP_*``, ``OTEL_TRACES_SAMPLER*`` variables, which the SDK
  reads itself), ``OTEL_SERVICE_NAME`` (default ``pizzeria``), ``OTEL_SDK_DISABLED=true``.

Nothing here imports OpenTelemetry until tracing is on: unconfigured, `client_interceptors`
and `worker_interceptors` are empty, `span` yields at once and the API gets no middleware,
so the default path costs nothing (and histories get no tracing header).

The Temporal part is the SDK's `TracingInterceptor` (on the client: the start; on the
worker: the workflow and the activities), which carries the context in Temporal headers.
The trace id is written in the order's memo at the start (`TRACE_MEMO`), so
``pizzeria status`` and ``GET /orders/{n}`` can name the order's trace.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from collections.abc import Callable, Mapping, MutableMapping
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from pizzeria.models import order_ref
from pizzeria.temporal.otel_env import TracingConfigError, exporters_from_env

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer
    from temporalio import client as temporal_client
    from temporalio import worker as temporal_worker
    from temporalio.contrib.opentelemetry import TracingInterceptor

#: The memo entry holding the order's trace id (32 hex digits).
TRACE_MEMO = "trace_id"
DEFAULT_SERVICE_NAME = "pizzeria"
TRACER_NAME = "pizzeria"
#: How long a command about to exit waits for its last spans to leave (a collector that
#: is down would otherwise hold it for the exporter's retries, 10 s).
FLUSH_SECONDS = 2.0


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.read_env = False
        self.provider: TracerProvider | None = None
        self.tracer: Tracer | None = None


_state = _State()


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        # On stderr: stdout is the command's own (one JSON object with --json).
        return ConsoleSpanExporter(out=sys.stderr)
    # Reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS, _TIMEOUT... itself.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def provider_from_env() -> TracerProvider | None:
    """A tracer provider exporting as the environment says, or None when tracing is off."""
    names = exporters_from_env()
    if not names:
        return None
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; what is given
    # here would win over them, so the default is given only when they name no service.
    resource = Resource.create({} if named else {SERVICE_NAME: DEFAULT_SERVICE_NAME})
    try:
        provider = TracerProvider(resource=resource)
        for name in names:
            provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
    except ValueError as error:  # a setting the SDK refuses that the checks above let by
        raise TracingConfigError(f"OpenTelemetry settings: {error}") from None
    return provider


def tracer() -> Tracer | None:
    """The tracer of this process, set up from the environment on the first call; None
    while tracing is off."""
    if not _state.read_env:
        with _state.lock:
            if not _state.read_env:
                provider = provider_from_env()
                if provider is not None:
                    from opentelemetry import trace

                    # Global too, so that other instrumentation joins the same traces.
                    trace.set_tracer_provider(provider)
                    _install(provider)
                _state.read_env = True
    return _state.tracer


def enabled() -> bool:
    return tracer() is not None


def _install(provider: TracerProvider | None) -> None:
    _state.provider = provider
    _state.tracer = provider.get_tracer(TRACER_NAME) if provider is not None else None


def use_tracer_provider(provider: TracerProvider | None) -> None:
    """Trace into ``provider`` from now on, whatever the environment says (None: off).
    For tests (an in-memory exporter) and programs that set up OpenTelemetry themselves.
    Clients and workers built before keep what they had."""
    with _state.lock:
        _state.read_env = True
        _install(provider)


def flush(seconds: float = FLUSH_SECONDS) -> bool:
    """Send the spans still batched (a command about to exit), waiting ``seconds`` at most:
    the SDK's own flush ignores its timeout and retries as long as the exporter does.
    True when they left, or when there was nothing to send."""
    provider = _state.provider
    if provider is None:
        return True
    sending = threading.Thread(target=provider.force_flush, name="flush spans", daemon=True)
    sending.start()
    sending.join(seconds)
    return not sending.is_alive()


# -- Temporal ---------------------------------------------------------------------------


def client_interceptors() -> list[temporal_client.Interceptor]:
    """For `connect`: the SDK's tracing interceptor (it also applies to the workers built
    on the client) and the trace id in the memo of every start; empty when off."""
    active = tracer()
    if active is None:
        return []
    return [_tracing_interceptor(active), _trace_id_in_memo()]


def worker_interceptors(client: temporal_client.Client) -> list[temporal_worker.Interceptor]:
    """For `build_worker`: the tracing interceptor, unless the client brings one already
    (a client from `connect`); empty when off."""
    active = tracer()
    if active is None:
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    if any(isinstance(each, TracingInterceptor) for each in client.config()["interceptors"]):
        return []
    return [_tracing_interceptor(active)]


def run_trace_id(workflow_id: str, run_id: str) -> str:
    """The trace of a run started without one (the exercise's clients, a client with
    tracing off): 32 hex digits made from the run, the same on every worker and replay."""
    return _run_digest(workflow_id, run_id)[:32]


def _run_digest(workflow_id: str, run_id: str) -> str:
    return hashlib.sha256(order_ref(workflow_id, run_id).encode()).hexdigest()


def _tracing_interceptor(active: Tracer) -> TracingInterceptor:
    """The SDK's `TracingInterceptor`, whose workflows started without a trace get one
    made from their run (`run_trace_id`). The SDK's own traces such a workflow's steps
    only as they run, each `RunActivity` the root of a trace of its own, none of them
    found from the order; here they are one trace, under a parent made from the run (a
    span no process records: viewers show the workflow's spans as its roots)."""
    from temporalio import workflow
    from temporalio.contrib.opentelemetry import (
        TracingInterceptor,
        TracingWorkflowInboundInterceptor,
    )
    from temporalio.worker import WorkflowInterceptorClassInput

    class RunTracedWorkflow(TracingWorkflowInboundInterceptor):
        def _load_workflow_context_carrier(self) -> Any:
            carrier = super()._load_workflow_context_carrier()
            if carrier:
                return carrier
            info = workflow.info()
            digest = _run_digest(info.workflow_id, info.run_id)
            self._workflow_context_carrier = {"traceparent": f"00-{digest[:32]}-{digest[32:48]}-01"}
            return self._workflow_context_carrier

    class RunTracing(TracingInterceptor):
        def workflow_interceptor_class(
            self, input: WorkflowInterceptorClassInput
        ) -> type[TracingWorkflowInboundInterceptor]:
            super().workflow_interceptor_class(input)  # the SDK's extern functions
            return RunTracedWorkflow

    return RunTracing(active)


def current_trace_id() -> str | None:
    """The trace id of the current span (32 hex digits), None outside a recorded trace."""
    if tracer() is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    recorded = context.is_valid and context.trace_flags.sampled
    return trace.format_trace_id(context.trace_id) if recorded else None


def _trace_id_in_memo() -> temporal_client.Interceptor:
    """A client interceptor, inside the tracing one (so that its start span is current):
    writes the trace id in the memo of every workflow the client starts."""
    from temporalio.client import (
        Interceptor,
        OutboundInterceptor,
        StartWorkflowInput,
        StartWorkflowUpdateWithStartInput,
        WorkflowHandle,
        WorkflowUpdateHandle,
    )

    def with_trace_id(memo: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
        trace_id = current_trace_id()
        return memo if trace_id is None else {**(memo or {}), TRACE_MEMO: trace_id}

    class TraceIdOnStart(OutboundInterceptor):
        async def start_workflow(self, input: StartWorkflowInput) -> WorkflowHandle[Any, Any]:
            input.memo = with_trace_id(input.memo)
            return await super().start_workflow(input)

        async def start_update_with_start_workflow(
            self, input: StartWorkflowUpdateWithStartInput
        ) -> WorkflowUpdateHandle[Any]:
            # POST /orders starts the order with its order_accepted Update.
            start = input.start_workflow_input
            start.memo = with_trace_id(start.memo)
            return await super().start_update_with_start_workflow(input)

    class TraceIdInMemo(Interceptor):
        def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
            return TraceIdOnStart(next)

    return TraceIdInMemo()


# -- spans of our own -------------------------------------------------------------------


_NO_SPAN: AbstractContextManager[None] = nullcontext()


def span(name: str, **attributes: str | int | float | bool) -> AbstractContextManager[Span | None]:
    """``with span(name, **attributes):`` a span around a piece of work (a ledger
    transaction, a call to the payment provider), child of the current one, its attributes
    prefixed ``pizzeria.``; an exception leaving it is recorded and marks it an error.
    Tracing off, it is a shared ``nullcontext``: nothing is built."""
    active = tracer()
    if active is None:
        return _NO_SPAN
    named = {f"pizzeria.{key}": value for key, value in attributes.items()}
    return active.start_as_current_span(name, attributes=named)


#: A probe's requests, every few seconds: a trace each would bury the orders' traces.
UNTRACED_PATHS = frozenset({"/healthz", "/readyz"})


class RequestSpans:
    """ASGI middleware: one server span per HTTP request (``POST /orders``), so the order
    it starts is one trace with the request as its root. The query string (it may carry an
    order token) and the headers are never recorded.

    A ``traceparent`` header joins the caller's trace only when the request carries a
    credential ``trusted`` accepts (the staff key): a caller at the public front door
    would otherwise choose the trace id an order records, point it at another order's
    trace, or have it unsampled so that no span is kept. Anyone else's request starts a
    trace of its own, with a link to the caller's span.
    """

    def __init__(self, app: Any, trusted: Callable[[str], bool] | None = None) -> None:
        self.app = app
        self.trusted = trusted

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        active = tracer()
        if scope["type"] != "http" or active is None or scope["path"] in UNTRACED_PATHS:
            await self.app(scope, receive, send)
            return
        from opentelemetry import propagate, trace

        carrier = {
            key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]
        }
        callers = propagate.extract(carrier)
        links: list[trace.Link] = []
        if not self._trusts(carrier.get("authorization", "")):
            caller = trace.get_current_span(callers).get_span_context()
            links = [trace.Link(caller)] if caller.is_valid else []
            callers = trace.set_span_in_context(trace.INVALID_SPAN)
        method = scope["method"]
        answered: list[int] = []

        async def noting_status(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answered.append(int(message["status"]))
            await send(message)

        with active.start_as_current_span(
            method,
            context=callers,
            links=links,
            kind=trace.SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope["path"]},
        ) as current:
            try:
                await self.app(scope, receive, noting_status)
            finally:
                _name_request(current, scope, answered)

    def _trusts(self, authorization: str) -> bool:
        scheme, _, credential = authorization.partition(" ")
        if self.trusted is None or scheme.lower() != "bearer" or not credential.strip():
            return False
        return self.trusted(credential.strip())


def _name_request(current: Span, scope: MutableMapping[str, Any], answered: list[int]) -> None:
    from opentelemetry.trace import Status, StatusCode

    route = getattr(scope.get("route"), "path", None)
    if route:
        current.update_name(f"{scope['method']} {route}")
        current.set_attribute("http.route", route)
    if answered:
        current.set_attribute("http.response.status_code", answered[0])
        if answered[0] >= 500:
            current.set_status(Status(StatusCode.ERROR))
