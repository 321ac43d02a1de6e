"""Fault injection: the syntax, the file that turns faults on and off, and inject()."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from temporalio.testing import ActivityEnvironment
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput

from pizzeria import private
from pizzeria.temporal import faults as faults_module
from pizzeria.temporal.faults import (
    FILE_WAY_OUT,
    INJECTED_FAULT_ERROR,
    Fault,
    FaultInterceptor,
    FaultPlan,
    FaultSyntaxError,
    draw,
    parse_faults,
    write_faults,
)
from tests.helpers import run_pizzeria

# -- syntax --------------------------------------------------------------------------------


def test_parse_faults_reads_two_comma_separated_faults() -> None:
    assert parse_faults("refund_customer=fail,process_credit_card=timeout:2") == {
        "refund_customer": Fault("refund_customer", "fail", None),
        "process_credit_card": Fault("process_credit_card", "timeout", 2),
    }


@pytest.mark.parametrize("text", ["", "   ", ",", " , ,"])
def test_parse_faults_of_nothing_is_no_faults(text: str) -> None:
    assert parse_faults(text) == {}


def test_parse_faults_tolerates_spaces_around_entries() -> None:
    assert parse_faults(" refund_customer=fail , send_bill=fail:3 ") == {
        "refund_customer": Fault("refund_customer", "fail"),
        "send_bill": Fault("send_bill", "fail", 3),
    }


def test_parse_faults_reads_a_json_list() -> None:
    text = '["refund_customer=fail", "process_credit_card=timeout:2"]'
    assert parse_faults(text) == parse_faults("refund_customer=fail,process_credit_card=timeout:2")
    assert parse_faults("[]") == {}


def test_parse_faults_the_last_fault_for_a_step_wins() -> None:
    assert parse_faults("send_bill=fail,send_bill=timeout:1") == {
        "send_bill": Fault("send_bill", "timeout", 1)
    }


@pytest.mark.parametrize(
    "text",
    [
        "refund_customer",  # no mode
        "refund_customer=",  # empty mode
        "=fail",  # no step
        "refund_customer=explode",  # unknown mode
        "refund_customer=fail:0",  # N must be positive
        "refund_customer=fail:-1",
        "refund_customer=fail:x",
        "refund_customer=fail:",  # a colon without N
        "refund_customer=fail:²",  # a digit int() does not read
        "refund_customer=fail;send_bill=fail",
        "[1, 2]",  # JSON, but not a list of strings
        '{"refund_customer": "fail"}',
        '["refund_customer=boom"]',
        "[refund_customer=fail]",  # not valid JSON
        '["refund_customer=fail"',
    ],
)
def test_parse_faults_rejects_bad_syntax(text: str) -> None:
    with pytest.raises(FaultSyntaxError):
        parse_faults(text)


def test_a_fault_prints_as_it_is_written() -> None:
    for text in ("refund_customer=fail", "process_credit_card=timeout:2"):
        (fault,) = parse_faults(text).values()
        assert str(fault) == text


def test_write_faults_round_trips_through_the_file(faults_file: Path) -> None:
    faults = parse_faults("refund_customer=fail,process_credit_card=timeout:2")
    write_faults(faults_file, faults)
    assert parse_faults(faults_file.read_text()) == faults
    assert not faults_file.with_suffix(".tmp").exists()


# -- the plan ------------------------------------------------------------------------------


def rewrite(file: Path, text: str, mtime: float) -> None:
    """Write the file and give it a distinct mtime, so the plan's cache cannot hide it."""
    file.write_text(text)
    os.utime(file, (mtime, mtime))


def test_a_plan_without_a_file_has_only_the_environments_faults() -> None:
    assert FaultPlan(None, env_value="").current() == {}
    assert FaultPlan(None, env_value="send_bill=fail").current() == {
        "send_bill": Fault("send_bill", "fail")
    }


def test_a_plan_reads_the_pizzeria_faults_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIZZERIA_FAULTS", "refund_customer=fail:2")
    assert FaultPlan(None).current() == {"refund_customer": Fault("refund_customer", "fail", 2)}
    assert FaultPlan(None, env_value="").current() == {}


def test_a_plan_whose_file_is_missing_has_no_faults(faults_file: Path) -> None:
    assert not faults_file.exists()
    assert FaultPlan(faults_file, env_value="").current() == {}


