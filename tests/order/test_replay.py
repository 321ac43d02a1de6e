"""Recorded histories replay without non-determinism: orders already running survive a deploy.

The histories (good order, pickup, bad card, cancelled by request and by Update, repaired
by retry and resolved by hand) were recorded on the real dev server by
``python -m tests.helpers.record_histories``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from pizzeria.worker import order_sandbox
from pizzeria.workflows import PizzaOrderWorkflow
from tests.helpers.record_histories import SCENARIOS

HISTORIES = sorted((Path(__file__).parents[1] / "histories").glob("*.json"))


def test_every_scenario_has_a_recorded_history():
    assert {path.stem for path in HISTORIES} == set(SCENARIOS)


#: The SDK's full sandbox (the order's module run again for every replay, every restricted
#: call refused), and the sandbox the workers run orders in (`order_sandbox`).
RUNNERS = {
    "full sandbox": SandboxedWorkflowRunner(),
    "workers' sandbox": order_sandbox(context_free=True),
}


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("path", HISTORIES, ids=[path.stem for path in HISTORIES])
async def test_recorded_history_replays_deterministically(path: Path, runner: str):
    history = WorkflowHistory.from_json(f"pizza-workflow-order-{path.stem}", path.read_text())
    replayer = Replayer(workflows=[PizzaOrderWorkflow], workflow_runner=RUNNERS[runner])
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.stem}: {result.replay_failure}"
