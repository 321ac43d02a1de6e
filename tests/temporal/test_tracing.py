"""One trace per order (docs/tracing.md): the API request, the start, the workflow, each
activity and the ledger's transactions, as one tree of spans, read from an in-memory
exporter; the trace id shown by ``pizzeria status`` and ``GET /orders/{n}``; nothing traced,
nothing added to a history, unless the ``OTEL_*`` variables ask; histories replay the same
with or without the tracing interceptor.
"""

from __future__ import annotations

import io
import os
import re
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import format_trace_id
from temporalio.client import Client, WorkflowFailureError, WorkflowHistory
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.worker import Replayer

from pizzeria.api.app import ApiSettings, create_app
from pizzeria.api.auth import Keys
from pizzeria.cli.orders import render_report
from pizzeria.client import start_order
from pizzeria.history.timeline import order_report
from pizzeria.models import (
    COMPENSATE_REFUND_CUSTOMER,
    COMPENSATE_REVERT_INVENTORY,
    STEP_GET_DISTANCE,
    STEP_NOTIFY_DELIVERY_DRIVER,
    STEP_PROCESS_CREDIT_CARD,
    STEP_SEND_BILL,
    STEP_UPDATE_INVENTORY,
    TASK_QUEUE,
    PizzaOrder,
    workflow_id_for,
)
from pizzeria.ops.processes import dev_server, free_port
from pizzeria.payments import process as payments_process
from pizzeria.payments.port import order_metadata
from pizzeria.payments.stripe_gateway import StripeGateway
from pizzeria.samples import BAD_CARD, sample_order
from pizzeria.temporal import devserver, otel_env, tracing
from pizzeria.temporal.converter import OneOrderPerStart
from pizzeria.worker import ServedActivities, build_worker
from pizzeria.workflows import PizzaOrderWorkflow
from tests.helpers import run_pizzeria, unique_number
from tests.helpers.api_stack import order_body

WORKFLOW = "PizzaOrderWorkflow"
START = f"StartWorkflow:{WORKFLOW}"
LEDGER = "ledger transaction"
PROVIDER_CALL = "payment provider call"
# POST /orders starts the order with its order_accepted Update (answered at the card hold).
UPDATE_WITH_START = f"StartUpdateWithStartWorkflow:{WORKFLOW}"
STAFF = "staff-key-of-the-tracing-tests-0123456789"
HISTORIES = sorted((Path(__file__).parents[1] / "histories").glob("*.json"))


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    """Tracing on for the test, into memory; off again afterwards."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_tracer_provider(provider)
    try:
        yield exporter
    finally:
        tracing.use_tracer_provider(None)
        provider.shutdown()


def traced(client: Client) -> Client:
    """The test server's client as `connect` makes it when tracing is on."""
    config = client.config()
    config["interceptors"] = tracing.client_interceptors()
    return Client(**config)


def edges(spans: Sequence[ReadableSpan], trace_id: int) -> Counter[tuple[str | None, str]]:
    """The trace as (parent's name, span's name) pairs, counted: the tree of spans."""
    mine = [
        span for span in spans if span.context is not None and span.context.trace_id == trace_id
    ]
    names = {span.context.span_id: span.name for span in mine if span.context is not None}
    return Counter(
        (names.get(span.parent.span_id) if span.parent is not None else None, span.name)
        for span in mine
    )


def activity_edges(
    name: str, ledger_writes: int, provider_calls: int = 0, start: str | None = START
) -> Counter[tuple[str | None, str]]:
    """An activity as the workflow starts it: under the start, its run, its transactions
    and its calls to the payment provider."""
    run = f"RunActivity:{name}"
    pairs: dict[tuple[str | None, str], int] = {
        (start, f"StartActivity:{name}"): 1,
        (f"StartActivity:{name}", run): 1,
    }
    if ledger_writes:
        pairs[(run, LEDGER)] = ledger_writes
    if provider_calls:
        pairs[(run, PROVIDER_CALL)] = provider_calls
    return Counter(pairs)


