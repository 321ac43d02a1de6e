"""The ``OTEL_*`` variables read and checked (docs/tracing.md): which exporters the
environment asks for, what pizzeria cannot do refused in one line before anything starts,
and where a command's spans go.

Nothing here imports OpenTelemetry: `pizzeria.temporal.tracing` sets the SDK up from what
this module lets through.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from pizzeria.config import number_within

EXPORTERS = ("otlp", "console")
#: The SDK's batching numbers (read by the SDK itself): name, its default, its least value.
#: One it cannot use stops it with a traceback (a queue of 0, a batch above the queue) or
#: logs one (``abc``): refused here in one line instead, before anything starts.
BATCH_NUMBERS = (
    ("OTEL_BSP_SCHEDULE_DELAY", 5000, 1),
    ("OTEL_BSP_EXPORT_TIMEOUT", 30000, 0),
    ("OTEL_BSP_MAX_QUEUE_SIZE", 2048, 1),
    ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512, 1),
)
#: The SDK's span limits: each a whole number from 0, or empty (no limit).
SPAN_LIMITS = (
    "OTEL_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "OTEL_SPAN_EVENT_COUNT_LIMIT",
    "OTEL_SPAN_LINK_COUNT_LIMIT",
    "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT",
)


class TracingConfigError(ConnectionError):
    """The ``OTEL_*`` variables ask for something pizzeria cannot do (one line for the user;
    a ConnectionError, like Temporal's config errors: it keeps a command from connecting)."""


def exporters_from_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """The exporters the environment asks for; empty when tracing is off. What pizzeria
    cannot do (an exporter it lacks, OTLP over anything but HTTP/protobuf, an endpoint that
    is not an http(s) URL) is a `TracingConfigError`, in one line."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    named = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    endpoints = {
        name: env[name].strip()
        for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
        if env.get(name, "").strip()
    }
    if not named:
        names = ["otlp"] if endpoints else []
    else:
        names = [name.strip() for name in named.split(",") if name.strip()]
        if names == ["none"]:
            return []
        if "none" in names:
            raise TracingConfigError(
                f"OTEL_TRACES_EXPORTER={named}: none turns tracing off, and goes alone"
                f" (or name {' or '.join(EXPORTERS)} without it)"
            )
        unknown = [name for name in names if name not in EXPORTERS]
        if unknown:
            raise TracingConfigError(
                f"OTEL_TRACES_EXPORTER={named}: pizzeria exports traces with "
                f"{' or '.join(EXPORTERS)} (or none), not {', '.join(unknown)}"
            )
    if "otlp" in names:
        _check_otlp(env, endpoints)
    if names:
        _check_sdk_numbers(env)
    return names


def _check_sdk_numbers(env: Mapping[str, str]) -> None:
    def whole(name: str, value: str, least: int) -> int:
        number = number_within(value, int, least)
        if number is None:
            raise TracingConfigError(
                f"{name}={value}: the SDK takes a whole number, {least} or more"
            )
        return number

    batch = {
        name: whole(name, env[name], least) if name in env else default
        for name, default, least in BATCH_NUMBERS
    }
    if batch["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"] > batch["OTEL_BSP_MAX_QUEUE_SIZE"]:
        raise TracingConfigError(
            f"OTEL_BSP_MAX_EXPORT_BATCH_SIZE={batch['OTEL_BSP_MAX_EXPORT_BATCH_SIZE']} is more "
            f"than OTEL_BSP_MAX_QUEUE_SIZE={batch['OTEL_BSP_MAX_QUEUE_SIZE']}: a batch is taken "
            "from the queue"
        )
    for name in SPAN_LIMITS:
        if env.get(name, "").strip():
            whole(name, env[name], 0)


def _check_otlp(env: Mapping[str, str], endpoints: Mapping[str, str]) -> None:
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol != "http/protobuf":
        raise TracingConfigError(
            f"OTLP protocol {protocol}: pizzeria sends traces as http/protobuf "
            "(point OTEL_EXPORTER_OTLP_ENDPOINT at the collector's HTTP port, usually 4318)"
        )
    for name, endpoint in endpoints.items():
        if not endpoint.lower().startswith(("http://", "https://")) or not _host_of(endpoint):
            raise TracingConfigError(
                f"{name}={endpoint}: the collector's address is a URL, "
                "http://host:port (its OTLP over HTTP port, usually 4318)"
            )


def _host_of(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:  # a broken port or IPv6 address
        return None


def asked_for(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment asks for tracing, whether or not pizzeria can do it."""
    try:
        return bool(exporters_from_env(environ))
    except TracingConfigError:
        return True


def check_env() -> None:
    """Refuse, before anything starts, what the ``OTEL_*`` variables ask for and pizzeria
    cannot do (`TracingConfigError`); for commands that print or start things before their
    first connection (``pizzeria api``)."""
    exporters_from_env()


def where_traces_go(environ: Mapping[str, str] | None = None) -> str | None:
    """A command's start line: where its spans go (None when tracing is off), so that a
    mistyped endpoint shows before the first batch fails to leave."""
    env = os.environ if environ is None else environ
    try:
        names = exporters_from_env(env)
    except TracingConfigError:
        return None  # said by check_env, in one line, before anything started
    places = []
    for name in names:
        if name != "otlp":
            places.append("the console")
            continue
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or "http://localhost:4318"
        places.append(f"OTLP at {endpoint or base.rstrip('/') + '/v1/traces'}")
    return f"Traces to {' and '.join(places)}" if places else None
