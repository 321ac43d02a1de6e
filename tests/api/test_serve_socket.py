"""The API's listening socket: every connection it accepts sends small writes at once.

uvicorn serves the socket `pizzeria.api.serve.bind` makes through asyncio's
``create_server``, which switches Nagle's algorithm off on each accepted connection only
when the socket says it is TCP. With Nagle on, an answer's body (a second small write)
waited for the client's delayed ACK of its head: about 40 ms added to every answer.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from pizzeria.api.serve import PortInUse, bind


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_each_accepted_connection_has_nagle_off(host):
    try:
        listening = bind(host, 0)
    except PortInUse:
        pytest.skip(f"{host} cannot be bound on this machine")
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Seen(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    server = await asyncio.get_running_loop().create_server(Seen, sock=listening)
    async with server:
        port = listening.getsockname()[1]
        _, writer = await asyncio.open_connection(host, port)
        try:
            assert await asyncio.wait_for(accepted, 10) != 0
        finally:
            writer.close()


def test_a_port_in_use_is_one_clear_error():
    first = bind("127.0.0.1", 0)
    first.listen()
    try:
        with pytest.raises(PortInUse, match=r"cannot serve on 127\.0\.0\.1"):
            bind("127.0.0.1", first.getsockname()[1])
    finally:
        first.close()