def root_of(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    (found,) = [span for span in spans if span.name == name]
    return found


@pytest.fixture
async def api_http(client: Client, ledger_location: str) -> AsyncIterator[httpx.AsyncClient]:
    """The order API in this process, on a traced client (created after tracing is on)."""
    app = create_app(
        ApiSettings(Keys(b"k" * 32, STAFF), client=traced(client), ledger_location=ledger_location)
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
        ) as http,
    ):
        # Staff: the test order has no waits (its settings), which only staff may ask for.
        http.headers["Authorization"] = f"Bearer {STAFF}"
        yield http


async def test_an_order_placed_over_http_is_one_trace_from_the_request_to_the_ledger(
    exported: InMemorySpanExporter,
    client: Client,
    served: ServedActivities,
    api_http: httpx.AsyncClient,
):
    body = order_body(unique_number("traced"))  # staff may choose the order number
    # The API starts orders on the task queue of the wire contract; the worker is built as
    # `pizzeria worker` builds it, on a client from `connect` (tracing on it already).
    async with build_worker(traced(client), served, task_queue=TASK_QUEUE):
        placed = await api_http.post("/orders", json=body)
        assert placed.status_code == 201, placed.text  # answered at the card hold
        number = placed.json()["order_number"]
        await client.get_workflow_handle(workflow_id_for(number)).result()

        assert (await api_http.get("/healthz")).status_code == 200  # a probe: no trace
    spans = exported.get_finished_spans()
    assert not [span for span in spans if span.name.startswith("GET")], spans
    request = root_of(spans, "POST /orders")
    assert request.parent is None and request.context is not None
    assert request.attributes is not None and request.attributes["http.response.status_code"] == 201
    trace_id = request.context.trace_id
    expected = Counter(
        {
            (None, "POST /orders"): 1,
            ("POST /orders", UPDATE_WITH_START): 1,
            (UPDATE_WITH_START, f"RunWorkflow:{WORKFLOW}"): 1,
            (UPDATE_WITH_START, f"CompleteWorkflow:{WORKFLOW}"): 1,
            (UPDATE_WITH_START, "HandleUpdate:order_accepted"): 1,
        }
    )
    for step, writes, provider_calls in (
        (STEP_GET_DISTANCE, 0, 0),
        (STEP_UPDATE_INVENTORY, 1, 0),
        (STEP_PROCESS_CREDIT_CARD, 1, 1),  # the hold
        (STEP_SEND_BILL, 1, 1),  # its capture
        (STEP_NOTIFY_DELIVERY_DRIVER, 0, 0),
    ):
        expected += activity_edges(step, writes, provider_calls, start=UPDATE_WITH_START)
    assert edges(spans, trace_id) == expected
    # Each ledger transaction names the run it wrote for.
    ledger_spans = [span for span in spans if span.name == LEDGER]
    assert {(span.attributes or {}).get("pizzeria.order_ref", "") for span in ledger_spans} == {
        f"{workflow_id_for(number)}/{(await order_run_id(client, number))}"
    }

    # The order shows its trace: the API's view and `pizzeria status`.
    view = await api_http.get(f"/orders/{number}")
    assert view.status_code == 200, view.text
    assert view.json()["trace_id"] == format_trace_id(trace_id)
    # A token in the query (the page's event stream) never reaches a span.
    token = placed.json()["order_token"]
    await api_http.get(f"/orders/{number}/events", params={"token": token})
    followed = root_of(exported.get_finished_spans(), "GET /orders/{order_number}/events")
    assert followed.attributes is not None
    assert followed.attributes["url.path"] == f"/orders/{number}/events"
    for span in exported.get_finished_spans():
        assert not any(token in str(value) for value in (span.attributes or {}).values())
    report = await order_report(client, client.get_workflow_handle(workflow_id_for(number)))
    assert f"trace {format_trace_id(trace_id)}" in render_report(report)


async def order_run_id(client: Client, number: str) -> str:
    return (await client.get_workflow_handle(workflow_id_for(number)).describe()).run_id


