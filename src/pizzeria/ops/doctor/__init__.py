"""``pizzeria doctor``: is this machine's setup one that orders can run on?

Each check (checks.py) answers one question with ok or FAIL and why, in one line: can we
reach Temporal and its namespace, is the ``OrderStatus`` search attribute registered, do
workers poll ``pizza-tasks``, is the ledger there with the schema version this code
expects, is there a codec key, and do the latest orders decrypt with it. It changes
nothing anywhere; it exits 1 when a check fails (command.py).
"""
