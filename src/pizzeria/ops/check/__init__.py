"""``pizzeria check``: does the ledger agree with Temporal's record of every order?

Temporal knows how each order ended (the visibility list of ``PizzaOrderWorkflow`` runs,
then ``describe`` and the result of each: `records`); the ledger knows what each run did
(its rows are keyed by ``<workflow id>/<run id>/<step>``, added up per run by
`pizzeria.ledger.runs_of`). The saga's invariants (see docs/design.md) must hold between
the two, at any moment (`rules`):

* stock is never negative and is conserved: per ingredient, initial = in stock + what the
  runs still hold (consumed by completed orders, held by open ones, nothing by undone ones);
* per run, charged - refunded is the billed amount for a completed order (and the bill is
  the amount of its confirmation), and 0 for a failed, cancelled or terminated one, which
  holds no stock and has no bill;
* nothing is refunded above what was charged; no effect is written twice, and no step
  took effect after its compensation left a tombstone;
* the ledger holds no money or stock for a run Temporal does not know.

Temporal is read first and the ledger afterwards, in one transaction (`reconcile`): an
order closed in Temporal has finished writing, and a consistent snapshot keeps
conservation exact while workers write. An order still open is only a violation with
``--closed``.
"""
