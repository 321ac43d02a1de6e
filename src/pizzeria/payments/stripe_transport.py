"""How the stripe library's requests travel: to a provider on this machine over
`http.client` (`pizzeria.payments.loopback_http`), proved the data folder's own when the
gateway follows it (`pizzeria.payments.proof`); anywhere else over requests.
"""

from __future__ import annotations

import http.client
import urllib.parse
from pathlib import Path

import requests
import stripe

from pizzeria.payments import proof
from pizzeria.payments.loopback_http import LoopbackHTTPClient


def _loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    return host == "localhost" or host == "::1" or host.startswith("127.")


def http_client(
    base_url: str, timeout: float, threads: int, follow: Path | None = None
) -> stripe.HTTPClient:
    """How the stripe library's requests travel: to a plain-HTTP provider on this machine
    over `http.client` (`loopback_http`, half a millisecond less CPU per call); anywhere
    else over requests, with its TLS and proxies, one session for our threads. Following
    the data folder's provider (``follow``, its ``payments.url``), over `http.client`
    too, and each connection is to a provider that proves it is the folder's own, before
    anything is sent on it (`pizzeria.payments.proof`)."""
    if follow is not None:
        secret_file = proof.secret_file_beside(follow)

        def prove(connection: http.client.HTTPConnection, url: str) -> None:
            proof.ask(connection, proof.folder_secret(secret_file), url)

        return LoopbackHTTPClient(timeout, prove)
    if base_url.startswith("http://") and _loopback(base_url):
        return LoopbackHTTPClient(timeout)
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=threads)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return stripe.RequestsClient(timeout=timeout, session=session)
