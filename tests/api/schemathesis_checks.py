"""Schemathesis hooks for test_schema.py (``SCHEMATHESIS_HOOKS=tests.api.schemathesis_checks``).

`schema_valid_requests_are_accepted`: schemathesis' ``positive_data_acceptance``, save for
the refusals an order placed well can still meet, which the document lists for
``POST /orders``: a card the payment provider declines (402) and a delivery outside the
service area (422, the exercise's simulated distance from the address's length); nor an
``Idempotency-Key`` sent before with another body (422). Every
other 4xx to a request the document calls valid (a 422 above all) is a failure: the
document says less than the server enforces.

`map_case`: a valid request's whole numbers are sent as JSON integers. JSON Schema calls
``500.0`` an integer too, while the API refuses it where it reads whole cents or counts
(strict: ``12.0`` is never read as 12), a difference no schema can write.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance

#: Problems (RFC 9457 ``type``) that are an order's outcome, not a request's shape.
OUTCOMES = frozenset(
    {
        "urn:pizzeria:problem:card-declined",
        "urn:pizzeria:problem:outside-service-area",
        # a refund's key already names a refund of another amount (the key's state)
        "urn:pizzeria:problem:idempotency-key-reused",
    }
)


@schemathesis.check
def schema_valid_requests_are_accepted(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> bool | None:
    if response.status_code in (402, 422) and _problem_type(response) in OUTCOMES:
        return None
    if response.status_code == 422 and _key_taken(response):
        return None
    return positive_data_acceptance(ctx, response, case)


def _problem(response: schemathesis.Response) -> dict[str, object]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _problem_type(response: schemathesis.Response) -> object:
    return _problem(response).get("type")


def _key_taken(response: schemathesis.Response) -> bool:
    """An ``Idempotency-Key`` already bound to another body (schemathesis sends one key
    with many bodies): the key's state, which the document lists, not the body's shape."""
    errors = _problem(response).get("errors")
    return errors == [
        {
            "field": "Idempotency-Key",
            "reason": "already used for another request (another body, or the same body "
            "from another kind of caller: staff or not): nothing was changed",
        }
    ]


@schemathesis.hook
def map_case(
    context: schemathesis.HookContext, case: schemathesis.Case[Any]
) -> schemathesis.Case[Any]:
    if case.meta is not None and case.meta.generation.mode.is_positive:
        case.body = _whole_as_integers(case.body)
    return case


def _whole_as_integers(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _whole_as_integers(each) for key, each in value.items()}
    if isinstance(value, list):
        return [_whole_as_integers(each) for each in value]
    return value
