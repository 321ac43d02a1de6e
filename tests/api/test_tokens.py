"""Order tokens and the idempotency key table, without a server.

A token opens one run of one order until it expires, and nothing else; the key table
binds a key to its first body and order number, survives a restart (a new table on the
same ledger location), and forgets a key once its token has expired. The table runs on
the chosen ledger backend (``--ledger-backend``): a file beside a SQLite ledger, or a
table in the PostgreSQL database.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pizzeria.api.auth import Keys, placed_by_staff
from pizzeria.api.idempotency import KeyTable, KeyTableUnavailable, KeyUse, beside
from pizzeria.api.problems import ApiProblem

SECRET = b"a secret of the tests, long enough"
NOW = 1_900_000_000.0
STAFF = "a-staff-key-0123456789"


@pytest.mark.parametrize("staff_key", [STAFF, None], ids=["with-staff-key", "without"])
def test_who_places_an_order_staff_a_customer_with_or_without_a_token_or_nobody(
    staff_key: str | None,
) -> None:
    keys = Keys(SECRET, staff_key=staff_key, token_seconds=3600)
    request: Any = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(keys=keys)))
    token = keys.order_token("XD001", "run-1", keys.expiry(NOW))
    assert placed_by_staff(request, None) is False
    assert placed_by_staff(request, token) is False  # an earlier order's token: a customer
    if staff_key is not None:
        assert placed_by_staff(request, STAFF) is True
    with pytest.raises(ApiProblem) as refused:
        placed_by_staff(request, "not-a-key" if staff_key else STAFF)
    said = refused.value.detail
    assert refused.value.status == 401
    if staff_key is None:
        assert said.startswith("this API has no staff key (PIZZERIA_API_KEY is not set)")
    else:
        assert said.startswith("not the staff key: place the order without an Authorization")


def test_a_token_opens_its_run_of_its_order_until_it_expires_and_nothing_else():
    keys = Keys(SECRET, staff_key=None, token_seconds=3600)
    expires = keys.expiry(NOW)
    token = keys.order_token("XD001", "run-1", expires)
    assert keys.opened_run(token, "XD001", NOW) == "run-1"
    assert keys.opened_run(token, "XD001", NOW + 3599) == "run-1"
    assert keys.opened_run(token, "XD001", NOW + 3600) is None  # expired
    assert keys.opened_run(token, "XD002", NOW) is None  # another order
    # Expired, it is still known as this API's, for its holder to be told so.
    assert keys.signed(token, "XD001") == ("run-1", expires)
    assert keys.signed(token, "XD002") is None
    # The run and the expiry are in the token, and under its HMAC: changing either fails.
    later = token.replace(f"{expires:x}.", f"{expires + 86_400:x}.", 1)
    assert keys.opened_run(later, "XD001", NOW + 3600) is None
    other_run = token.replace(".run-1.", ".run-2.", 1)
    assert keys.opened_run(other_run, "XD001", NOW) is None
    assert Keys(b"another secret, long enough too", None).opened_run(token, "XD001", NOW) is None
    # One spelling per token: the expiry with a leading zero is the same number, but a
    # cap counted by the token as written would count it as another token.
    for padded in ("0" + token, "00" + token):
        assert keys.opened_run(padded, "XD001", NOW) is None
    for junk in ("", "x", token + "A", token[:-1], "..", STAFF):
        assert keys.opened_run(junk, "XD001", NOW) is None, junk
    assert not keys.is_staff(STAFF)


def test_a_staff_key_is_not_an_order_token_and_a_token_is_not_the_staff_key():
    keys = Keys(SECRET, staff_key="the-staff-key-0123456789", token_seconds=60)
    token = keys.order_token("XD001", "run-1", keys.expiry())
    assert keys.is_staff("the-staff-key-0123456789") and not keys.is_staff(token)
    assert keys.opened_run("the-staff-key-0123456789", "XD001") is None
    assert keys.expiry() == pytest.approx(time.time() + 60, abs=5)


def test_a_key_is_bound_to_its_first_body_and_number_and_survives_a_restart(ledger_location):
    table = KeyTable(ledger_location)
    first = KeyUse("body-1", "WEB-AAAA", expires=int(NOW) + 100)
    assert table.claim("key-1", first, NOW) == first
    # A retry, or the same key with another body: the table answers with the first use.
    assert table.claim("key-1", KeyUse("body-1", "WEB-BBBB", int(NOW) + 200), NOW) == first
    assert table.claim("key-1", KeyUse("body-2", "WEB-CCCC", int(NOW) + 200), NOW) == first
    table.record_run("key-1", "run-1")
    table.record_run("key-1", "run-other")  # the first run recorded stays
    table.close()
    reopened = KeyTable(ledger_location)  # the API restarted
    try:
        bound = reopened.claim("key-1", KeyUse("body-1", "WEB-DDDD", int(NOW) + 300), NOW)
        assert bound == KeyUse("body-1", "WEB-AAAA", int(NOW) + 100, "run-1")
        # Once its token has expired, the key is forgotten: it is a new request.
        fresh = KeyUse("body-1", "WEB-EEEE", int(NOW) + 500)
        assert reopened.claim("key-1", fresh, NOW + 100) == fresh
    finally:
        reopened.close()


def test_the_key_table_beside_a_sqlite_ledger_and_when_it_cannot_be_used(tmp_path: Path):
    assert beside(str(tmp_path / "ledger.db")) == tmp_path / "ledger-api-keys.db"
    (tmp_path / "ledger-api-keys.db").write_bytes(b"not a database at all" * 100)
    table = KeyTable(str(tmp_path / "ledger.db"))
    with pytest.raises(KeyTableUnavailable, match="key table"):
        table.claim("key", KeyUse("body", "WEB-A", int(NOW) + 1), NOW)
