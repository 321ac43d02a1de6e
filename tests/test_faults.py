"""Fault injection: the syntax, the file that turns faults on and off, and inject()."""

from __future__ import annotations

import dataclasses
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from pizzeria.faults import (
    INJECTED_FAULT_ERROR,
    Fault,
    FaultPlan,
    FaultSyntaxError,
    parse_faults,
    write_faults,
)

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


# -- inject --------------------------------------------------------------------------------


def environment(attempt: int = 1, timeout: float | None = None) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=attempt)
    if timeout is not None:
        env.info = dataclasses.replace(env.info, start_to_close_timeout=timedelta(seconds=timeout))
    return env


async def run_x(plan: FaultPlan, env: ActivityEnvironment) -> str:
    async def x() -> str:
        await plan.inject("x")
        return "done"

    return await env.run(x)


async def test_inject_without_a_fault_does_nothing() -> None:
    plan = FaultPlan(None, env_value="y=fail")
    assert await run_x(plan, environment()) == "done"


@pytest.mark.parametrize("attempt", [1, 2])
async def test_inject_fails_within_the_attempt_limit(attempt: int) -> None:
    plan = FaultPlan(None, env_value="x=fail:2")
    with pytest.raises(ApplicationError) as raised:
        await run_x(plan, environment(attempt))
    assert raised.value.type == INJECTED_FAULT_ERROR
    assert raised.value.non_retryable is False
    assert f"attempt {attempt}" in raised.value.message


@pytest.mark.parametrize("attempt", [3, 10])
async def test_inject_does_nothing_past_the_attempt_limit(attempt: int) -> None:
    plan = FaultPlan(None, env_value="x=fail:2")
    assert await run_x(plan, environment(attempt)) == "done"


async def test_inject_without_a_limit_fails_every_attempt() -> None:
    plan = FaultPlan(None, env_value="x=fail")
    for attempt in (1, 5, 100):
        with pytest.raises(ApplicationError) as raised:
            await run_x(plan, environment(attempt))
        assert raised.value.type == INJECTED_FAULT_ERROR


async def test_inject_follows_the_file_between_attempts(faults_file: Path) -> None:
    plan = FaultPlan(faults_file, env_value="")
    rewrite(faults_file, '["x=fail"]', 4_000_000)
    with pytest.raises(ApplicationError):
        await run_x(plan, environment(1))
    rewrite(faults_file, "[]", 4_000_001)
    assert await run_x(plan, environment(2)) == "done"


async def test_inject_timeout_hangs_past_the_start_to_close_timeout_then_raises() -> None:
    plan = FaultPlan(None, env_value="x=timeout:1")
    started = time.monotonic()
    with pytest.raises(ApplicationError) as raised:
        await run_x(plan, environment(1, timeout=0.05))
    elapsed = time.monotonic() - started
    assert raised.value.type == INJECTED_FAULT_ERROR
    assert "timed out" in raised.value.message
    assert elapsed >= 0.05  # it slept at least past the timeout before raising
    # The next attempt is past the limit and answers at once.
    started = time.monotonic()
    assert await run_x(plan, environment(2, timeout=0.05)) == "done"
    assert time.monotonic() - started < 0.5
