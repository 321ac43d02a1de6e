"""``pizzeria doctor``: is this machine's setup one that orders can run on?

Each check answers one question with a `Verdict` (ok, or FAIL and why, in one line): can
we reach Temporal and its namespace, is the ``OrderStatus`` search attribute registered,
do workers poll ``pizza-tasks``, is the ledger there with the schema version this code
expects, is there a codec key, and do the latest orders decrypt with it. `diagnose` runs
them all; a check that needs a failed one is skipped, saying which.

None of them changes anything: the ledger is opened read-only (never created or
upgraded), the codec key is read, never created, and the orders' payloads are decrypted
in memory only. The command is ``pizzeria.cli.doctor``.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from temporalio.api.enums.v1 import IndexedValueType, TaskQueueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from pizzeria import config
from pizzeria.ledger import LedgerError, open_ledger
from pizzeria.models import ORDER_STATUS, REGISTER_ORDER_STATUS
from pizzeria.payments.errors import PaymentError, PaymentUnavailable
from pizzeria.payments.process import default_data_file as default_payments_file
from pizzeria.payments.provider.engine import secret_file_of
from pizzeria.payments.provider_config import shown_url
from pizzeria.private import readable_by_others
from pizzeria.refunds import staff_gateway
from pizzeria.temporal.codec import (
    CodecKeyError,
    key_file,
    load_keys,
)
from pizzeria.temporal.codec_server import auth_file as codec_auth_file
from pizzeria.temporal.connection import (
    NO_TLS_THERE,
    TemporalConfigError,
    connect_config,
    connection_failure,
    no_namespace,
)
from pizzeria.temporal.server_facts import (
    CALL_TIMEOUT,
    foreign_orders,
    foreign_said,
    last_poll,
    polled_lately,
    pollers_of,
)

CONNECT_SECONDS = 15.0
RECENT_ORDERS = 5

OK = "ok"
FAIL = "FAIL"
SKIP = "skip"


@dataclass(frozen=True)
class Verdict:
    check: str
    verdict: str  # OK, FAIL, or SKIP when a check it needs failed
    detail: str

    @property
    def failed(self) -> bool:
        return self.verdict != OK

    def to_json(self) -> dict[str, Any]:
        return {"check": self.check, "verdict": self.verdict, "detail": self.detail}


def skipped(check: str, because: str) -> Verdict:
    return Verdict(check, SKIP, f"not checked: {because}")


def rpc_reason(error: RPCError) -> str:
    hints = {
        RPCStatusCode.UNAUTHENTICATED: " (check TEMPORAL_API_KEY or the client certificate)",
        RPCStatusCode.PERMISSION_DENIED: " (this API key or certificate may not do that)",
    }
    return f"{error.status.name}: {error.message}{hints.get(error.status, '')}"


# -- Temporal ------------------------------------------------------------------------------


async def check_temporal(address: str | None) -> tuple[Verdict, Client | None]:
    """Connect as every command does (the SDK's env config), then look up the namespace."""
    try:
        config = connect_config(address)
    except TemporalConfigError as error:
        return Verdict("temporal", FAIL, str(error)), None
    target, namespace = config["target_host"], config["namespace"]
    security = ["TLS" if config.get("tls") else "no TLS"]
    if config.get("api_key"):
        security.append("API key set")
    where = f"{target}, namespace {namespace} ({', '.join(security)})"
    try:
        # No codec: the payloads check decrypts by hand, to say which key an order needs.
        client = await asyncio.wait_for(Client.connect(**config), CONNECT_SECONDS)
    except TimeoutError:
        return Verdict("temporal", FAIL, f"no answer from {where} in {CONNECT_SECONDS:g} s"), None
    except RuntimeError as error:
        reason = connection_failure(str(error))
        if reason == NO_TLS_THERE:  # an API key turns TLS on, as the SDK's env config does
            reason += "; for a server without TLS (the dev server), set TEMPORAL_TLS=false"
        return Verdict("temporal", FAIL, f"cannot reach {where}: {reason}"), None
    try:
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=namespace), timeout=CALL_TIMEOUT
        )
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            detail = no_namespace(target, namespace)
        else:
            detail = f"{where} refused: {rpc_reason(error)}"
        return Verdict("temporal", FAIL, detail), None
    return Verdict("temporal", OK, where), client


async def check_search_attribute(client: Client) -> Verdict:
    try:
        response = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace), timeout=CALL_TIMEOUT
        )
    except RPCError as error:
        return Verdict("search attribute", FAIL, f"cannot list them: {rpc_reason(error)}")
    kind = response.custom_attributes.get(ORDER_STATUS.name)
    if kind is None:
        return Verdict(
            "search attribute",
            FAIL,
            f"{ORDER_STATUS.name} is not registered in namespace {client.namespace}: orders "
            f"run untracked and `pizzeria orders --status` finds none; register it with "
            f"`{REGISTER_ORDER_STATUS}`",
        )
    if kind != IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD:
        return Verdict(
            "search attribute",
            FAIL,
            f"{ORDER_STATUS.name} is registered as {IndexedValueType.Name(kind)}, not Keyword",
        )
    return Verdict("search attribute", OK, f"{ORDER_STATUS.name} (Keyword) is registered")


