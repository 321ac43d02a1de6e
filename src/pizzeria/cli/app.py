"""The ``pizzeria`` command group and its error handling.

Every error a user can cause ends in one line on stderr and a non-zero exit (2 for bad
input, 1 for everything else), never a traceback. Card numbers are shown masked. Each
module of this package holds a few commands; this one gathers them under one group.
"""

from __future__ import annotations

import contextlib
import os
import sys

import click
from temporalio.service import RPCError

from pizzeria import __version__
from pizzeria.cli.api import api
from pizzeria.cli.bench import bench
from pizzeria.cli.chaos import chaos
from pizzeria.cli.check import check
from pizzeria.cli.common import UserError, err, error_line
from pizzeria.cli.doctor import doctor
from pizzeria.cli.faults import faults
from pizzeria.cli.ledger import ledger, stock
from pizzeria.cli.orders import cancel, orders, repair, status
from pizzeria.cli.payments import payments
from pizzeria.cli.place import order
from pizzeria.cli.refund import refund
from pizzeria.cli.server import codec_server_command, server
from pizzeria.cli.service import demo, worker
from pizzeria.client import OrderAlreadyRunning, OrderRefused
from pizzeria.ledger import LedgerError, UnsupportedLedger
from pizzeria.payments.errors import PaymentError
from pizzeria.payments.provider_config import ProviderConfigError
from pizzeria.temporal import tracing
from pizzeria.temporal.codec import CodecKeyError
from pizzeria.temporal.connection import TemporalConfigError
from pizzeria.temporal.devserver import DevServerError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pizzeria")
def app() -> None:
    """pizzeria: the pizza-order Saga of the exercise on Temporal, with a real ledger."""


for command in (
    server,
    codec_server_command,
    worker,
    order,
    orders,
    status,
    cancel,
    repair,
    ledger,
    stock,
    api,
):
    app.add_command(command)
app.add_command(faults)
app.add_command(doctor)
app.add_command(payments)
app.add_command(refund)
app.add_command(demo)
# The tools that prove and measure the service.
app.add_command(bench)
app.add_command(chaos)
app.add_command(check)


#: What to do when the payment provider failed a command: its calls are keyed.
AGAIN_ONCE_IT_ANSWERS = (
    "run the command again once it answers (under the same keys, it finishes what this "
    "one may have begun)"
)


def main() -> None:
    """Console entry point: one-line errors, exit 2 for bad input, never a traceback."""
    code = _run_app()
    # The SDK's Rust threads can outlive the event loop and abort the interpreter while it
    # finalizes ("PyGILState_Release ... finalizing", sdk-python#300), which would turn a
    # finished command into a crash. Nothing is left to clean up here: flush and leave.
    tracing.flush()  # os._exit runs no atexit hook: the last batched spans leave here
    for stream in (sys.stdout, sys.stderr):
        # A reader that left early (`pizzeria order | head -1`) took what it wanted: the
        # command's own exit code stands, not a failed write's.
        with contextlib.suppress(BrokenPipeError):
            stream.flush()
    os._exit(code)


def help_path(ctx: click.Context | None, argv: list[str]) -> str:
    """The command whose ``--help`` to point at: the usage error's own, or, when click
    raised it from the group (an option of the command missing its value), the command
    named on the line."""
    if ctx is not None and ctx.command is not app:
        return ctx.command_path
    path, group = ["pizzeria"], app
    for word in argv:
        command = group.commands.get(word) if isinstance(group, click.Group) else None
        if command is None:
            if not word.startswith("-"):
                break
            continue
        path.append(word)
        group = command  # type: ignore[assignment]
    return " ".join(path)


def _run_app() -> int:
    try:
        app.main(prog_name="pizzeria", standalone_mode=False)
    except click.exceptions.Exit as done:
        return int(done.exit_code)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 1
    except click.exceptions.Abort:
        err.print("aborted")
        return 130
    except click.exceptions.NoArgsIsHelpError as bare:  # `pizzeria`, `pizzeria faults`
        click.echo(bare.ctx.get_help() if bare.ctx else app.get_help(click.Context(app)))
        return 0
    except click.UsageError as error:
        message = error.format_message().replace("\n", " ")
        error_line(f"{message} (see `{help_path(error.ctx, sys.argv[1:])} --help`)")
        return 2
    except (
        UserError,
        OrderRefused,
        TemporalConfigError,
        UnsupportedLedger,
        ProviderConfigError,
    ) as error:
        # TemporalConfigError: an address or a client config file that is wrong as given;
        # UnsupportedLedger: a --ledger of a kind no ledger lives at (mysql://...);
        # ProviderConfigError: PIZZERIA_PAYMENTS_URL that is no http(s) URL.
        error_line(str(error))
        return 2
    except (
        OrderAlreadyRunning,
        LookupError,
        ConnectionError,
        DevServerError,
        CodecKeyError,
        LedgerError,
    ) as error:
        error_line(str(error))
        return 1
    except RPCError as error:
        error_line(f"Temporal refused the request: {error}")
        return 1
    except PaymentError as error:  # the provider down while a command moves money
        error_line(f"{error}; {AGAIN_ONCE_IT_ANSWERS}")
        return 1
    except OSError as error:  # a data folder or a file that cannot be made or read
        where = f" {error.filename}" if error.filename else ""
        why = error.strerror or str(error)
        if isinstance(error, FileExistsError) and os.path.isfile(str(error.filename)):
            why = "it is a file, where a folder is needed"  # mkdir's "File exists"
        error_line(f"cannot use{where}: {why}")
        return 1
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    return 0
