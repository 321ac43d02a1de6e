"""What the payment provider's round trips cost per order: each call the workers make,
timed where the worker waits for it.

The benchmark's worker (`pizzeria.ops.bench.worker`) wraps the workers' own gateway in a
`TimedGateway` when ``PIZZERIA_BENCH_PROVIDER_CALLS`` names a file: every call (held,
captured, voided, refunded, read, found, listed; answered or failed) appends one line,
``<operation> <seconds>``, from its start to its answer as the activity awaits it (the
thread hop, the stripe library, HTTP and the provider itself). The workers of a stack
share one file (lines this short are appended whole). A batch reads the lines written
while it ran (`CallLog.since`): every call of its orders is over by the time their
results are in.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pizzeria.payments.port import Page, Payment, PaymentGateway, RefundRecord

CALLS_VARIABLE = "PIZZERIA_BENCH_PROVIDER_CALLS"
CALLS_FILE = "provider-calls.log"
T = TypeVar("T")


class TimedGateway(PaymentGateway):
    """``inner``, each call's operation and duration appended to ``path``."""

    def __init__(self, inner: PaymentGateway, path: Path) -> None:
        self.inner = inner
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._lock = threading.Lock()

    async def _timed(self, operation: str, call: Awaitable[T]) -> T:
        started = time.perf_counter()
        try:
            return await call
        finally:
            line = f"{operation} {time.perf_counter() - started:.6f}\n".encode()
            with self._lock:
                os.write(self._fd, line)

    async def authorize(
        self,
        amount: int,
        *,
        idempotency_key: str,
        metadata: Mapping[str, str],
        card_number: str | None = None,
        payment_method: str | None = None,
    ) -> Payment:
        return await self._timed(
            "authorize",
            self.inner.authorize(
                amount,
                idempotency_key=idempotency_key,
                metadata=metadata,
                card_number=card_number,
                payment_method=payment_method,
            ),
        )

    async def capture(
        self, payment_id: str, amount: int | None = None, *, idempotency_key: str
    ) -> Payment:
        call = self.inner.capture(payment_id, amount, idempotency_key=idempotency_key)
        return await self._timed("capture", call)

    async def void(self, payment_id: str, *, idempotency_key: str) -> Payment:
        call = self.inner.void(payment_id, idempotency_key=idempotency_key)
        return await self._timed("void", call)

    async def refund(
        self, payment_id: str, amount: int | None = None, *, reason: str, idempotency_key: str
    ) -> RefundRecord:
        call = self.inner.refund(payment_id, amount, reason=reason, idempotency_key=idempotency_key)
        return await self._timed("refund", call)

    async def get(self, payment_id: str) -> Payment:
        return await self._timed("get", self.inner.get(payment_id))

    async def find(self, idempotency_key: str) -> Payment | None:
        return await self._timed("find", self.inner.find(idempotency_key))

    async def list_payments(
        self, *, limit: int = 100, starting_after: str | None = None
    ) -> Page[Payment]:
        call = self.inner.list_payments(limit=limit, starting_after=starting_after)
        return await self._timed("list", call)

    async def list_refunds(
        self,
        *,
        limit: int = 100,
        starting_after: str | None = None,
        payment_id: str | None = None,
    ) -> Page[RefundRecord]:
        call = self.inner.list_refunds(
            limit=limit, starting_after=starting_after, payment_id=payment_id
        )
        return await self._timed("list", call)

    async def close(self) -> None:
        try:
            await self.inner.close()
        finally:
            os.close(self._fd)


@dataclass(frozen=True)
class Calls:
    """Provider calls over a stretch of time: how many, how long in all, by operation."""

    count: int = 0
    seconds: float = 0.0
    by_operation: dict[str, int] = field(default_factory=dict)


class CallLog:
    """The calls file of one stack, read from where the last reading stopped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = self.size()

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def mark(self) -> None:
        """From here on: the calls before are someone else's (a warm-up, a batch)."""
        self.offset = self.size()

    def since(self) -> Calls:
        """The calls appended since the mark (whole lines only), and a new mark after them."""
        try:
            with open(self.path, "rb") as log:
                log.seek(self.offset)
                data = log.read()
        except FileNotFoundError:
            return Calls()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        return parse_calls(complete.decode(errors="replace"))


def parse_calls(text: str) -> Calls:
    count, seconds = 0, 0.0
    by_operation: dict[str, int] = {}
    for line in text.splitlines():
        operation, _, duration = line.partition(" ")
        try:
            seconds += float(duration)
        except ValueError:
            continue
        count += 1
        by_operation[operation] = by_operation.get(operation, 0) + 1
    return Calls(count, seconds, by_operation)


def timed_gateway(
    gateway: PaymentGateway, environ: Mapping[str, str] | None = None
) -> PaymentGateway:
    """``gateway``, timed into the file ``PIZZERIA_BENCH_PROVIDER_CALLS`` names, if any."""
    path = (os.environ if environ is None else environ).get(CALLS_VARIABLE)
    return TimedGateway(gateway, Path(path)) if path else gateway
