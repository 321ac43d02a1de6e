"""``pizzeria api``: the order API and the live order page, in front of Temporal.

FastAPI and uvicorn are imported when the command runs, not when the CLI loads: the
worker and every other command start without them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from pizzeria import config
from pizzeria.api import DEFAULT_PORT
from pizzeria.api.limits import LIMIT_OPTIONS, ApiLimits
from pizzeria.cli.common import UserError, fail, out
from pizzeria.cli.options import FiniteFloatRange, address_option, int_option, ledger_option
from pizzeria.ledger import check_location
from pizzeria.temporal import otel_env


def limit_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """An option (and an environment variable) per limit of limits.py."""
    defaults = ApiLimits()
    for option in reversed(LIMIT_OPTIONS):
        default = getattr(defaults, option.field)
        kind = (
            click.IntRange(min=option.minimum, max=int(option.maximum))
            if isinstance(default, int)
            else FiniteFloatRange(min=0, min_open=True, max=option.maximum)
        )
        command = click.option(
            option.flag,
            option.field,
            envvar=option.env,
            show_envvar=True,
            default=default,
            show_default=True,
            type=kind,
            help=option.help,
        )(command)
    return command


@click.command(name="api")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on")
@int_option("--port", 1, 65535, default=DEFAULT_PORT, help="Port to listen on")
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    help="A Host name the API answers to besides 127.0.0.1, localhost, ::1 and --host "
    "(repeat for more; also $PIZZERIA_API_ALLOWED_HOSTS); others get 421",
)
@address_option
@ledger_option
@click.option(
    "--access-log/--no-access-log",
    default=True,
    show_default=True,
    help="Log each request (without query strings)",
)
@limit_options
def api(
    host: str,
    port: int,
    allowed_hosts: tuple[str, ...],
    address: str | None,
    ledger_location: str | None,
    access_log: bool,
    **limits: Any,
) -> None:
    """Serve the order API and the order page until Ctrl-C (with `server` and `worker`)."""
    from pizzeria.api.app import ApiSettings
    from pizzeria.api.auth import Keys, SecretError, load_secret, load_staff_key
    from pizzeria.api.hosts import HOSTS_ENV, hosts_from_env, unusable_hosts
    from pizzeria.api.serve import PortInUse, bind, run_api

    otel_env.check_env()  # a refusal before the banner: its address would never answer
    for source, entries in (("--allowed-host", allowed_hosts), (f"${HOSTS_ENV}", hosts_from_env())):
        if bad := unusable_hosts(entries):
            raise UserError(
                f"{source} {bad[0]!r} is no host name: a name (letters, digits, '.', '-'), "
                "an IP address, with a port or not, or '*'"
            )
    check_location(ledger_location or config.ledger_location())  # mysql://: exit 2 now
    try:
        settings = ApiLimits(**limits)
        keys = Keys(load_secret(), load_staff_key(), token_seconds=settings.token_seconds)
    except SecretError as error:
        raise UserError(str(error)) from None
    try:
        sock = bind(host, port)
    except PortInUse as error:
        fail(str(error))
    url = f"http://{host}:{port}"
    out.print(f"Order page {url}/  API {url}/orders  OpenAPI {url}/openapi.json")
    staff = "on" if keys.staff_key else "off (set PIZZERIA_API_KEY to list and repair orders)"
    out.print(f"Staff routes: {staff}. Ctrl-C stops.")
    traces = otel_env.where_traces_go()
    if traces:
        out.print(traces, markup=False)
    if host in ("0.0.0.0", "::") and not allowed_hosts:
        out.print("Only 127.0.0.1, localhost and ::1 are answered: add --allowed-host NAME.")
    hosts = (host, *allowed_hosts)
    run_api(
        ApiSettings(keys, address, ledger_location, limits=settings, allowed_hosts=hosts),
        sock,
        access_log=access_log,
    )
