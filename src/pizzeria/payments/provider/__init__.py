"""The local payment provider: the subset of Stripe's HTTP API that
`pizzeria.payments.stripe_gateway` uses, on 127.0.0.1, its state in a SQLite file
(``pizzeria payments``; `pizzeria.payments.process` starts and stops it)."""
