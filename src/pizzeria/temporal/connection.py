"""Connecting to Temporal the SDK's way: one place for every client (the worker, the CLI,
the API, check, doctor, chaos and bench), so nothing imports the worker only to connect.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from typing import Any

from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.envconfig import ClientConfig
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode

from pizzeria.temporal import tracing, type_hints
from pizzeria.temporal.bounded import BoundedCalls
from pizzeria.temporal.codec import data_converter

DEFAULT_ADDRESS = "localhost:7233"


class TemporalConfigError(ConnectionError):
    """The SDK's env config cannot be read (a broken TOML file, an unknown profile)."""


#: HOST:PORT, the host a name, an IPv4 address or a bracketed IPv6 one.
ADDRESS_SHAPE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):[0-9]{1,5}")


def connect_config(address: str | None = None, namespace: str | None = None) -> dict[str, Any]:
    """What `connect` hands the SDK: the env config (TEMPORAL_ADDRESS, TEMPORAL_PROFILE and
    TEMPORAL_CONFIG_FILE, TLS, TEMPORAL_API_KEY), with ``address`` and ``namespace`` on top.

    Only when nothing is configured does the address default to localhost:7233.
    """
    try:
        config: dict[str, Any] = dict(ClientConfig.load_client_connect_config())
    except RuntimeError as error:  # the SDK's ConfigError
        where = os.environ.get("TEMPORAL_CONFIG_FILE", "the default config file")
        profile = os.environ.get("TEMPORAL_PROFILE", "default")
        reason = " ".join(str(error).split())
        if where != "the default config file" and not os.path.exists(where):
            reason = "there is no such file (TEMPORAL_CONFIG_FILE)"
        raise TemporalConfigError(
            f"cannot read the Temporal client config ({where}, profile {profile}): {reason}"
        ) from None
    if address is not None:
        if not ADDRESS_SHAPE.fullmatch(address):
            raise TemporalConfigError(
                f"the Temporal address {address!r} is not host:port (say 127.0.0.1:7233)"
            )
        config["target_host"] = address
    config.setdefault("target_host", DEFAULT_ADDRESS)
    if namespace:
        config["namespace"] = namespace
    config.setdefault("namespace", "default")
    return config


async def connect(
    address: str | None = None,
    namespace: str | None = None,
    runtime: Runtime | None = None,
    encrypt: bool = True,
    converter: DataConverter | None = None,
    lazy: bool = False,
    create_key: bool = True,
    call_seconds: float | None = None,
) -> Client:
    """A client from the SDK's env config (see `connect_config`), so the same command runs
    against a dev server here and a Temporal cluster elsewhere. Payloads are encrypted (see
    codec.py); with ``encrypt=False`` they are sent plain but encrypted ones are still
    decrypted; a reader (``create_key=False``) makes no key file where there is none.
    ``converter`` replaces the codec's converter. A ``lazy`` client connects at its first call
    (``pizzeria api`` starts, and says it is not ready, while Temporal is still down).
    ``call_seconds`` bounds each call that should answer at once (`bounded.BoundedCalls`).
    """
    config = connect_config(address, namespace)
    type_hints.install()
    config["data_converter"] = converter or data_converter(encrypt, create_key)
    config["interceptors"] = [
        *tracing.client_interceptors(),  # none unless OTEL_* asks
        *([BoundedCalls(call_seconds)] if call_seconds is not None else []),
    ]
    try:
        return await Client.connect(**config, runtime=runtime, lazy=lazy)
    except ValueError as error:  # the SDK's "invalid target URL: invalid port number"...
        raise TemporalConfigError(
            f"the Temporal address {config['target_host']} is not host:port ({error})"
        ) from None


#: A TLS client's greeting answered in plain HTTP/2 (TLS is on with TEMPORAL_API_KEY).
NO_TLS_THERE = "TLS asked, and the server answered without it"


#: The port answers, and not in gRPC over HTTP/2 (a web server, another service).
NOT_TEMPORAL_THERE = "what answers there is not a gRPC server: another service's port?"


def connection_failure(said: str) -> str:
    """Why the SDK could not connect, in a few words (its text is a transport's debug
    string, parentheses and all)."""
    lowered = said.lower()
    if "invalidcontenttype" in lowered:  # a transport error too, of a server that is there
        return NO_TLS_THERE
    # Connected, then the first call failed in the HTTP/2 transport (a protocol error, a
    # transport error, the connection closed: the same server answers each of them, one
    # or another by timing): what answers is no gRPC server.
    if "call error after connection" in lowered and any(
        clue in lowered
        for clue in ("tonic::transport::error(transport", "h2 protocol error", "transport error")
    ):
        return NOT_TEMPORAL_THERE
    for clue, words in (
        ("refused", "connection refused"),
        ("dns error", "the host name does not resolve"),
        ("timed out", "no answer in time"),
        ("deadline", "no answer in time"),
        ("certificate", "a TLS certificate problem"),
        ("tls", "a TLS problem"),
    ):
        if clue in lowered:
            return words
    first = " ".join(said.split())
    return first if len(first) <= 120 else first[:117] + "..."


def no_namespace(target: str, namespace: str) -> str:
    """What to do when the server at ``target`` has no ``namespace``."""
    return (
        f"{target} has no namespace {namespace!r}: create it "
        f"(`temporal operator namespace create --namespace {namespace}`) or set "
        "TEMPORAL_NAMESPACE"
    )


async def namespace_or_fail(client: Client) -> None:
    """Raise `LookupError` (one line) when the client's namespace does not exist: a worker
    would poll it for ever and never get a task, saying nothing. Any other refusal (a
    credential that may not describe namespaces) is left to the calls that follow."""
    try:
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=client.namespace), timeout=timedelta(seconds=10)
        )
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            target = client.service_client.config.target_host
            raise LookupError(no_namespace(target, client.namespace)) from None
