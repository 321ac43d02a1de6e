"""``pizzeria``: run the server and the worker, place and inspect orders, run the demo.

The commands live in this package's modules and are gathered in `pizzeria.cli.app`. This
file is the console entry point alone, and imports nothing heavy itself: a Ctrl-C while
the commands are still loading (the SDK takes a moment) ends like one while they run,
with one line and exit 130, not a traceback of the import.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    """Console entry point: one-line errors, exit 2 for bad input, never a traceback."""
    try:
        from pizzeria.cli.app import main as run
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.stderr.flush()
        os._exit(130)
    run()
