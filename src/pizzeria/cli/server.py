"""Serving Temporal on this machine: the dev server with its Web UI (and the local payment
provider beside it), and the codec endpoint that lets the Web UI show decrypted payloads."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import click

from pizzeria import config
from pizzeria.cli.common import UserError, fail, out, stop_on_sigterm
from pizzeria.cli.options import flag_option, int_option, refuse_shared_ports
from pizzeria.demo import local_payments
from pizzeria.payments.process import DEFAULT_PORT as DEFAULT_PAYMENTS_PORT
from pizzeria.payments.process import ProviderProcessError, exit_text
from pizzeria.temporal.codec import EncryptionCodec, load_keys
from pizzeria.temporal.codec_server import (
    DEFAULT_ORIGINS,
    CodecServer,
    cli_advice,
    load_auth_secret,
    serve_for_web_ui,
)
from pizzeria.temporal.codec_server import DEFAULT_PORT as DEFAULT_CODEC_PORT
from pizzeria.temporal.devserver import GRPC_PORT, UI_PORT, DevServer, DevServerError, port_open


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    help="The data folder: the history file, the provider's data, the codec key and secrets "
    "[default: $PIZZERIA_DATA_DIR, else .pizzeria]",
)
@int_option("--port", 1, 65535, default=GRPC_PORT, help="gRPC port on 127.0.0.1")
@int_option("--ui-port", 1, 65535, default=UI_PORT, help="Web UI port on 127.0.0.1")
@flag_option("--in-memory", help="Keep no history file (lost on exit)")
@int_option(
    "--codec-port",
    0,
    65535,
    default=DEFAULT_CODEC_PORT,
    help="Also serve the codec endpoint here, so the Web UI shows decrypted payloads",
)
@flag_option("--no-codec", help="No codec endpoint: the Web UI shows ciphertext")
@int_option(
    "--payments-port",
    0,
    65535,
    default=DEFAULT_PAYMENTS_PORT,
    help="The local payment provider's port: one answering here is used, else one is "
    "started here (a free port when taken); the workers of this data folder find it",
)
@flag_option("--no-payments", help="No local payment provider (Stripe, or one of your own)")
def server(
    data_dir: Path | None,
    port: int,
    ui_port: int,
    in_memory: bool,
    codec_port: int,
    no_codec: bool,
    payments_port: int,
    no_payments: bool,
) -> None:
    """Run the Temporal dev server (with its Web UI) and the local payment provider until
    Ctrl-C."""
    stop_on_sigterm()
    if data_dir is not None:
        config.use_data_dir(data_dir)
    taken = {"--port": port, "--ui-port": ui_port}
    if not no_codec and codec_port:
        taken["--codec-port"] = codec_port
    if not no_payments and payments_port:
        taken["--payments-port"] = payments_port
    refuse_shared_ports(taken)
    if port_open(port):  # before anything else starts, and says so rather than a codec port
        fail(
            f"port {port} is already in use on 127.0.0.1: a Temporal server (another "
            "`pizzeria server`?) may be running there; stop it, or choose --port"
        )
    if port_open(ui_port):
        fail(
            f"the Web UI's port {ui_port} is already in use on 127.0.0.1 (another Temporal "
            "Web UI?); stop it, or choose --ui-port"
        )
    with contextlib.ExitStack() as payments:
        if not no_payments:
            try:
                payments.enter_context(local_payments(out.print, port=payments_port))
            except ProviderProcessError as error:
                fail(f"cannot start the local payment provider: {error}")
        serve_dev_server(port, ui_port, in_memory, codec_port, no_codec)


def serve_dev_server(
    port: int, ui_port: int, in_memory: bool, codec_port: int, no_codec: bool
) -> None:
    history = None if in_memory else config.history_file()
    codec_server = None if no_codec else start_codec_server(codec_port, ui_port)
    dev = DevServer(
        history,
        port=port,
        ui_port=ui_port,
        codec_endpoint=codec_server.url if codec_server else None,
    )
    try:
        dev.start()
    except DevServerError as error:
        if codec_server:
            codec_server.stop()
        fail(str(error))
    try:  # from here on, whatever happens (a closed stdout too) stops what was started
        # For the links the other commands print (config.local_web_ui): the Web UI is on
        # --ui-port, not where the dev server usually puts it.
        with config.web_ui_said(port, ui_port):
            out.print(f"Temporal dev server on 127.0.0.1:{port}, Web UI http://localhost:{ui_port}")
            out.print(f"History file: {history}" if history else "History: in memory")
            if codec_server:
                out.print(
                    f"Codec endpoint {codec_server.url}: the Web UI shows decrypted payloads;"
                )
                out.print(f"  {cli_advice(codec_server)}", markup=False)
            out.print("Press Ctrl-C to stop.")
            assert dev.process is not None
            code = dev.process.wait()
    except KeyboardInterrupt:
        return
    finally:
        dev.stop()
        if codec_server:
            codec_server.stop()
    # Not stopped by us: killed, or failed (its database...). Said, and not a clean exit.
    kept = f"; its history is kept in {history}" if history else ""
    fail(f"the Temporal dev server {exit_text(code)}{kept}: start `pizzeria server` again")


def start_codec_server(port: int, ui_port: int) -> CodecServer:
    try:
        return serve_for_web_ui(ui_port, port)
    except OSError as error:  # a port in use: exit 1, as every other port taken
        raise ConnectionError(
            f"cannot serve the codec endpoint on 127.0.0.1:{port}: {error.strerror}"
        ) from None


@click.command(name="codec-server")
@int_option(
    "--port", 0, 65535, default=DEFAULT_CODEC_PORT, help="Port on 127.0.0.1 (0: a free one)"
)
@click.option(
    "--origin",
    "origins",
    multiple=True,
    help="Browser origin allowed to call it [default: the local Web UI, port 8233]",
)
@flag_option(
    "--require-auth",
    help="Browsers too must send the secret: behind a proxy that authenticates the Web "
    "UI's users and adds the header (see docs/security.md)",
)
def codec_server_command(port: int, origins: tuple[str, ...], require_auth: bool) -> None:
    """Serve the codec endpoint (localhost only) so the Web UI can decrypt payloads.

    Browsers are served from the allowed origins only; any other caller must send
    'Authorization: Bearer <secret>' (the secret in $PIZZERIA_CODEC_AUTH, else in
    .pizzeria/codec.auth, made on first use).
    """
    for origin in origins:  # what a browser sends: scheme://host[:port], nothing more
        if not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+", origin):
            raise UserError(
                f"--origin {origin!r} is not a browser origin such as http://localhost:8233"
            )
    stop_on_sigterm()
    allowed = origins or DEFAULT_ORIGINS
    codec, secret = EncryptionCodec(load_keys(), reader=True, serving=True), load_auth_secret()
    try:
        endpoint = CodecServer(
            codec, secret=secret, port=port, origins=allowed, require_auth=require_auth
        )
    except OSError as error:  # a port in use: exit 1, as every other port taken
        raise ConnectionError(f"cannot serve on 127.0.0.1:{port}: {error.strerror}") from None
    browsers = "browsers need the secret too" if require_auth else "without the secret"
    out.print(f"Codec endpoint on {endpoint.url} for {', '.join(allowed)} ({browsers}).")
    out.print(cli_advice(endpoint), markup=False)
    out.print(f"Start the dev server with --ui-codec-endpoint {endpoint.url}. Ctrl-C stops.")
    try:
        endpoint.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        endpoint.httpd.server_close()
