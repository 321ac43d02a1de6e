"""Stripe's wire format, as the provider reads and answers it: form-encoded parameters
with brackets (``metadata[order_ref]=...``, ``expand[0]=latest_charge``) and JSON errors
``{"error": {"type": ..., "code": ..., "message": ...}}``."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from typing import Any
from urllib.parse import parse_qsl

from pizzeria.payments import cards

Params = dict[str, Any]
_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
METADATA_KEY_MAX = 40
METADATA_VALUE_MAX = 500
METADATA_KEYS_MAX = 50
MAX_DEPTH = 5


class ApiError(Exception):
    """An answer other than 200, in Stripe's shape."""

    def __init__(
        self,
        status: int,
        kind: str,
        message: str,
        *,
        code: str | None = None,
        decline_code: str | None = None,
        param: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.code = code
        self.decline_code = decline_code
        self.param = param
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.kind, "message": self.message}
        if self.code:
            error["code"] = self.code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        if self.decline_code:
            error["decline_code"] = self.decline_code
        if self.param:
            error["param"] = self.param
        error.update(self.extra)
        return {"error": error}


def invalid(message: str, *, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, "invalid_request_error", message, param=param, code=code)


def missing(kind: str, object_id: str, param: str | None = "id") -> ApiError:
    return ApiError(
        404,
        "invalid_request_error",
        f"No such {kind}: '{cards.without_card_numbers(object_id)}'",
        code="resource_missing",
        param=param,
    )


def parse_form(text: str) -> Params:
    """``a[b][c]=v`` pairs into nested dicts; ``x[0]=..``/``x[]=..`` into lists."""
    params: Params = {}
    for key, value in parse_qsl(text, keep_blank_values=True, strict_parsing=False):
        match = _KEY.match(key)
        if match is None:
            raise invalid(f"Invalid parameter name: {key[:60]!r}")
        path = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        if len(path) > MAX_DEPTH:
            raise invalid(f"Parameter nested too deep: {key[:60]!r}")
        _put(params, path, value, key)
    result = _lists(params)
    if not isinstance(result, dict):
        raise invalid("Invalid parameters: a hash of names, not a list")
    return result


def _put(params: Params, path: list[str], value: str, key: str) -> None:
    node = params
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise invalid(f"Invalid parameter: {key[:60]!r} mixes a value and a hash")
        node = child
    last = path[-1]
    if last == "":  # x[]=a&x[]=b
        last = str(sum(1 for k in node if k.isdigit()))
    if isinstance(node.get(last), dict):
        raise invalid(f"Invalid parameter: {key[:60]!r} mixes a value and a hash")
    node[last] = value


def _lists(node: Any) -> Any:
    """Dicts whose keys are 0..n-1 become lists (Stripe's indexed arrays)."""
    if not isinstance(node, dict):
        return node
    converted = {key: _lists(value) for key, value in node.items()}
    if converted and all(key.isdigit() for key in converted):
        indices = sorted(int(key) for key in converted)
        if indices == list(range(len(indices))):
            return [converted[str(index)] for index in indices]
    return converted


def fingerprint(endpoint: str, params: Params, secret: bytes) -> str:
    """What makes two requests "the same parameters" for an idempotency key. A keyed hash,
    under the provider's ``secret``: the parameters themselves (a card number among them)
    are never stored, and whoever reads the stored hash cannot try card numbers against
    it."""
    canonical = json.dumps([endpoint, params], sort_keys=True, separators=(",", ":"))
    return hmac.new(secret, canonical.encode(), hashlib.sha256).hexdigest()


def text_param(params: Params, name: str, *, required: bool = False) -> str | None:
    value = params.get(name)
    if value is None:
        if required:
            raise invalid(f"Missing required param: {name}.", param=name, code="parameter_missing")
        return None
    if not isinstance(value, str):
        raise invalid(f"Invalid string: {name} must be a string.", param=name)
    return value


def int_param(params: Params, name: str, *, required: bool = False) -> int | None:
    text = text_param(params, name, required=required)
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()) or int(text) <= 0 or len(text) > 12:
        raise invalid(
            f"Invalid positive integer: {name}", param=name, code="parameter_invalid_integer"
        )
    return int(text)


def bool_param(params: Params, name: str) -> bool | None:
    text = text_param(params, name)
    if text is None:
        return None
    if text not in ("true", "false"):
        raise invalid(f"Invalid boolean: {name} must be true or false", param=name)
    return text == "true"


def choice_param(params: Params, name: str, choices: tuple[str, ...]) -> str | None:
    text = text_param(params, name)
    if text is not None and text not in choices:
        raise invalid(
            f"Invalid {name}: must be one of {', '.join(choices)}",
            param=name,
            code="parameter_invalid_string",
        )
    return text


def metadata_param(params: Params) -> dict[str, str]:
    value = params.get("metadata", {})
    if value == "":  # metadata= clears it, as in Stripe
        return {}
    if not isinstance(value, dict) or len(value) > METADATA_KEYS_MAX:
        raise invalid("Invalid metadata: a hash of at most 50 keys", param="metadata")
    for key, item in value.items():
        if not isinstance(item, str):
            raise invalid(f"Invalid metadata[{key[:40]}]: a string", param="metadata")
        if len(key) > METADATA_KEY_MAX or len(item) > METADATA_VALUE_MAX:
            raise invalid(
                "Metadata keys hold at most 40 characters and values at most 500",
                param=f"metadata[{key[:40]}]",
            )
    return dict(value)


def expand_param(params: Params) -> list[str]:
    value = params.get("expand", [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise invalid("Invalid expand: a list of strings", param="expand")
    return value


def limit_param(params: Params) -> int:
    limit = int_param(params, "limit") or 10
    if limit > 100:
        raise invalid("Invalid limit: must be between 1 and 100", param="limit")
    return limit


def reject_unknown(params: Params, allowed: set[str]) -> None:
    """Stripe refuses a parameter it does not know: so does the provider (a typo in the
    adapter must show here, not only against real Stripe)."""
    for name in params:
        if name not in allowed:
            raise invalid(f"Received unknown parameter: {name[:60]}", param=name[:60])
