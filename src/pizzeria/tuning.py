"""The order's optional pieces, which a benchmark switches off one at a time to weigh them
(``pizzeria bench --ablation``).

Every piece is on unless the benchmark's worker switches it off when it starts, before it
builds its worker; nothing changes it afterwards. The workflow reads it while it runs
(`is_on` for visibility, summaries and metrics, through the sandbox, which passes this
module through), so a setting must hold for the life of the process. Switching off a
piece the workflow uses changes the commands it sends, so every worker serving the same
orders must agree: it is for a benchmark's private stack, never for a deployment.
"""

from __future__ import annotations

#: What each piece is, and what a user loses without it.
PIECES = {
    "encryption": "AES-GCM payload encryption (card numbers and names never stored in clear)",
    "visibility": "the OrderStatus search attribute and the outcome memo (pizzeria orders)",
    "summaries": "activity and timer summaries, current details (the Web UI's story)",
    "metrics": "our Prometheus counters and the metrics interceptor",
    "faults": "the fault interceptor (pizzeria faults, chaos)",
    "thread": "ledger calls on a thread instead of the worker's event loop",
    "sandbox": "the workflow sandbox (checks that workflow code stays deterministic)",
}

_off: set[str] = set()


def switch_off(pieces: set[str] | frozenset[str]) -> None:
    """Called once by the benchmark's worker at start; unknown names are refused."""
    unknown = set(pieces) - set(PIECES)
    if unknown:
        raise ValueError(f"unknown pieces {sorted(unknown)}: choose from {', '.join(PIECES)}")
    _off.clear()
    _off.update(pieces)


def is_on(piece: str) -> bool:
    return piece not in _off