async def test_a_refused_card_traces_its_compensations_in_order_and_replays_untraced(
    exported: InMemorySpanExporter, client: Client, served: ServedActivities, task_queue: str
):
    """Started by a client (`pizzeria order`), served by a worker whose client has no
    tracing: `build_worker` adds the interceptor itself."""
    order = sample_order(unique_number("traced-bad"), card=BAD_CARD, prep_seconds=0)
    async with build_worker(client, served, task_queue=task_queue):
        handle = await start_order(traced(client), order, task_queue)
        with pytest.raises(WorkflowFailureError):
            await handle.result()

    spans = exported.get_finished_spans()
    start = root_of(spans, START)
    assert start.parent is None and start.context is not None
    expected = Counter(
        {
            (None, START): 1,
            (START, f"RunWorkflow:{WORKFLOW}"): 1,
            (START, f"CompleteWorkflow:{WORKFLOW}"): 1,
        }
    )
    for step, writes, provider_calls in (
        (STEP_GET_DISTANCE, 0, 0),
        (STEP_UPDATE_INVENTORY, 1, 0),
        # The provider refuses the number: no hold, nothing in the ledger.
        (STEP_PROCESS_CREDIT_CARD, 0, 1),
        # Two calls: the hold's key is tried (used: the refused number), then looked up
        # (nothing held to release).
        (COMPENSATE_REFUND_CUSTOMER, 1, 2),
        (COMPENSATE_REVERT_INVENTORY, 1, 0),
    ):
        expected += activity_edges(step, writes, provider_calls)
    assert edges(spans, start.context.trace_id) == expected
    refund = root_of(spans, f"RunActivity:{COMPENSATE_REFUND_CUSTOMER}")
    revert = root_of(spans, f"RunActivity:{COMPENSATE_REVERT_INVENTORY}")
    assert refund.end_time is not None and revert.start_time is not None
    assert refund.end_time <= revert.start_time, "refund_customer, then revert_inventory"
    completed = root_of(spans, f"CompleteWorkflow:{WORKFLOW}")
    assert any(event.name == "exception" for event in completed.events)
    assert await (await handle.describe()).memo_value(tracing.TRACE_MEMO) == format_trace_id(
        start.context.trace_id
    )

    # The traced history replays with no tracing at all: the commands are the same.
    history = await handle.fetch_history()
    replayed = await Replayer(
        workflows=[PizzaOrderWorkflow], interceptors=[OneOrderPerStart()]
    ).replay_workflow(history, raise_on_replay_failure=False)
    assert replayed.replay_failure is None


async def test_an_order_started_without_a_trace_is_one_trace_made_from_its_run(
    exported: InMemorySpanExporter, client: Client, served: ServedActivities, task_queue: str
):
    """The exercise's clients (and any client with tracing off) start an order with no
    tracing header: a traced worker still makes it one trace, not one per step."""
    order = sample_order(unique_number("untraced-start"), prep_seconds=0)
    async with build_worker(client, served, task_queue=task_queue):
        handle = await start_order(client, order, task_queue)  # no tracing on this client
        await handle.result()
    run_id = (await handle.describe()).run_id
    trace_id = int(tracing.run_trace_id(handle.id, run_id), 16)

    spans = exported.get_finished_spans()
    # The workflow's spans hang under a parent made from the run, which no process records.
    expected: Counter[tuple[str | None, str]] = Counter(
        {(None, f"RunWorkflow:{WORKFLOW}"): 1, (None, f"CompleteWorkflow:{WORKFLOW}"): 1}
    )
    for step, writes, provider_calls in (
        (STEP_GET_DISTANCE, 0, 0),
        (STEP_UPDATE_INVENTORY, 1, 0),
        (STEP_PROCESS_CREDIT_CARD, 1, 1),
        (STEP_SEND_BILL, 1, 1),
        (STEP_NOTIFY_DELIVERY_DRIVER, 0, 0),
    ):
        expected += activity_edges(step, writes, provider_calls, start=None)
    assert edges(spans, trace_id) == expected
    assert {span.context.trace_id for span in spans if span.context is not None} == {trace_id}
    # The run has one trace on every worker: its id is the run's, not a memo's.
    assert await (await handle.describe()).memo_value(tracing.TRACE_MEMO, None) is None
    assert tracing.run_trace_id(handle.id, run_id) != tracing.run_trace_id(handle.id, "other")


