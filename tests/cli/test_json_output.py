"""``--json`` output is JSON a terminal never acts on: text from a history (a workflow id
any Temporal client chose) keeps U+202E, U+2028 and C1 controls as escapes."""

from __future__ import annotations

import json

from pizzeria.cli.common import out


def test_print_json_escapes_what_a_terminal_would_act_on(capsys):
    tricky = "E1\u202eX\u2028\u009b31m\u0085 Andérson"
    out.print_json(json.dumps({"order_number": tricky}))
    printed = capsys.readouterr().out
    assert printed.isascii(), printed
    assert json.loads(printed) == {"order_number": tricky}
