"""Every error as ``application/problem+json`` (RFC 9457), and the body checks that come first.

An answer never echoes what the client sent (a value may hold a card number, or text that
cannot even be encoded back): it names the field and says what is wrong with it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.service import RPCError, RPCStatusCode

log = logging.getLogger("pizzeria.api")

PROBLEM_JSON = "application/problem+json"
MAX_BODY_BYTES = 64 * 1024  # an order of 50 pizzas is about 6 KB
#: What a Temporal that does not answer (down, overloaded, or hung) raises: a 503, not
#: a refusal. A call that ran out of its time on our side is CANCELLED ("Timeout expired").
UNAVAILABLE = (
    RPCStatusCode.UNAVAILABLE,
    RPCStatusCode.DEADLINE_EXCEEDED,
    RPCStatusCode.RESOURCE_EXHAUSTED,
    RPCStatusCode.CANCELLED,
)


class ApiProblem(Exception):
    """An error the client can act on; ``slug`` names its kind in the problem's type."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        slug: str | None = None,
        errors: Sequence[tuple[str, str]] = (),
        error_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        order: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.slug = slug
        self.errors = list(errors)
        self.error_type = error_type
        self.headers = headers
        #: The refused order's number and its token, for its Location.
        self.order = order


def invalid(
    field: str, reason: str, *, slug: str = "invalid-request", error_type: str | None = None
) -> ApiProblem:
    """422 about one field (menu.py's reasons mostly name their field already)."""
    return ApiProblem(
        422,
        reason if reason.startswith(field) else f"{field}: {reason}",
        slug=slug,
        errors=[(field, reason)],
        error_type=error_type,
    )