async def test_recorded_histories_replay_with_the_tracing_interceptor(
    exported: InMemorySpanExporter,
):
    replayer = Replayer(
        workflows=[PizzaOrderWorkflow],
        interceptors=[TracingInterceptor(tracing.tracer()), OneOrderPerStart()],
    )
    assert HISTORIES
    for path in HISTORIES:
        history = WorkflowHistory.from_json(f"pizza-workflow-order-{path.stem}", path.read_text())
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is None, f"{path.stem}: {result.replay_failure}"
    # A replay is not the order running again: it records no span.
    assert exported.get_finished_spans() == ()


# -- off unless configured ------------------------------------------------------------------


async def test_unconfigured_nothing_is_traced_and_the_history_carries_nothing(
    client: Client, served: ServedActivities, task_queue: str, order: PizzaOrder
):
    assert otel_env.exporters_from_env({}) == []
    tracing.use_tracer_provider(None)
    assert tracing.client_interceptors() == []
    assert tracing.worker_interceptors(client) == []
    with tracing.span("ledger transaction", order_ref="x") as current:
        assert current is None
    placed = sample_order(unique_number("untraced"), prep_seconds=0)
    async with build_worker(client, served, task_queue=task_queue) as worker:
        assert not any(
            isinstance(each, TracingInterceptor) for each in worker.config()["interceptors"]
        )
        handle = await start_order(client, placed, task_queue)
        await handle.result()
    assert await (await handle.describe()).memo_value(tracing.TRACE_MEMO, None) is None
    async for event in handle.fetch_history_events():
        for attributes in (
            event.workflow_execution_started_event_attributes,
            event.activity_task_scheduled_event_attributes,
        ):
            assert "_tracer-data" not in attributes.header.fields


@pytest.mark.parametrize(
    ("environ", "exporters"),
    [
        ({}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
        ({"OTEL_TRACES_EXPORTER": "otlp, console"}, ["otlp", "console"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, []),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, []),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            ["otlp"],
        ),
    ],
)
def test_the_otel_variables_decide_the_exporters(environ: dict[str, str], exporters: list[str]):
    assert otel_env.exporters_from_env(environ) == exporters


def test_a_command_says_where_its_traces_go_when_it_starts():
    assert otel_env.where_traces_go({}) is None
    assert otel_env.where_traces_go({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318/"}) == (
        "Traces to OTLP at http://127.0.0.1:4318/v1/traces"
    )
    both = {"OTEL_TRACES_EXPORTER": "otlp,console"}
    assert otel_env.where_traces_go(both) == (
        "Traces to OTLP at http://localhost:4318/v1/traces and the console"
    )


@pytest.mark.parametrize(
    ("environ", "says"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "otlp or console (or none), not zipkin"),
        (
            {"OTEL_TRACES_EXPORTER": "console,none"},
            "OTEL_TRACES_EXPORTER=console,none: none turns tracing off, and goes alone",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTLP protocol grpc: pizzeria sends traces as http/protobuf",
        ),
        (  # an endpoint alone chooses OTLP, and the same checks
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
            },
            "OTLP protocol http/json: pizzeria sends traces as http/protobuf",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "127.0.0.1:4318"},
            "OTEL_EXPORTER_OTLP_ENDPOINT=127.0.0.1:4318: the collector's address is a URL",
        ),
        (  # a URL with no host
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://"},
            "OTEL_EXPORTER_OTLP_ENDPOINT=http://: the collector's address is a URL",
        ),
        # The SDK's own numbers: a traceback from the SDK (a crash, or a logged one) else.
        (
            {"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_MAX_QUEUE_SIZE": "0"},
            "OTEL_BSP_MAX_QUEUE_SIZE=0: the SDK takes a whole number, 1 or more",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "abc"},
            "OTEL_BSP_SCHEDULE_DELAY=abc: the SDK takes a whole number, 1 or more",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "5000"},
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE=5000 is more than OTEL_BSP_MAX_QUEUE_SIZE=2048",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_ATTRIBUTE_COUNT_LIMIT": "abc"},
            "OTEL_ATTRIBUTE_COUNT_LIMIT=abc: the SDK takes a whole number, 0 or more",
        ),
    ],
)
def test_what_pizzeria_cannot_export_is_one_clear_line(environ: dict[str, str], says: str):
    with pytest.raises(otel_env.TracingConfigError, match=re.escape(says)):
        otel_env.exporters_from_env(environ)
    # As a user meets it: before anything connects, one line, exit 1.
    done = run_pizzeria("orders", env={**os.environ, **environ}, timeout=60)
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and says in line


