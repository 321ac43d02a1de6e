"""The tools that prove and measure the order service: check, chaos, bench.

They stand beside the service, never inside it: they import the service's modules, and
nothing in the service imports them. They are libraries, without a command line: their
commands are in `pizzeria.cli`, which with the tests is all that imports them. Kept empty
on purpose: the workflow sandbox imports this package for the benchmark's baseline
workflow (see ``ops.baseline``).
"""
