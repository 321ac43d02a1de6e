"""The dev server this program starts is never left behind: not when it cannot start, not
when the user interrupts it while it starts."""

from __future__ import annotations

import socket

import pytest

from pizzeria.ops.processes import private_dev_server
from pizzeria.temporal import devserver
from pizzeria.temporal.devserver import DevServerError


def test_a_dev_server_interrupted_while_it_starts_is_stopped(monkeypatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> bool:
        raise KeyboardInterrupt  # Ctrl-C once the port is open, before it serves

    monkeypatch.setattr(devserver, "serving", interrupted)
    server = private_dev_server(headless=True)
    with pytest.raises(KeyboardInterrupt):
        server.start()
    assert server.process is not None and server.process.poll() is not None
    assert not devserver.port_open(server.port)


def test_a_taken_web_ui_port_is_said_before_the_server_starts() -> None:
    with socket.socket() as ui:
        ui.bind(("127.0.0.1", 0))
        ui.listen()
        server = private_dev_server(ui_port=ui.getsockname()[1])
        with pytest.raises(DevServerError, match=r"the Web UI's port \d+ is already in use"):
            server.start()
    assert server.process is None  # nothing was started