def problem_fields(status: int, slug: str | None, detail: str) -> dict[str, Any]:
    """The fields every problem has (RFC 9457): its type, title, status and detail."""
    return {
        "type": f"urn:pizzeria:problem:{slug}" if slug else "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }


def problem_body(status: int, slug: str, detail: str) -> bytes:
    """`problem_fields` as the JSON body of an answer made below the routes (the
    connection guard's, a file's refused Range), where no handler writes it."""
    return json.dumps(problem_fields(status, slug, detail)).encode()


def problem_response(request: Request, problem: ApiProblem) -> JSONResponse:
    body = problem_fields(problem.status, problem.slug, problem.detail)
    body["instance"] = request.url.path
    if problem.errors:
        body["errors"] = [{"field": field, "reason": reason} for field, reason in problem.errors]
    if problem.error_type:
        body["error_type"] = problem.error_type
    if problem.order is not None:
        body["order_number"], body["order_token"] = problem.order
    return JSONResponse(
        body, status_code=problem.status, media_type=PROBLEM_JSON, headers=problem.headers
    )


def field_path(location: Sequence[int | str]) -> str:
    """``("customer", "name")`` as ``customer.name``, ``("items", 0, "price")`` as
    ``items[0].price``: the spelling menu.py uses in its own messages."""
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "body"


#: What a value of each pattern the routes check must be, in words (pydantic says
#: "String should match pattern '^...$'").
PATTERN_SAYS = {
    "^[A-Za-z0-9_.-]{1,64}$": "must be 1 to 64 letters, digits, '.', '_' or '-'",
    r"^[\x21-\x7e]{1,255}$": "must be 1 to 255 visible ASCII characters, no space",
    "^[0-9]{1,18}$": "must be the number of an event: 1 to 18 digits",
}


def validation_errors(errors: Sequence[Any], skip: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """Field and reason of each pydantic error, without the offending value."""
    found = []
    for error in errors:
        loc = tuple(error.get("loc") or ())
        location = [part for part in loc if part not in skip]
        if loc[:1] == ("header",):  # spelled as the other messages spell it
            location = [
                "-".join(word.capitalize() for word in part.split("-"))
                if isinstance(part, str)
                else part
                for part in location
            ]
        reason = str(error.get("msg", "invalid"))
        if error.get("type") == "string_pattern_mismatch":
            pattern = str((error.get("ctx") or {}).get("pattern", ""))
            reason = PATTERN_SAYS.get(pattern, "is not one of the values this field takes")
        found.append((field_path(location), reason))
    return found


def refuse_invalid_body(error: ValidationError, slug: str = "invalid-order") -> ApiProblem:
    """422 naming the fields: ``invalid-order`` for an order, ``invalid-body`` for the
    small bodies of the other routes (a cancel's reason, a repair's action...)."""
    errors = validation_errors(error.errors(include_input=False, include_url=False))
    first_field, first_reason = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return ApiProblem(422, f"{first_field}: {first_reason}{more}", slug=slug, errors=errors)


async def read_json_body(request: Request, *, required: bool = True) -> Any:
    """The body as JSON, refused with a 4xx before anything starts when it is not."""
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";")[0].strip().lower()
    body = await limited_body(request)
    if not body and not required:
        return None
    charset = content_type.partition(";")[2].partition("charset=")[2].split(";")[0]
    if media_type != "application/json" or charset.strip(' "').lower() not in ("", "utf-8"):
        raise ApiProblem(
            415,
            "send the body as application/json, in UTF-8",
            slug="unsupported-media-type",
            headers={"Accept-Post": "application/json"},
        )
    try:
        # JSON is UTF-8 (RFC 8259): bytes are not guessed to be UTF-16 or UTF-32.
        return json.loads(
            body.decode("utf-8"), parse_constant=_not_json, object_pairs_hook=_once_each
        )
    # RecursionError: nesting too deep for the decoder; ValueError: broken JSON, bad
    # UTF-8, or an integer with more digits than Python agrees to read.
    except RecursionError:
        raise ApiProblem(
            400, "the body's JSON is nested too deep to read", slug="malformed-json"
        ) from None
    except json.JSONDecodeError as error:
        raise ApiProblem(
            400, f"the body is not valid JSON at byte {error.pos}", slug="malformed-json"
        ) from None
    except TwiceNamed as twice:
        raise ApiProblem(400, str(twice), slug="malformed-json") from None
    except ValueError:  # bad UTF-8, or an integer longer than Python agrees to read
        raise ApiProblem(
            400,
            "the body is not valid JSON in UTF-8, or holds a number too long to read",
            slug="malformed-json",
        ) from None


class TwiceNamed(ValueError):
    """A JSON object naming a key twice: parsers disagree on which one counts (the last,
    here; the first, for some proxies and firewalls), so it is refused."""


def _once_each(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, value in pairs:
        if name in found:
            shown = json.dumps(name[:40])
            raise TwiceNamed(f"the body's JSON names the key {shown} twice in one object")
        found[name] = value
    return found


def _not_json(constant: str) -> Any:
    """``NaN``, ``Infinity``: Python's json reads them, JSON has no such thing."""
    raise ValueError(f"{constant} is not JSON")


async def limited_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def too_large() -> ApiProblem:
    # The connection closes after it: the rest of the body is not read (nor waited for).
    return ApiProblem(
        413,
        f"the body is larger than {MAX_BODY_BYTES} bytes",
        slug="body-too-large",
        headers={"Connection": "close"},
    )


def install_problem_handlers(app: FastAPI) -> None:
    async def on_problem(request: Request, problem: Exception) -> JSONResponse:
        assert isinstance(problem, ApiProblem)
        return problem_response(request, problem)

    async def on_http_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, StarletteHTTPException)
        status = error.status_code
        detail = error.detail if isinstance(error.detail, str) else HTTPStatus(status).phrase
        return problem_response(request, ApiProblem(status, detail, headers=error.headers))

    async def on_request_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        # FastAPI prefixes where the value came from ("query", "path", "header").
        errors = validation_errors(error.errors(), skip=("query", "path", "header", "body"))
        first_field, first_reason = errors[0] if errors else ("request", "invalid")
        detail = f"{first_field}: {first_reason}"
        return problem_response(
            request, ApiProblem(422, detail, slug="invalid-request", errors=errors)
        )

    async def on_temporal_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RPCError)
        if error.status in UNAVAILABLE:
            return problem_response(request, temporal_unavailable())
        problem = ApiProblem(502, "Temporal refused the request", slug="temporal-refused")
        return problem_response(request, problem)

    async def on_runtime_error(request: Request, error: Exception) -> JSONResponse:
        # A client that connects when first used (see app.py) raises this while Temporal
        # is down: an outage, said once per request in one line, not a traceback each.
        if str(error).startswith("Failed client connect"):
            log.warning("%s %s: Temporal is unreachable (503)", request.method, request.url.path)
            return problem_response(request, temporal_unavailable())
        # Handled here, the server no longer logs it: our bug, logged with its traceback.
        log.error("%s %s failed", request.method, request.url.path, exc_info=error)
        return problem_response(request, internal_error())

    async def on_anything_else(request: Request, error: Exception) -> JSONResponse:
        # Our bug: the server logs it with its traceback after this answer.
        return problem_response(request, internal_error())

    app.add_exception_handler(ApiProblem, on_problem)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_request_error)
    app.add_exception_handler(RPCError, on_temporal_error)
    app.add_exception_handler(RuntimeError, on_runtime_error)
    app.add_exception_handler(Exception, on_anything_else)


def header_once(request: Request, name: str) -> None:
    """A header that must come once (an ``Idempotency-Key``): sent twice, which one the
    caller meant is unknown, so neither is used; sent empty, it would key nothing."""
    values = request.headers.getlist(name)
    if len(values) > 1:
        raise invalid(name, "send it once: it came several times")
    if values and not values[0].strip():
        raise invalid(name, "must be 1 to 255 visible ASCII characters, no space")


def internal_error() -> ApiProblem:
    return ApiProblem(500, "the order API failed: its log says why", slug="internal")


def temporal_unavailable() -> ApiProblem:
    return ApiProblem(
        503,
        "Temporal did not answer; try again shortly",
        slug="temporal-unavailable",
        headers={"Retry-After": "2"},
    )


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI entries of the problems a route can answer with."""
    content = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    return {
        status: {"description": HTTPStatus(status).phrase, "content": content}
        for status in statuses
    }