async def check_pollers(client: Client, task_queue: str) -> Verdict:
    """Workers seen polling the queue recently, for workflow tasks and for activities."""
    seen: dict[str, set[str]] = {}
    latest: datetime | None = None  # the last poll of a worker still polling
    gone: datetime | None = None  # the last poll of one that stopped
    now = datetime.now(UTC)
    for kind, label in (
        (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, "workflow"),
        (TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY, "activity"),
    ):
        try:
            polling = await pollers_of(client, task_queue, kind)
        except RPCError as error:
            return Verdict("pollers", FAIL, f"cannot describe {task_queue}: {rpc_reason(error)}")
        seen[label] = set()
        for poller in polling:
            at = last_poll(poller)
            if polled_lately(poller, now):
                seen[label].add(poller.identity)
                latest = at if latest is None or at > latest else latest
            else:  # listed by the server a while longer, but gone
                gone = at if gone is None or at > gone else gone
    missing = [label for label, identities in seen.items() if not identities]
    if missing:
        last = ""
        if gone is not None:
            last = f" (one polled {(now - gone).total_seconds():.0f} s ago, and is gone)"
        return Verdict(
            "pollers",
            FAIL,
            f"no worker polls {task_queue} for {' or '.join(missing)} tasks{last}: orders "
            "wait until one does; start `pizzeria worker`",
        )
    workers = sorted(seen["workflow"] | seen["activity"])
    ago = (now - latest).total_seconds() if latest else 0.0
    return Verdict(
        "pollers",
        OK,
        f"{len(workers)} worker(s) poll {task_queue} ({', '.join(workers[:5])}"
        f"{', ...' if len(workers) > 5 else ''}), last poll {max(0.0, ago):.0f} s ago",
    )


# -- the ledger and the codec key ----------------------------------------------------------


def check_ledger(location: str) -> Verdict:
    """Read-only: a ledger that is missing, too old or too new fails, and stays as it is."""
    try:
        ledger = open_ledger(location, read_only=True)
    except LedgerError as error:  # not found, unreachable, too old, too new
        return Verdict("ledger", FAIL, str(error))
    try:
        version = ledger.schema_version()
        ingredients = len(ledger.stock())
    except LedgerError as error:
        return Verdict("ledger", FAIL, str(error))
    finally:
        ledger.close()
    return Verdict(
        "ledger",
        OK,
        f"{ledger.location}: schema version {version} (current), {ingredients} ingredients",
    )


def check_codec_key() -> tuple[Verdict, list[tuple[str, bytes]] | None]:
    where = "PIZZERIA_CODEC_KEY" if os.environ.get("PIZZERIA_CODEC_KEY") else str(key_file())
    try:
        keys = load_keys(create=False)
    except CodecKeyError as error:
        return Verdict(
            "codec key", FAIL, f"{error}; copy the key every worker shares (docs/cluster.md)"
        ), None
    ids = ", ".join(key_id for key_id, _ in keys)
    if not os.environ.get("PIZZERIA_CODEC_KEY"):
        secrets = (
            config.data_dir(),  # which holds the ledger and the provider's data too
            key_file(),
            config.api_secret_file(),
            codec_auth_file(),
            secret_file_of(default_payments_file()),
        )
        exposed = [why for why in map(readable_by_others, secrets) if why]
        if exposed:  # used all the same: said, since anyone here could read every order
            return Verdict("codec key", FAIL, "; ".join(exposed)), keys
    return Verdict("codec key", OK, f"{len(keys)} key(s) from {where}, ids {ids}"), keys


# -- the latest orders' payloads -----------------------------------------------------------


async def check_payloads(client: Client, keys: list[tuple[str, bytes]]) -> Verdict:
    """The latest orders decrypt with this machine's key: the trap of a worker (or client)
    with another key is orders nobody here can read."""
    try:
        checked, foreign = await foreign_orders(client, keys, RECENT_ORDERS)
    except RPCError as error:
        return Verdict("payloads", FAIL, f"cannot read the latest orders: {rpc_reason(error)}")
    if not checked:
        return Verdict("payloads", OK, "no orders yet: nothing to decrypt")
    if foreign:
        return Verdict(
            "payloads",
            FAIL,
            f"{foreign_said(checked, foreign)}; a worker or client with another key wrote "
            "them: give every worker the same key file",
        )
    return Verdict("payloads", OK, f"the latest {len(checked)} orders decrypt with this key")


# -- all of them ---------------------------------------------------------------------------


async def check_payments() -> Verdict:
    """The payment provider the workers move money through answers (a list of one)."""
    try:
        gateway = staff_gateway(timeout=CONNECT_SECONDS)
    except PaymentError as error:
        return Verdict("payment provider", FAIL, str(error))
    try:
        await gateway.list_payments(limit=1)
    except PaymentError as error:
        reason = " ".join(str(error).split())[:400]
        if isinstance(error, PaymentUnavailable) and error.no_provider:
            return Verdict("payment provider", FAIL, reason)  # said whole: none was asked
        return Verdict("payment provider", FAIL, f"{shown_url(gateway)} does not answer: {reason}")
    finally:
        await gateway.close()
    return Verdict("payment provider", OK, f"{shown_url(gateway)} answers")


async def diagnose(address: str | None, ledger_location: str, task_queue: str) -> list[Verdict]:
    """Every check in order; one that needs a failed one is skipped, saying which."""
    temporal, client = await check_temporal(address)
    verdicts = [temporal]
    if client is not None:
        verdicts.append(await check_search_attribute(client))
        verdicts.append(await check_pollers(client, task_queue))
    else:
        verdicts += [
            skipped("search attribute", "no connection to Temporal"),
            skipped("pollers", "no connection to Temporal"),
        ]
    verdicts.append(await asyncio.to_thread(check_ledger, ledger_location))
    key, keys = check_codec_key()
    verdicts.append(key)
    if client is None:
        verdicts.append(skipped("payloads", "no connection to Temporal"))
    elif keys is None:
        verdicts.append(skipped("payloads", "no codec key"))
    else:
        verdicts.append(await check_payloads(client, keys))
    verdicts.append(await check_payments())
    return verdicts
