"""``pizzeria doctor``: a healthy setup passes; each broken piece is named, exit 1.

The checks run against a real dev server and a ``pizzeria worker`` (the module's `stack`),
so this module runs once, in the default pass. Each broken piece is broken in the
command's environment only (another address, ledger or key), never in the stack itself.
"""

from __future__ import annotations

import base64
import contextlib
import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
from temporalio.api.workflowservice.v1 import DescribeTaskQueueResponse

from pizzeria.ledger import latest_version, open_ledger
from pizzeria.ops.doctor import check_codec_key, check_pollers
from pizzeria.ops.processes import dev_server, free_port
from pizzeria.temporal.codec import load_keys
from tests.helpers import pizzeria, run_pizzeria
from tests.helpers.postgres import PostgresServer
from tests.helpers.stack import Stack, stack_env

ANOTHER_KEY = base64.b64encode(bytes(range(100, 132))).decode()
CHECKS = [
    "temporal",
    "search attribute",
    "pollers",
    "ledger",
    "codec key",
    "payloads",
    "payment provider",
]


@pytest.fixture(scope="module")
def placed(stack: Stack) -> Stack:
    """The stack after one order, so the payload check has an order to decrypt."""
    done = pizzeria(stack, "order", "--order-number", "DOC-1", "--prep-seconds", "0")
    assert done.returncode == 0, done.stderr
    return stack


def doctor(env: dict[str, str], *args: str) -> tuple[int, dict[str, dict[str, Any]]]:
    """Exit code and, per check, its verdict and detail (from ``--json``)."""
    done = run_pizzeria("doctor", "--json", *args, env=env, timeout=90)
    assert done.stderr == "", done.stderr
    report = json.loads(done.stdout)
    verdicts = {check["check"]: check for check in report["checks"]}
    assert list(verdicts) == CHECKS
    assert report["ok"] == (done.returncode == 0)
    return done.returncode, verdicts


