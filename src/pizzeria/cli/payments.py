"""``pizzeria payments``: the local payment provider (Stripe's API, the part we use)."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import sys
from pathlib import Path

import click

from pizzeria import config
from pizzeria.cli.common import UserError, out, stop_on_sigterm
from pizzeria.cli.options import FiniteFloatRange, int_option
from pizzeria.payments.process import (
    DEFAULT_HOLD_SECONDS,
    DEFAULT_PORT,
    HOST,
    READY_PREFIX,
    default_data_file,
)
from pizzeria.payments.proof import proves
from pizzeria.payments.provider.engine import Provider, secret_file_of
from pizzeria.payments.provider.faults import FaultFileError, ProviderFaults
from pizzeria.payments.provider.server import PortInUse, ProviderServer, bind
from pizzeria.private import UnsafeSecret


@click.command("payments")
@click.option("--host", default=HOST, show_default=True, help="Address to listen on")
@int_option("--port", 0, 65535, default=DEFAULT_PORT, help="Port (0, or taken: a free one)")
@click.option(
    "--data",
    "data_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="SQLite file of its state [default: <data dir>/payments.db]",
)
@click.option(
    "--hold-seconds",
    type=FiniteFloatRange(min=0, min_open=True),
    default=DEFAULT_HOLD_SECONDS,
    show_default=True,
    help="How long an uncaptured hold lasts before it expires",
)
@click.option(
    "--faults-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Faults to inject, OPERATION=MODE[/ARG][:N][@RATE],... (re-read when it changes)",
)
def payments(
    host: str, port: int, data_file: Path | None, hold_seconds: float, faults_file: Path | None
) -> None:
    """Run the local payment provider: Stripe's PaymentIntents, Refunds and PaymentMethods
    API (the part pizzeria uses), for any sk_test_... key; state kept across restarts.

    Test cards as in Stripe: 4000000000000002 declined, 4000000000009995 insufficient
    funds, 4000000000000069 expired; a number that is not 16 digits is invalid.
    """
    if faults_file is not None:
        try:
            ProviderFaults(faults_file).current()
        except FaultFileError as error:
            raise UserError(f"{faults_file}: {error}") from None
        if not faults_file.exists():  # read again at each request: it may come later
            out.print(f"No faults file at {faults_file} yet: no faults until one is written")
    data_file = data_file or default_data_file()
    refuse_a_second_provider(data_file)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout, force=True
    )
    try:
        provider = Provider(data_file, hold_seconds=hold_seconds, faults_file=faults_file)
    except (sqlite3.Error, OSError) as error:
        raise UserError(f"cannot open the payments data file {data_file}: {error}") from None
    except UnsafeSecret as error:
        raise UserError(str(error)) from None
    try:
        server = _bind(provider, host, port)
        _serve(server, data_file)
    finally:
        provider.close()


def refuse_a_second_provider(data_file: Path) -> None:
    """The data folder's provider runs already (its ``payments.url`` answers): a second on
    the same file would take the URL file from it, then remove it when it stops."""
    if data_file.resolve() != default_data_file().resolve():
        return
    try:
        running = config.local_payments_url(usual="")
    except UnsafeSecret as error:
        raise UserError(str(error)) from None
    # A stranger that took the port (it cannot prove it is the folder's) is no provider
    # of ours: this one starts, on a free port when that one is taken.
    if running and proves(running, secret_file_of(data_file)):
        raise UserError(
            f"the data folder's payment provider already runs at {running} (payments in "
            f"{data_file}): one is enough; stop it first, or give another --data file"
        )


def _bind(provider: Provider, host: str, port: int) -> ProviderServer:
    try:
        return bind(provider, port, host)
    except PortInUse:
        out.print(f"Port {port} is taken: the payment provider takes a free one")
    except OSError as error:
        raise UserError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return bind(provider, 0, host)


def _serve(server: ProviderServer, data_file: Path) -> None:
    stop_on_sigterm()
    # The data folder's own provider says where it listens (a free port when its usual one
    # was taken), so that the folder's workers, `check` and `refund` find it: its data file
    # however it was named (`--data .pizzeria/payments.db` is the same file).
    own = data_file.resolve() == default_data_file().resolve()
    url_file = config.payments_url_file() if own else None
    if url_file is not None:
        url_file.write_text(server.url + "\n")
    print(f"{READY_PREFIX}{server.url} (data {data_file})", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if url_file is not None:
            with contextlib.suppress(OSError):
                if url_file.read_text().strip() == server.url:
                    url_file.unlink()
        print("Payments provider stopped", flush=True)
