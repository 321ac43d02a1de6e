"""Our own Prometheus metrics, beside the SDK's: orders, compensations, money moved.

They go through the SDK's runtime telemetry, so ``pizzeria worker --metrics-port P``
serves them on ``http://127.0.0.1:P/metrics`` together with the SDK's own metrics.
Order outcomes are counted by the workflow (``pizzeria_orders``; the SDK skips workflow
metrics during replay); activity outcomes are counted here, around every activity.
"""

from __future__ import annotations

import logging
from typing import Any

from temporalio import activity
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from pizzeria.models import (
    COMPENSATE_REFUND_CUSTOMER,
    COMPENSATIONS,
    STEP_PROCESS_CREDIT_CARD,
    STEP_REFUND_UNDELIVERED,
)

#: Where the SDK core's own warnings go in a worker: Python's logging, in the worker's format.
CORE_LOGGER = "temporalio.core"


def worker_runtime(metrics_port: int | None = None) -> Runtime:
    """The worker's runtime. The SDK core's warnings (a server gone away, say) go through
    Python's logging, as the worker's own lines do: written by the core itself they carry
    a terminal's colour codes into a log file. Given a port, the metrics (the SDK's and
    ours) are served on 127.0.0.1:port; a port that cannot be served on (in use) is a
    `MetricsPortError`, one line."""
    forwarded = LoggingConfig(
        filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
        forwarding=LogForwardingConfig(logger=logging.getLogger(CORE_LOGGER)),
    )
    metrics = PrometheusConfig(bind_address=f"127.0.0.1:{metrics_port}") if metrics_port else None
    try:
        return Runtime(telemetry=TelemetryConfig(logging=forwarded, metrics=metrics))
    except ValueError as error:  # the SDK's "Failed starting Prometheus exporter: ..."
        reason = str(error).rpartition(": ")[2] or str(error)
        raise MetricsPortError(
            f"cannot serve metrics on 127.0.0.1:{metrics_port} ({reason}): choose another "
            "--metrics-port"
        ) from None


class MetricsPortError(ConnectionError):
    """The metrics port cannot be served on (a ConnectionError: one line for the CLI)."""


class MetricsInterceptor(Interceptor):
    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _CountingActivity(next)


class _CountingActivity(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        # The meter is asked for only when something is counted: most steps count nothing.
        name = activity.info().activity_type
        try:
            result = await super().execute_activity(input)
        except BaseException:
            if name in COMPENSATIONS:
                activity.metric_meter().create_counter(
                    "pizzeria_compensation_failures", "Compensation attempts that failed"
                ).add(1, {"compensation": name})
            raise
        if name in COMPENSATIONS:
            activity.metric_meter().create_counter(
                "pizzeria_compensations", "Compensations that ran"
            ).add(1, {"compensation": name})
        if name == STEP_PROCESS_CREDIT_CARD:
            activity.metric_meter().create_counter(
                "pizzeria_charged_cents", "Amount charged to cards, in cents"
            ).add(int(result.amount))
        elif name in (COMPENSATE_REFUND_CUSTOMER, STEP_REFUND_UNDELIVERED):
            # Released or refunded by the saga, or refunded to an order no driver took.
            activity.metric_meter().create_counter(
                "pizzeria_refunded_cents", "Amount refunded to cards, in cents"
            ).add(int(result.amount))
        return result
