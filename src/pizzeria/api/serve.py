"""Serving the app with uvicorn: as ``pizzeria api``, or inside the demo.

The socket is bound before uvicorn starts, so a port in use is one clear line (and the
demo can fall back to a free port) rather than uvicorn's log and exit. uvicorn speaks
HTTP through guard.py's protocol (a cap on connections, deadlines for a request's head
and body); the process may open enough files for its connections; the access log shows
no query string (a token may travel in one, under any spelling of its name).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
from collections.abc import AsyncIterator, Callable, Iterator

import uvicorn
from temporalio.client import Client

from pizzeria.api import DEFAULT_PORT
from pizzeria.api.app import ApiSettings, create_app
from pizzeria.api.auth import Keys, SecretError, load_secret, load_staff_key
from pizzeria.api.guard import guarded_protocol

# Open event streams would hold a shutdown forever: after this, they are cut.
GRACEFUL_SECONDS = 2
STARTUP_CHECKS = 200  # of 50 ms: 10 s


class PortInUse(OSError):
    pass


#: Files the process keeps for itself beyond one per connection (Temporal, the ledger...).
SPARE_FILES = 256


class NoQueryStrings(logging.Filter):
    """Access log lines show the path without its query: ``?token=`` may be spelled
    ``?%74oken=`` or hide in any other parameter, so no query string is logged at all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                arg.split("?", 1)[0] if isinstance(arg, str) else arg for arg in record.args
            )
        return True


def allow_open_files(connections: int) -> None:
    """Raise the process's open-file limit (up to its hard limit) to hold ``connections``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + SPARE_FILES
    if soft != resource.RLIM_INFINITY and soft < wanted:
        ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, made as TCP by name: asyncio switches Nagle's algorithm off
    (``TCP_NODELAY``) only on connections of a socket whose protocol says TCP. With it on,
    an answer's body waited for the client's delayed ACK of its head: 40 ms per answer."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise PortInUse(f"cannot serve on {host}:{port}: {error.strerror}") from None
    return sock


def server_for(settings: ApiSettings, *, access_log: bool) -> uvicorn.Server:
    allow_open_files(settings.limits.max_connections)
    config = uvicorn.Config(
        create_app(settings),
        http=guarded_protocol(settings.limits),
        ws="none",  # no route speaks WebSocket: an Upgrade is an ordinary request
        log_level="info" if access_log else "warning",
        access_log=access_log,
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
        # No X-Forwarded-For from 127.0.0.1 (uvicorn's default trusts it): any local
        # process could put an address of its choosing in the access log.
        proxy_headers=False,
        lifespan="on",
    )
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(kept, NoQueryStrings) for kept in access.filters):
        access.addFilter(NoQueryStrings())
    return uvicorn.Server(config)


def run_api(settings: ApiSettings, sock: socket.socket, *, access_log: bool = True) -> None:
    """Serve until Ctrl-C (uvicorn handles the signals)."""
    server = server_for(settings, access_log=access_log)
    asyncio.run(server.serve(sockets=[sock]))


class _Embedded(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the program around it (the demo) handles Ctrl-C itself


@contextlib.asynccontextmanager
async def serving(settings: ApiSettings, sock: socket.socket) -> AsyncIterator[None]:
    """The API in this event loop for the duration of the block."""
    plain = server_for(settings, access_log=False)
    server = _Embedded(plain.config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(STARTUP_CHECKS):
            if server.started or task.done():
                break
            await asyncio.sleep(0.05)
        if task.done():
            task.result()  # raises why it could not start
        if not server.started:
            raise RuntimeError("the order API did not start within 10 s")
        yield
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def order_page(
    client: Client,
    ledger_location: str,
    say: Callable[[str], None],
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
) -> AsyncIterator[str | None]:
    """The page and the API beside a program that has a client (the demo), on ``port``
    (8000) or, when that is taken, a free one. Yields the page's address; None when it
    cannot serve (the program goes on without it)."""
    try:
        keys = Keys(load_secret(), load_staff_key())
    except SecretError as error:
        say(f"No order page: {error}")
        yield None
        return
    try:
        sock = bind(host, port)
    except PortInUse:
        sock = bind(host, 0)
        say(f"Port {port} is taken: the order page takes another")
    url = f"http://{host}:{sock.getsockname()[1]}/"
    settings = ApiSettings(keys, ledger_location=ledger_location, client=client)
    async with serving(settings, sock):
        say(f"Order page {url} : order from a browser and watch every step")
        yield url
