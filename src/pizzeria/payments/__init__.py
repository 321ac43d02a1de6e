"""Real money: the payment port (`pizzeria.payments.port`), its Stripe adapter
(`pizzeria.payments.stripe_gateway`) and the local Stripe-compatible provider
(`pizzeria.payments.provider`, run by ``pizzeria payments``). See docs/payments.md."""