def test_writing_the_file_turns_a_fault_on_and_emptying_it_clears_it(faults_file: Path) -> None:
    plan = FaultPlan(faults_file, env_value="")
    assert plan.current() == {}

    rewrite(faults_file, '["refund_customer=fail"]', 1_000_000)
    assert plan.current() == {"refund_customer": Fault("refund_customer", "fail")}

    rewrite(faults_file, '["refund_customer=fail:1", "send_bill=timeout"]', 1_000_001)
    assert plan.current() == {
        "refund_customer": Fault("refund_customer", "fail", 1),
        "send_bill": Fault("send_bill", "timeout"),
    }

    rewrite(faults_file, "", 1_000_002)
    assert plan.current() == {}

    rewrite(faults_file, "send_bill=fail", 1_000_003)
    assert plan.current() == {"send_bill": Fault("send_bill", "fail")}
    faults_file.unlink()
    assert plan.current() == {}


def test_a_faults_file_others_could_have_written_is_not_obeyed(faults_file: Path) -> None:
    """A worker obeys the file at every attempt: whoever can write it can decline every
    card. One that others could have written is not obeyed (nor does it stop the steps):
    a worker refuses to start on it, and one running says so and goes on without it."""
    plan = FaultPlan(faults_file, env_value="")
    faults_file.write_text('["process_credit_card=decline"]')
    faults_file.chmod(0o666)
    assert plan.current() == {}  # the steps run as without it: it stops none of them
    assert plan.refusal is not None and "can be written by others" in plan.refusal
    done = run_pizzeria(
        "worker",
        "--address",
        "127.0.0.1:1",
        env={
            **os.environ,
            "PIZZERIA_DATA_DIR": str(faults_file.parent / "data"),
            "PIZZERIA_FAULTS_FILE": str(faults_file),
            "PIZZERIA_FAULTS": "",
        },
        timeout=60,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    (line,) = done.stderr.strip().splitlines()
    assert "faults file" in line and "can be written by others" in line, line
    faults_file.chmod(0o600)  # the mode alone changed: the running plan sees it
    assert list(plan.current().values()) == [Fault("process_credit_card", "decline")]
    assert plan.refusal is None


def test_faults_set_writes_a_file_its_readers_accept_whatever_the_umask(faults_file: Path):
    before = os.umask(0o002)  # a user with a group of their own: files are group-writable
    try:
        write_faults(faults_file, parse_faults("send_bill=fail"))
    finally:
        os.umask(before)
    assert faults_file.stat().st_mode & 0o777 == 0o600
    assert set(FaultPlan(faults_file, env_value="").current()) == {"send_bill"}


def test_write_faults_is_seen_by_a_running_plan(faults_file: Path) -> None:
    plan = FaultPlan(faults_file, env_value="")
    write_faults(faults_file, parse_faults("process_credit_card=fail"))
    os.utime(faults_file, (2_000_000, 2_000_000))
    assert set(plan.current()) == {"process_credit_card"}
    write_faults(faults_file, {})
    os.utime(faults_file, (2_000_001, 2_000_001))
    assert plan.current() == {}


def test_the_file_overrides_the_environment_for_the_same_step(faults_file: Path) -> None:
    plan = FaultPlan(faults_file, env_value="send_bill=fail,refund_customer=fail")
    rewrite(faults_file, '["send_bill=timeout:1"]', 3_000_000)
    assert plan.current() == {
        "send_bill": Fault("send_bill", "timeout", 1),
        "refund_customer": Fault("refund_customer", "fail"),
    }


def test_the_plan_parses_the_file_again_only_when_it_changed(
    faults_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = FaultPlan(faults_file, env_value="")
    reads: list[Path] = []
    read_file = private.read_private_file

    def counting(path: Path, what: str) -> str:
        reads.append(path)
        return read_file(path, what)

    monkeypatch.setattr(faults_module, "read_private_file", counting)
    rewrite(faults_file, '["get_distance=fail:1"]', 5_000_000)
    for _ in range(5):
        assert plan.current() == {"get_distance": Fault("get_distance", "fail", 1)}
    assert len(reads) == 1  # one read, then only a stat per attempt
    # The same file, the same mtime, written in place with the same size: not read again.
    rewrite(faults_file, '["get_distance=fail:2"]', 5_000_000)
    assert plan.current() == {"get_distance": Fault("get_distance", "fail", 1)} and len(reads) == 1
    # Another size with the same mtime is a change.
    rewrite(faults_file, '["get_distance=fail:12"]', 5_000_000)
    assert plan.current() == {"get_distance": Fault("get_distance", "fail", 12)} and len(reads) == 2
    # So is a replaced file (what `pizzeria faults set` writes), even of the same mtime.
    write_faults(faults_file, parse_faults("get_distance=fail:34"))
    os.utime(faults_file, (5_000_000, 5_000_000))
    assert plan.current() == {"get_distance": Fault("get_distance", "fail", 34)} and len(reads) == 3


def test_a_file_that_does_not_parse_fails_every_attempt_until_it_is_fixed(
    faults_file: Path,
) -> None:
    plan = FaultPlan(faults_file, env_value="")
    rewrite(faults_file, "get_distance=explode", 6_000_000)
    for _ in range(2):
        with pytest.raises(FaultSyntaxError, match="explode") as said:
            plan.current()
        assert str(said.value).startswith(f"{faults_file}: ")  # which file, for its reader
    rewrite(faults_file, "get_distance=fail", 6_000_001)
    assert plan.current() == {"get_distance": Fault("get_distance", "fail")}


# -- inject --------------------------------------------------------------------------------


def environment(attempt: int = 1, timeout: float | None = None) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=attempt)
    if timeout is not None:
        env.info = dataclasses.replace(env.info, start_to_close_timeout=timedelta(seconds=timeout))
    return env


async def run_x(plan: FaultPlan, env: ActivityEnvironment) -> str:
    async def x() -> str:
        await plan.inject("get_distance")
        return "done"

    return await env.run(x)


async def test_inject_without_a_fault_does_nothing() -> None:
    plan = FaultPlan(None, env_value="send_bill=fail")
    assert await run_x(plan, environment()) == "done"


@pytest.mark.parametrize("attempt", [1, 2])
async def test_inject_fails_within_the_attempt_limit(attempt: int) -> None:
    plan = FaultPlan(None, env_value="get_distance=fail:2")
    with pytest.raises(ApplicationError) as raised:
        await run_x(plan, environment(attempt))
    assert raised.value.type == INJECTED_FAULT_ERROR
    assert raised.value.non_retryable is False
    assert f"attempt {attempt}" in raised.value.message


@pytest.mark.parametrize("attempt", [3, 10])
async def test_inject_does_nothing_past_the_attempt_limit(attempt: int) -> None:
    plan = FaultPlan(None, env_value="get_distance=fail:2")
    assert await run_x(plan, environment(attempt)) == "done"


async def test_inject_without_a_limit_fails_every_attempt() -> None:
    plan = FaultPlan(None, env_value="get_distance=fail")
    for attempt in (1, 5, 100):
        with pytest.raises(ApplicationError) as raised:
            await run_x(plan, environment(attempt))
        assert raised.value.type == INJECTED_FAULT_ERROR


async def test_inject_follows_the_file_between_attempts(faults_file: Path) -> None:
    plan = FaultPlan(faults_file, env_value="")
    rewrite(faults_file, '["get_distance=fail"]', 4_000_000)
    with pytest.raises(ApplicationError):
        await run_x(plan, environment(1))
    rewrite(faults_file, "[]", 4_000_001)
    assert await run_x(plan, environment(2)) == "done"


async def test_inject_timeout_hangs_past_the_start_to_close_timeout_then_raises() -> None:
    plan = FaultPlan(None, env_value="get_distance=timeout:1")
    started = time.monotonic()
    with pytest.raises(ApplicationError) as raised:
        await run_x(plan, environment(1, timeout=1.0))
    elapsed = time.monotonic() - started
    assert raised.value.type == INJECTED_FAULT_ERROR
    assert "timed out" in raised.value.message
    assert elapsed >= 1.0  # it slept at least past the timeout before raising
    # The next attempt is past the limit and answers at once (a timeout would take 1 s:
    # the margin leaves room for a loaded machine).
    started = time.monotonic()
    assert await run_x(plan, environment(2, timeout=1.0)) == "done"
    assert time.monotonic() - started < 1.0


# -- rates, verdicts and late writes ---------------------------------------------------------

CARD = "process_credit_card"


def order_environment(workflow_id: str, attempt: int = 1, timeout: float = 1.0):
    env = environment(attempt, timeout)
    env.info = dataclasses.replace(env.info, workflow_id=workflow_id)
    return env


async def run_step(plan: FaultPlan, env: ActivityEnvironment, step: str = CARD) -> str:
    async def activity_body() -> str:
        await plan.inject(step)
        return "took effect"

    return await env.run(activity_body)


def test_parse_faults_reads_the_new_modes_with_limits_and_rates() -> None:
    faults = parse_faults(
        "process_credit_card=fail:3@0.2,process_credit_card=decline@0.05,"
        "process_credit_card=late:1@0.1,update_inventory=out_of_stock@0.03"
    )
    assert set(faults.values()) == {
        Fault(CARD, "fail", 3, 0.2),
        Fault(CARD, "decline", None, 0.05),
        Fault(CARD, "late", 1, 0.1),
        Fault("update_inventory", "out_of_stock", None, 0.03),
    }


def test_a_step_keeps_one_fail_or_timeout_and_adds_the_other_modes() -> None:
    faults = parse_faults(f"{CARD}=fail,{CARD}=late:1,{CARD}=timeout:2,{CARD}=decline")
    assert sorted(str(fault) for fault in faults.values()) == [
        f"{CARD}=decline",
        f"{CARD}=late:1",
        f"{CARD}=timeout:2",
    ]


@pytest.mark.parametrize(
    "text",
    [
        f"{CARD}=fail:3@0.2",
        f"{CARD}=decline@0.05",
        "update_inventory=late:1",
        "update_inventory=out_of_stock@1.0",
        f"{CARD}=fail@0.3333333333333333",
    ],
)
def test_new_faults_print_as_they_are_parsed(text: str) -> None:
    (fault,) = parse_faults(text).values()
    assert parse_faults(str(fault)) == {fault.key: fault}


@pytest.mark.parametrize(
    "text",
    [
        f"{CARD}=fail@0",  # a rate of nothing
        f"{CARD}=fail@1.5",
        f"{CARD}=fail@-0.1",
        f"{CARD}=fail@nan",
        f"{CARD}=fail@inf",
        f"{CARD}=fail@",
        f"{CARD}=fail@x",
        f"{CARD}=fail@\u0660.5",  # an Arabic-Indic zero that float() would read
        "refund_customer=decline",  # a verdict of another step
        f"{CARD}=out_of_stock",
        f"{CARD}=late:0",
        f"{CARD}=decline:x@0.1",
    ],
)
def test_parse_faults_rejects_bad_rates_and_misplaced_verdicts(text: str) -> None:
    with pytest.raises(FaultSyntaxError):
        parse_faults(text)


def test_draw_is_fixed_by_its_inputs_and_changes_with_each_of_them() -> None:
    base = draw("7", "pizza-workflow-order-A1", CARD, "fail", 1)
    assert 0 <= base < 1
    assert draw("7", "pizza-workflow-order-A1", CARD, "fail", 1) == base
    others = {
        draw("8", "pizza-workflow-order-A1", CARD, "fail", 1),
        draw("7", "pizza-workflow-order-A2", CARD, "fail", 1),
        draw("7", "pizza-workflow-order-A1", "send_bill", "fail", 1),
        draw("7", "pizza-workflow-order-A1", CARD, "late", 1),
        draw("7", "pizza-workflow-order-A1", CARD, "fail", 2),
    }
    assert base not in others and len(others) == 5


def test_a_rate_strikes_about_that_share_of_orders_and_always_the_same_ones() -> None:
    plan = FaultPlan(None, env_value="", seed="42")
    (fault,) = parse_faults(f"{CARD}=fail@0.2").values()
    struck = [plan.strikes(fault, f"wf-{n}", 1) for n in range(2000)]
    assert 0.17 < sum(struck) / len(struck) < 0.23
    assert struck == [plan.strikes(fault, f"wf-{n}", 1) for n in range(2000)]
    other_seed = FaultPlan(None, env_value="", seed="43")
    assert struck != [other_seed.strikes(fault, f"wf-{n}", 1) for n in range(2000)]


def test_the_seed_comes_from_pizzeria_faults_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIZZERIA_FAULTS_SEED", "1234")
    assert FaultPlan(None, env_value="").seed == "1234"
    monkeypatch.delenv("PIZZERIA_FAULTS_SEED")
    assert FaultPlan(None, env_value="").seed == "0"


def test_a_transient_fault_strikes_some_attempts_and_a_retry_can_pass() -> None:
    plan = FaultPlan(None, env_value="", seed="1")
    (fault,) = parse_faults(f"{CARD}=fail:3@0.5").values()
    hits = [
        [plan.strikes(fault, f"wf-{n}", attempt) for attempt in (1, 2, 3, 4)] for n in range(200)
    ]
    assert any(row[0] and not row[1] for row in hits)  # failed once, then passed
    assert any(not row[0] for row in hits)
    assert not any(row[3] for row in hits)  # :3 -- never past the third attempt


async def test_a_rated_transient_fault_raises_a_retryable_injected_fault() -> None:
    plan = FaultPlan(None, env_value=f"{CARD}=fail@0.5", seed="3")
    (fault,) = plan.current().values()
    struck = next(n for n in range(100) if plan.strikes(fault, f"wf-{n}", 1))
    spared = next(n for n in range(100) if not plan.strikes(fault, f"wf-{n}", 1))
    with pytest.raises(ApplicationError) as raised:
        await run_step(plan, order_environment(f"wf-{struck}"))
    assert raised.value.type == INJECTED_FAULT_ERROR and raised.value.non_retryable is False
    assert await run_step(plan, order_environment(f"wf-{spared}")) == "took effect"


@pytest.mark.parametrize("attempt", [1, 2, 7])
async def test_a_declined_card_is_a_non_retryable_card_error_on_every_attempt(
    attempt: int,
) -> None:
    plan = FaultPlan(None, env_value=f"{CARD}=decline@0.5", seed="5")
    (fault,) = plan.current().values()
    declined = next(n for n in range(100) if plan.strikes(fault, f"wf-{n}", 1))
    with pytest.raises(ApplicationError) as raised:
        await run_step(plan, order_environment(f"wf-{declined}", attempt))
    assert raised.value.type == "CreditCardProcessingError"
    assert raised.value.message == "Card declined"
    assert raised.value.non_retryable is True


async def test_an_out_of_stock_fault_is_a_non_retryable_out_of_stock_error() -> None:
    plan = FaultPlan(None, env_value="update_inventory=out_of_stock")
    with pytest.raises(ApplicationError) as raised:
        await run_step(plan, order_environment("wf-1"), "update_inventory")
    assert raised.value.type == "OutOfStockError"
    assert raised.value.non_retryable is True
    assert await run_step(plan, order_environment("wf-1"), "revert_inventory") == "took effect"


async def test_a_transient_fault_comes_before_a_decline() -> None:
    plan = FaultPlan(None, env_value=f"{CARD}=fail:1,{CARD}=decline")
    with pytest.raises(ApplicationError) as first:
        await run_step(plan, order_environment("wf-1", attempt=1))
    assert first.value.type == INJECTED_FAULT_ERROR
    with pytest.raises(ApplicationError) as second:
        await run_step(plan, order_environment("wf-1", attempt=2))
    assert second.value.type == "CreditCardProcessingError"


async def test_a_late_step_takes_effect_only_after_its_timeout() -> None:
    plan = FaultPlan(None, env_value=f"{CARD}=late:1", late_margin=0.5)
    started = time.monotonic()
    assert await run_step(plan, order_environment("wf-1", timeout=1.0)) == "took effect"
    assert time.monotonic() - started >= 1.5  # the timeout, then the margin
    started = time.monotonic()
    assert await run_step(plan, order_environment("wf-1", attempt=2, timeout=1.0)) == "took effect"
    # Past :1 the step answers at once: a late one would take 1.5 s.
    assert time.monotonic() - started < 1.0


async def test_a_late_step_takes_effect_even_when_temporal_cancels_it() -> None:
    """Temporal cancels an attempt that outlived its timeout; the late write happens anyway."""
    plan = FaultPlan(None, env_value=f"{CARD}=late", late_margin=0.2)
    env = order_environment("wf-1", timeout=0.1)
    started = time.monotonic()
    running = asyncio.create_task(run_step(plan, env))
    await asyncio.sleep(0.1)
    env.cancel()
    assert await running == "took effect"
    assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize("attempt", [1, 4])
async def test_a_refusal_fails_the_step_for_good_on_any_step(attempt: int) -> None:
    plan = FaultPlan(None, env_value="send_bill=refuse")
    with pytest.raises(ApplicationError) as raised:
        await run_step(plan, order_environment("wf-1", attempt), "send_bill")
    assert raised.value.type == INJECTED_FAULT_ERROR
    assert raised.value.non_retryable is True
    assert "refused" in raised.value.message


def test_a_rated_refusal_is_decided_per_order_not_per_attempt() -> None:
    plan = FaultPlan(None, env_value="", seed="9")
    (fault,) = parse_faults("send_bill=refuse@0.3").values()
    for n in range(200):
        assert plan.strikes(fault, f"wf-{n}", 1) == plan.strikes(fault, f"wf-{n}", 5)
    assert 30 < sum(plan.strikes(fault, f"wf-{n}", 1) for n in range(200)) < 90


async def test_a_lost_answer_hangs_past_the_timeout_after_the_effect_then_raises() -> None:
    plan = FaultPlan(None, env_value="send_bill=lost:1", late_margin=0.1)
    env = order_environment("wf-1", timeout=0.1)
    effects: list[str] = []

    async def send_bill() -> str:
        await plan.inject("send_bill")
        effects.append("billed")
        await plan.answer("send_bill")
        return "answered"

    started = time.monotonic()
    running = asyncio.create_task(env.run(send_bill))
    await asyncio.sleep(0.05)
    env.cancel()  # Temporal gives up on the attempt: the answer never arrives anyway
    with pytest.raises(ApplicationError) as raised:
        await running
    assert raised.value.type == INJECTED_FAULT_ERROR and "answer lost" in raised.value.message
    assert effects == ["billed"] and time.monotonic() - started >= 0.2
    retry = order_environment("wf-1", attempt=2, timeout=0.1)
    assert await retry.run(send_bill) == "answered"  # :1 -- the retry is answered


async def test_answer_does_nothing_without_a_lost_fault() -> None:
    plan = FaultPlan(None, env_value="send_bill=fail,send_bill=late")

    async def body() -> str:
        await plan.answer("send_bill")
        return "answered"

    assert await order_environment("wf-1").run(body) == "answered"


def test_faults_set_and_show_on_a_file_that_does_not_parse_say_which_and_the_way_out(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "PIZZERIA_DATA_DIR": str(tmp_path), "PIZZERIA_FAULTS": ""}
    (tmp_path / "faults.json").write_text("{not json")
    # A worker does not start on it either: every step of every order would fail.
    for command in (
        ("faults", "set", "refund_customer=fail"),
        ("faults", "show"),
        ("worker", "--address", "127.0.0.1:1"),
    ):
        done = run_pizzeria(*command, env=env, timeout=60)
        assert done.returncode == 2, done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith(f"error: {tmp_path / 'faults.json'}: "), line
        assert line.endswith("`pizzeria faults clear` starts afresh")
    assert run_pizzeria("faults", "clear", env=env, timeout=60).returncode == 0
    assert (
        run_pizzeria("faults", "set", "refund_customer=fail", env=env, timeout=60).returncode == 0
    )


def test_a_worker_refuses_a_pizzeria_faults_that_does_not_parse_and_show_says_unset_it(
    tmp_path: Path,
) -> None:
    # A typo in the variable would fail every step of every order the worker runs.
    env = {**os.environ, "PIZZERIA_DATA_DIR": str(tmp_path), "PIZZERIA_FAULTS": "bogus=fail"}
    for command in (("worker", "--address", "127.0.0.1:1"), ("faults", "show")):
        done = run_pizzeria(*command, env=env, timeout=60)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith("error: PIZZERIA_FAULTS: unknown step 'bogus'"), line
        assert line.endswith("fix it or unset PIZZERIA_FAULTS"), line
    env["PIZZERIA_FAULTS"] = "update_inventory=fail:1"
    shown = run_pizzeria("faults", "show", env=env, timeout=60)
    assert shown.returncode == 0 and shown.stdout.strip() == "Faults: update_inventory=fail:1"


async def test_an_attempt_that_meets_a_faults_file_that_does_not_parse_fails_in_one_line(
    faults_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The file went bad while the worker runs: the attempt fails before the step does
    # anything, and is retried (it goes through once the file is fixed or cleared).
    rewrite(faults_file, "get_distance=explode", 7_000_000)

    class Step(ActivityInboundInterceptor):
        def __init__(self) -> None:  # the activity itself: never reached
            self.ran = False

        async def execute_activity(self, input: ExecuteActivityInput) -> Any:
            self.ran = True
            return "ran"

    step = Step()
    faulty = FaultInterceptor(FaultPlan(faults_file, env_value="")).intercept_activity(step)
    with pytest.raises(ApplicationError) as failed:
        await ActivityEnvironment().run(faulty.execute_activity, cast(ExecuteActivityInput, None))
    assert not step.ran
    assert not failed.value.non_retryable and failed.value.type == "FaultSyntaxError"
    assert failed.value.category == ApplicationErrorCategory.BENIGN  # no traceback logged
    said_to_temporal = failed.value.message
    assert said_to_temporal.startswith(f"{faults_file}: ") and "explode" in said_to_temporal
    assert said_to_temporal.endswith(FILE_WAY_OUT)
    (said,) = [r.getMessage() for r in caplog.records if "Step not run" in r.getMessage()]
    assert f"{faults_file}: " in said and not any(r.exc_info for r in caplog.records)
