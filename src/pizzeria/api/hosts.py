"""Which ``Host`` the API answers to: DNS rebinding stays out.

A page on any site can make its own name resolve to 127.0.0.1 (DNS rebinding): the
operator's browser then sends that page's requests to the API on this machine, as the
same origin, and reads the answers. Such a request still names the page's host in its
``Host`` header, so the API answers only the names it is known by: 127.0.0.1, localhost,
::1, the address it is bound to, and the names given with ``pizzeria api --allowed-host``
or ``$PIZZERIA_API_ALLOWED_HOSTS`` (comma- or space-separated; ``*`` turns the check off,
for a proxy in front that checks the name itself). Any other answer is a 421 problem.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

HOSTS_ENV = "PIZZERIA_API_ALLOWED_HOSTS"
DEFAULT_HOSTS = ("127.0.0.1", "localhost", "::1")
ANY_HOST = "*"
#: ``name``, ``name:port``, ``[v6]`` or ``[v6]:port``.
_HOST = re.compile(r"(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<name>[^:\[\]]+))(?::(?P<port>[0-9]{1,5}))?")


def host_name(header: str) -> str | None:
    """The name in a ``Host`` header (lowercase, without port or final dot), or None."""
    match = _HOST.fullmatch(header.strip())
    if match is None:
        return None
    name = match.group("v6") or match.group("name")
    return name.lower().rstrip(".") or None


#: What a name allowed may be: a DNS name or an IPv4 address, or an IPv6 one (brackets or
#: not), with a port or not; or `ANY_HOST`.
_ALLOWED = re.compile(r"[A-Za-z0-9_.-]+(?::[0-9]{1,5})?|\[?[0-9a-fA-F:.]+\]?(?::[0-9]{1,5})?")


def hosts_from_env() -> list[str]:
    """The names ``$PIZZERIA_API_ALLOWED_HOSTS`` gives (comma- or space-separated)."""
    return [entry for entry in re.split(r"[\s,]+", os.environ.get(HOSTS_ENV, "")) if entry]


def unusable_hosts(entries: Iterable[str]) -> list[str]:
    """The entries that no ``Host`` header could name (``bad host!``): a typo, said."""
    return [
        entry
        for entry in entries
        if entry.strip() and entry.strip() != ANY_HOST and not _ALLOWED.fullmatch(entry.strip())
    ]


def allowed_hosts(given: Iterable[str] = ()) -> frozenset[str]:
    """The defaults, the names ``given`` (the bound address among them) and the
    environment's, each as `host_name` reads a header."""
    names = set()
    for entry in (*DEFAULT_HOSTS, *given, *hosts_from_env()):
        if entry.strip() == ANY_HOST:
            names.add(ANY_HOST)
        elif entry.strip():
            names.add(host_name(entry) or entry.strip().lower())
    return frozenset(names)


class HostCheck:
    """ASGI middleware: a request whose ``Host`` is not one of ``hosts`` gets a 421."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str]) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or ANY_HOST in self.hosts:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"host", b"").decode("latin-1")
        if host_name(given) in self.hosts:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send_misdirected(scope, send)


async def send_misdirected(scope: Scope, send: Send) -> None:
    """The 421 problem (RFC 9457), naming neither the host sent nor the hosts allowed."""
    body = json.dumps(
        {
            "type": "urn:pizzeria:problem:host-not-allowed",
            "title": "Misdirected Request",
            "status": 421,
            "detail": "this API does not answer to that Host name: use the name it is "
            f"served under (pizzeria api --allowed-host, ${HOSTS_ENV})",
            "instance": scope.get("path", "/"),
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 421,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
