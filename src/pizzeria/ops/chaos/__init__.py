"""``pizzeria chaos``: crash everything on purpose, then prove nothing was lost or doubled.

One command starts a private Temporal dev server (history in a file), a local payment
provider and worker processes on 127.0.0.1 (`fleet`), places N orders with a seeded random
mix of good and bad cards, pickups, pizzas and faults (`plan`): a flaky and declining card
gateway, out-of-stock ingredients, refused bills, steps that write after their timeout or
whose answer is lost, compensations that fail a few times; and a payment provider that
answers 5xx, loses answers, refuses connections and answers late, at random. It cancels
some of them (`orders`), kills a worker with SIGKILL and starts it again at intervals,
restarts the server on the same history file, kills the payment provider and starts it
again on the same port and data file (`monkey`), waits (bounded) for every order to close,
and then runs ``pizzeria check`` against the ledger and the provider's records (`run`,
`result`). Only processes it started are ever signalled.

Faults on compensations are limited to fewer attempts than an order's
``compensation_attempts``, so orders never have to park as "needs attention". Should one
park anyway (a worker killed once too often), chaos answers it like an operator would,
with the ``retry_compensations`` Update, and counts it as ``repaired``.
"""
