"""``pizzeria check``: do the ledger and the payment provider agree with Temporal's record
of every order?

Temporal knows what each order asked for and how it ended (the visibility list of
``PizzaOrderWorkflow`` runs, then each run's history: its order, decrypted here, and its
result or error: `records`); the ledger knows what each run did (its rows are keyed by
``<workflow id>/<run id>/<step>``, added up per run by `pizzeria.ledger.runs_of`). The
saga's invariants (see docs/design.md) must hold between the two, at any moment (`rules`):

* stock is never negative and is conserved: per ingredient, initial + received = in stock
  + what the runs still hold (consumed by completed orders, held by open ones, nothing by
  undone ones);
* each run did what its order asked, computed from its items with the menu: the stock
  taken is their recipe, the charge their billed amount to its card; a completed order's
  bill is that amount and the confirmation Temporal returned, and charged - refunded
  equals it; a failed, cancelled or terminated one keeps no money, stock or bill;
* nothing is refunded above what was charged; no effect is written twice (a row under a
  key other than its own counts), and no step took effect after its compensation's
  tombstone;
* every row, a tombstone included, belongs to a run Temporal knows.

The third book is the payment provider's (`provider`: every payment and refund, listed
through the payment port), judged against the other two by `money_rules`: each payment
holds the charge amount, is captured iff billed, is released iff its run was compensated
before the pivot, is refunded as the ledger records it (a failed delivery in full), and no
hold outlives its run; no provider object without a run, no money of a run without its
provider object.

Temporal is read first, the ledger afterwards, in one read-only transaction, and the
provider last (`reconcile`): an order closed in Temporal has finished writing, a
consistent snapshot keeps conservation exact while workers write, and the provider, which
each move of money reaches before the ledger records it, already holds every payment the
snapshot names. An order still open is only a violation with ``--closed``. When the check
cannot be made (`records.CannotCheck`, a ledger, server or provider it cannot reach) it
says so instead of judging (exit 2, not 1).
"""
