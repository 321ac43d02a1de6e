"""Schemathesis against the running API: requests made up from its own OpenAPI document,
valid and invalid, each answered without a 5xx and as the document says (status, content
type, headers, body schema); and no route that needs a token answers without one.

And the document says what the server enforces: a request it calls valid is not refused
with a 4xx it does not list for credentials or state (`schemathesis_checks.py`).

Bounded: a fixed number of examples per route and a fixed seed, so a run takes the same
time and a failure can be replayed. Its summary is printed (run with ``-s`` to see it).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.helpers import binary
from tests.helpers.api_stack import STAFF_KEY, Api

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "ignored_auth",
    ]
)
EXAMPLES_PER_ROUTE = 25
#: The hooks of the acceptance run, importable from the repository's root.
HOOKS = "tests.api.schemathesis_checks"
ROOT = Path(__file__).resolve().parents[2]


def schemathesis(
    api: Api, *args: str, checks: str = CHECKS, hooks: str = ""
) -> subprocess.CompletedProcess[str]:
    env = {**api.env, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": hooks}
    if hooks:
        env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [
            binary("schemathesis"),
            "run",
            f"{api.url}/openapi.json",
            "--checks",
            checks,
            "--max-examples",
            str(EXAMPLES_PER_ROUTE),
            "--seed",
            "20261201",
            "--request-timeout",
            "30",
            # One worker: hypothesis describes strategies with ast.parse, which is not
            # thread-safe on Python 3.11 ("AST constructor recursion depth mismatch").
            "--workers",
            "1",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=540,
        env=env,
        stdin=subprocess.DEVNULL,
        cwd=api.data,  # where it leaves its cache (.schemathesis/)
    )
    print(done.stdout[-3000:])
    return done


def test_as_staff_every_answer_matches_the_document_and_none_is_a_5xx(api):
    done = schemathesis(api, "--header", f"Authorization: Bearer {STAFF_KEY}")
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
    assert "No issues found" in done.stdout or "passed" in done.stdout


def test_without_a_credential_every_answer_matches_the_document_and_none_is_a_5xx(api):
    done = schemathesis(api)
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]


def test_a_request_the_document_calls_valid_is_not_refused(api):
    """Required headers required, enums, patterns and limits where the server checks them:
    a refund without its Idempotency-Key, a repair with another action, a price not the
    menu's, free text with a control character are each outside the document."""
    done = schemathesis(
        api,
        "--header",
        f"Authorization: Bearer {STAFF_KEY}",
        checks="schema_valid_requests_are_accepted,not_a_server_error",
        hooks=HOOKS,
    )
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
    assert "Schema-valid request rejected" not in done.stdout