def not_ok(verdicts: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The checks that did not pass, and their verdict (FAIL, or skip)."""
    return {name: check["verdict"] for name, check in verdicts.items() if check["verdict"] != "ok"}


def test_a_healthy_setup_passes_every_check(placed: Stack) -> None:
    code, verdicts = doctor(placed["env"])
    assert code == 0, verdicts
    assert not_ok(verdicts) == {}
    assert placed["address"] in verdicts["temporal"]["detail"]
    assert "namespace default" in verdicts["temporal"]["detail"]
    assert "1 worker(s) poll pizza-tasks" in verdicts["pollers"]["detail"]
    assert f"schema version {latest_version()} (current)" in verdicts["ledger"]["detail"]
    assert "decrypt with this key" in verdicts["payloads"]["detail"]
    # The human form: one line per check, then the verdict.
    done = pizzeria(placed, "doctor")
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and len(lines) == len(CHECKS) + 1
    assert all(line.startswith("ok ") for line in lines[:-1])
    assert lines[-1] == "All 7 checks passed."
    assert verdicts["payment provider"]["detail"].endswith(" answers")


def test_a_server_that_is_down_fails_the_connection_and_skips_what_needs_it(
    placed: Stack,
) -> None:
    env = dict(placed["env"], TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}")
    code, verdicts = doctor(env)
    assert code == 1
    assert not_ok(verdicts) == {
        "temporal": "FAIL",
        "search attribute": "skip",
        "pollers": "skip",
        "payloads": "skip",
    }
    assert "cannot reach" in verdicts["temporal"]["detail"]
    done = run_pizzeria("doctor", env=env, timeout=90)
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith("1 of 7 checks failed: temporal;")


def test_an_api_key_against_a_server_without_tls_says_what_to_set(placed: Stack) -> None:
    # An API key turns TLS on (the SDK's env config): the plain dev server answers without
    # it, and doctor printed the transport's debug string.
    code, verdicts = doctor(dict(placed["env"], TEMPORAL_API_KEY="not-a-real-key"))
    assert code == 1
    detail = verdicts["temporal"]["detail"]
    assert "TLS asked, and the server answered without it" in detail
    assert "set TEMPORAL_TLS=false" in detail and "tonic" not in detail


def test_a_payment_provider_that_does_not_answer_fails_its_check(placed: Stack) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    # A URL may carry a user and password: never printed.
    with_password = f"http://clerk:s3cretpw@{nowhere}"
    code, verdicts = doctor(dict(placed["env"], PIZZERIA_PAYMENTS_URL=with_password))
    assert code == 1 and not_ok(verdicts) == {"payment provider": "FAIL"}
    detail = verdicts["payment provider"]["detail"]
    assert detail.startswith(f"http://{nowhere} does not answer") and "s3cretpw" not in detail


def test_a_data_folder_whose_provider_does_not_run_fails_without_asking_the_usual_port(
    placed: Stack,
) -> None:
    """No PIZZERIA_PAYMENTS_URL and no payments.url in the folder: the folder's provider
    does not run. Whatever answers on 8091 (another user's provider) is not asked."""
    env = {k: v for k, v in placed["env"].items() if k != "PIZZERIA_PAYMENTS_URL"}
    folder = Path(env["PIZZERIA_DATA_DIR"])
    assert not (folder / "payments.url").exists()
    code, verdicts = doctor(env)
    assert code == 1 and not_ok(verdicts) == {"payment provider": "FAIL"}
    assert verdicts["payment provider"]["detail"].startswith(
        f"no local payment provider runs for the data folder {folder} (no payments.url there)"
    )


def test_a_missing_ledger_fails_and_is_not_created(placed: Stack, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.db"
    code, verdicts = doctor(placed["env"], "--ledger", str(missing))
    assert code == 1 and verdicts["ledger"]["verdict"] == "FAIL"
    assert f"no ledger at {missing}" in verdicts["ledger"]["detail"]
    assert not missing.exists()
    assert not_ok(verdicts) == {"ledger": "FAIL"}


@pytest.fixture(params=["sqlite", "postgres"])
def any_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A new ledger on either backend (PostgreSQL: a database of the private server)."""
    if request.param == "sqlite":
        location = str(tmp_path / "ledger.db")
        open_ledger(location).close()
        yield location
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    with server.database() as location:
        open_ledger(location).close()
        yield location


def record_version(location: str, version: int) -> None:
    """What a newer pizzeria would leave behind."""
    sql = "INSERT INTO schema_version (version, applied_at) VALUES ({0}, 0)"
    if location.startswith("postgresql://"):
        with psycopg.connect(location, autocommit=True) as conn:
            conn.execute(sql.format("%s"), (version,))
        return
    with contextlib.closing(sqlite3.connect(location)) as db, db:
        db.execute(sql.format("?"), (version,))


def test_a_ledger_of_another_schema_version_fails_on_either_backend(
    placed: Stack, any_ledger: str
) -> None:
    code, verdicts = doctor(placed["env"], "--ledger", any_ledger)
    assert code == 0 and verdicts["ledger"]["verdict"] == "ok"
    record_version(any_ledger, latest_version() + 1)
    code, verdicts = doctor(placed["env"], "--ledger", any_ledger)
    assert code == 1 and verdicts["ledger"]["verdict"] == "FAIL"
    detail = verdicts["ledger"]["detail"]
    assert f"schema version {latest_version() + 1}, newer than this pizzeria knows" in detail


def test_an_unreachable_postgresql_ledger_fails_without_showing_its_password(
    placed: Stack,
) -> None:
    url = f"postgresql://pizzeria:s3cret@127.0.0.1:{free_port()}/pizzeria"
    done = run_pizzeria("doctor", "--ledger", url, env=placed["env"], timeout=90)
    assert done.returncode == 1
    (line,) = [line for line in done.stdout.splitlines() if " ledger " in line]
    assert line.startswith("FAIL") and "cannot reach the ledger at" in line
    assert "pizzeria:***@127.0.0.1" in line and "s3cret" not in done.stdout


def test_another_codec_key_fails_the_payloads_naming_the_orders_and_the_key(
    placed: Stack,
) -> None:
    own_key_id = (placed["data"] / "codec.key").read_text().split(":")[0]
    code, verdicts = doctor(dict(placed["env"], PIZZERIA_CODEC_KEY=ANOTHER_KEY))
    assert code == 1
    assert not_ok(verdicts) == {"payloads": "FAIL"}  # a key is there: the wrong one
    assert f"DOC-1 (key {own_key_id})" in verdicts["payloads"]["detail"]


def test_no_codec_key_fails_and_none_is_created(placed: Stack, tmp_path: Path) -> None:
    key_file = tmp_path / "codec.key"
    code, verdicts = doctor(dict(placed["env"], PIZZERIA_CODEC_KEY_FILE=str(key_file)))
    assert code == 1
    assert not_ok(verdicts) == {"codec key": "FAIL", "payloads": "skip"}
    assert not key_file.exists()


@pytest.mark.timeout(120)
def test_a_server_without_the_search_attribute_and_without_workers_fails_both(
    placed: Stack, tmp_path: Path
) -> None:
    with dev_server(None, headless=True, order_status=False) as bare:
        env = stack_env(tmp_path, TEMPORAL_ADDRESS=bare.address)
        env["PIZZERIA_LEDGER"] = str(placed["data"] / "ledger.db")
        env["PIZZERIA_CODEC_KEY_FILE"] = str(placed["data"] / "codec.key")
        code, verdicts = doctor(env)
        # `orders --status` there says how to register it, not only that its query is bad.
        listed = run_pizzeria("orders", "--status", "completed", env=env, timeout=60)
    assert listed.returncode == 1, listed.stderr
    (line,) = listed.stderr.strip().splitlines()
    assert "OrderStatus is not registered in namespace default" in line, line
    assert "temporal operator search-attribute create --name OrderStatus" in line, line
    assert code == 1
    assert not_ok(verdicts) == {"search attribute": "FAIL", "pollers": "FAIL"}
    assert (
        "temporal operator search-attribute create --name OrderStatus --type Keyword"
        in verdicts["search attribute"]["detail"]
    )
    assert "no worker polls pizza-tasks" in verdicts["pollers"]["detail"]
    assert "no orders yet" in verdicts["payloads"]["detail"]


# -- a worker that stopped is not a poller -----------------------------------------------------


def fake_queue(seconds_ago: dict[str, float]) -> Any:
    """A client whose task queue lists workers last seen ``seconds_ago``, by identity."""
    now = datetime.now(UTC)

    async def describe_task_queue(request: Any, **call_options: Any) -> Any:
        response = DescribeTaskQueueResponse()
        for identity, ago in seconds_ago.items():
            poller = response.pollers.add(identity=identity)
            poller.last_access_time.FromDatetime(now - timedelta(seconds=ago))
        return response

    service = SimpleNamespace(describe_task_queue=describe_task_queue)
    return SimpleNamespace(namespace="default", workflow_service=service)


async def test_a_worker_gone_for_minutes_is_no_poller_though_the_server_still_lists_it():
    gone = await check_pollers(fake_queue({"1382@vm": 183.0}), "pizza-tasks")
    assert gone.verdict == "FAIL"
    assert gone.detail.startswith("no worker polls pizza-tasks for workflow or activity tasks")
    assert "(one polled 183 s ago, and is gone)" in gone.detail
    live = await check_pollers(fake_queue({"1382@vm": 183.0, "77@vm": 20.0}), "pizza-tasks")
    assert live.verdict == "ok" and live.detail.startswith("1 worker(s) poll pizza-tasks (77@vm)")


def test_a_secret_or_a_data_folder_others_can_read_fails_the_codec_key_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIZZERIA_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("PIZZERIA_CODEC_KEY", raising=False)
    monkeypatch.delenv("PIZZERIA_CODEC_KEY_FILE", raising=False)
    load_keys(create=True)  # made owner-only
    verdict, keys = check_codec_key()
    assert verdict.verdict == "ok" and keys, verdict
    (tmp_path / "codec.key").chmod(0o644)  # copied in by hand, say
    (tmp_path / "api.secret").write_text("x" * 43)
    (tmp_path / "api.secret").chmod(0o640)
    (tmp_path / "codec.auth").write_text("y" * 43)
    (tmp_path / "codec.auth").chmod(0o604)
    verdict, keys = check_codec_key()
    assert verdict.verdict == "FAIL" and keys, verdict  # still used, but said
    assert f"{tmp_path / 'codec.key'} can be read by others (mode 644)" in verdict.detail
    assert f"run `chmod 600 {tmp_path / 'api.secret'}`" in verdict.detail
    assert f"run `chmod 600 {tmp_path / 'codec.auth'}`" in verdict.detail  # it decrypts too
    assert "chmod 700" not in verdict.detail
    # A data folder that existed before (it keeps its mode) and lets others in: said.
    for name in ("codec.key", "api.secret", "codec.auth"):
        (tmp_path / name).chmod(0o600)
    assert check_codec_key()[0].verdict == "ok"
    tmp_path.chmod(0o755)
    try:
        verdict, _ = check_codec_key()
    finally:
        tmp_path.chmod(0o700)
    assert verdict.verdict == "FAIL"
    assert (
        verdict.detail == f"{tmp_path} can be read by others (mode 755): run `chmod 700 {tmp_path}`"
    )