def test_the_api_refuses_what_it_cannot_export_before_it_says_where_it_listens():
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "zipkin"}
    done = run_pizzeria("api", "--port", str(free_port()), env=env, timeout=60)
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""  # no "Order page http://..." for an address that never answers
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: OTEL_TRACES_EXPORTER=zipkin")


def test_console_spans_go_to_stderr_and_leave_stdout_to_the_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # stdout is the command's: with --json, one JSON object.
    stderr, stdout = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    provider = tracing.provider_from_env()
    assert provider is not None
    try:
        provider.get_tracer("t").start_span("one span").end()
        provider.force_flush()
    finally:
        provider.shutdown()
    assert '"name": "one span"' in stderr.getvalue() and stdout.getvalue() == ""


# -- the OTLP exporter the environment sets up ---------------------------------------------


class _Collector(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    """An OTLP/HTTP receiver on 127.0.0.1 keeping what it receives: its base URL."""
    _Collector.received = []
    server = HTTPServer(("127.0.0.1", free_port()), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_an_otlp_endpoint_gets_the_spans_as_protobuf_named_by_the_service(
    collector: str, monkeypatch: pytest.MonkeyPatch
):
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector)
    provider = tracing.provider_from_env()
    assert provider is not None
    try:
        with provider.get_tracer("test").start_as_current_span("ledger transaction"):
            pass
        assert provider.force_flush(10_000)
    finally:
        provider.shutdown()
    ((path, content_type, body),) = _Collector.received
    assert (path, content_type) == ("/v1/traces", "application/x-protobuf")
    request = ExportTraceServiceRequest.FromString(body)
    (resource_spans,) = request.resource_spans
    service = {
        attribute.key: attribute.value.string_value
        for attribute in resource_spans.resource.attributes
    }["service.name"]
    assert service == "pizzeria"
    assert [span.name for scope in resource_spans.scope_spans for span in scope.spans] == [
        "ledger transaction"
    ]


# -- the payment provider's HTTP calls -------------------------------------------------------


async def test_a_call_to_the_payment_provider_is_a_span_under_its_caller(
    exported: InMemorySpanExporter, tmp_path: Path
):
    started = payments_process.start(tmp_path / "payments.db", faults_file=tmp_path / "f.json")
    gateway = StripeGateway(payments_process.LOCAL_SECRET_KEY, started.url, timeout=30)
    try:
        tracer = tracing.tracer()
        assert tracer is not None
        with tracer.start_as_current_span("RunActivity:process_credit_card"):
            held = await gateway.authorize(
                2500,
                idempotency_key=f"pizza-workflow-order-T1/{uuid.uuid4()}/process_credit_card",
                metadata=order_metadata("pizza-workflow-order-T1/run-1", "T1"),
                card_number="4242424242424242",
            )
    finally:
        await gateway.close()
        started.stop()
    assert held.amount == 2500
    spans = exported.get_finished_spans()
    caller = root_of(spans, "RunActivity:process_credit_card")
    assert caller.context is not None
    assert edges(spans, caller.context.trace_id) == Counter(
        {
            (None, "RunActivity:process_credit_card"): 1,
            ("RunActivity:process_credit_card", "payment provider call"): 1,
        }
    )
    call = root_of(spans, "payment provider call")
    assert call.attributes is not None and call.attributes["pizzeria.url"] == started.url
    # Which call it was, and the provider's answer: a hold is a POST that created it.
    assert (call.attributes["pizzeria.method"], call.attributes["pizzeria.path"]) == (
        "POST",
        "/v1/payment_intents",
    )
    assert call.attributes["pizzeria.status"] == 200
    assert not any("4242424242424242" in str(value) for value in call.attributes.values())


class _Stuck(SpanExporter):
    """A collector that never answers, until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.called = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.called.set()
        self.release.wait(60)
        return SpanExportResult.SUCCESS


def test_a_command_exits_without_waiting_for_a_collector_that_does_not_answer():
    stuck = _Stuck()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(stuck))
    tracing.use_tracer_provider(provider)
    try:
        with tracing.span("ledger transaction", order_ref="x"):
            pass
        began = time.monotonic()
        assert tracing.flush(0.5) is False
        assert time.monotonic() - began < 30  # the exporter alone would wait 60 s
        assert stuck.called.wait(30), "the span was handed to the exporter"
    finally:
        tracing.use_tracer_provider(None)
        stuck.release.set()
        provider.shutdown()
    assert tracing.flush() is True  # off: nothing to send


def test_the_dev_server_we_start_runs_whatever_otel_variables_configure_our_tracing(
    monkeypatch: pytest.MonkeyPatch,
):
    """``OTEL_TRACES_EXPORTER=console`` is ours (a pizzeria process prints its spans); the
    Temporal server reads the same variables and refused to start on it, so `pizzeria
    server`, the demo and the bench failed for a user who had exported it."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "pizzeria-test")
    environment = devserver.server_environment()
    assert not [name for name in environment if name.startswith("OTEL_")]
    assert environment["PATH"] == os.environ["PATH"]
    with dev_server(None, headless=True) as server:
        assert devserver.serving(server.address, ("default",))


CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


@pytest.mark.parametrize(
    ("credential", "flags", "joined"),
    [
        (None, "01", False),  # anyone: a trace of its own, linked to the caller's
        (None, "00", False),  # an unsampled caller cannot have the order's spans dropped
        ("a customer's token", "01", False),
        (STAFF, "01", True),  # staff (a gateway of yours): the caller's trace
        (STAFF, "00", True),  # ... unsampled as it asks: nothing kept, no trace id shown
    ],
    ids=["anonymous", "anonymous-unsampled", "customer", "staff", "staff-unsampled"],
)
async def test_only_a_trusted_caller_chooses_the_trace_a_request_joins(
    exported: InMemorySpanExporter, credential: str | None, flags: str, joined: bool
):
    seen: list[str | None] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(tracing.current_trace_id())  # what an order started here records
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = tracing.RequestSpans(app, trusted=lambda given: given == STAFF)
    headers = {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-{flags}"}
    if credential is not None:
        headers["Authorization"] = f"Bearer {credential}"
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=middleware), base_url="http://127.0.0.1"
    ) as http:
        assert (await http.get("/orders", headers=headers)).status_code == 204

    spans = exported.get_finished_spans()
    if joined and flags == "00":
        assert not spans and seen == [None]
        return
    (request,) = spans
    assert request.context is not None
    assert seen == [format_trace_id(request.context.trace_id)]
    if joined:
        assert format_trace_id(request.context.trace_id) == CALLER_TRACE
        assert request.parent is not None and f"{request.parent.span_id:016x}" == CALLER_SPAN
    else:
        assert format_trace_id(request.context.trace_id) != CALLER_TRACE
        assert request.parent is None
        assert [format_trace_id(link.context.trace_id) for link in request.links] == [CALLER_TRACE]
