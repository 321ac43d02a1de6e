"""Start and stop the local payment provider (``pizzeria payments``) as a subprocess.

For ``pizzeria server``, ``make demo``, chaos, bench and the tests: `start` runs it on
127.0.0.1 (a free port by default), waits until it answers an API call (an open port is
not enough), and returns its URL and PID; `ProviderProcess.stop`, or `stop` with a PID
this program recorded, ends it. Only a process this program started is ever signalled.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pizzeria import config
from pizzeria.private import make_private_dir

HOST = "127.0.0.1"
DEFAULT_PORT = 8091
DEFAULT_HOLD_SECONDS = 7 * 24 * 3600  # Stripe's: an uncaptured card hold lasts 7 days
READY_PREFIX = "Payments provider listening on "
#: Keys the local provider accepts (it takes any sk_test_... and pk_test_... key).
LOCAL_SECRET_KEY = "sk_test_pizzeria_local"
LOCAL_PUBLISHABLE_KEY = "pk_test_pizzeria_local"
LOG_TAIL_CHARS = 2000
#: A kept provider that exits by itself is started again, at most this many times within
#: `KEEP_WINDOW` seconds: one that keeps exiting has a fault of its own (its log says which).
KEEP_RESTARTS = 5
KEEP_WINDOW = 60.0


class ProviderProcessError(RuntimeError):
    """The provider exited, or did not answer in time."""


def default_data_file() -> Path:
    return config.data_dir() / "payments.db"


def provider_command(
    data_file: Path,
    port: int,
    hold_seconds: float,
    faults_file: Path | None = None,
    host: str = HOST,
) -> list[str]:
    beside = Path(sys.executable).parent / "pizzeria"
    base = (
        [str(beside)]
        if beside.exists()
        else [sys.executable, "-c", "from pizzeria.cli import main; main()"]
    )
    command = [*base, "payments", "--host", host, "--port", str(port), "--data", str(data_file)]
    command += ["--hold-seconds", repr(float(hold_seconds))]
    if faults_file is not None:
        command += ["--faults-file", str(faults_file)]
    return command


def answers(url: str, timeout: float = 2.0) -> bool:
    """Whether the provider at ``url`` serves its API (an authenticated list answers)."""
    request = urllib.request.Request(
        f"{url}/v1/payment_intents?limit=1",
        headers={"Authorization": f"Bearer {LOCAL_SECRET_KEY}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status == 200 and bool(json.load(response).get("object") == "list")
    except (OSError, ValueError):
        return False


@dataclass
class ProviderProcess:
    """A provider this program started."""

    url: str
    pid: int
    log_file: Path
    process: subprocess.Popen[bytes]

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, SIGKILL after ``timeout``."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def kill(self) -> None:
        """SIGKILL: no goodbye (a crash)."""
        self.process.kill()
        self.process.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self.process.poll() is None


def _log_from(log_file: Path, offset: int) -> str:
    try:
        with open(log_file, "rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def start(
    data_file: Path,
    *,
    port: int = 0,
    hold_seconds: float = DEFAULT_HOLD_SECONDS,
    faults_file: Path | None = None,
    log_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    own_session: bool = False,
    timeout: float = 60.0,
) -> ProviderProcess:
    """Run ``pizzeria payments`` and wait until it answers. Its output is appended to
    ``log_file`` (default: beside the data file, ``.log``)."""
    make_private_dir(data_file.parent)
    log_file = log_file or data_file.with_suffix(".log")
    offset = log_file.stat().st_size if log_file.exists() else 0
    with open(log_file, "ab") as output:
        process = subprocess.Popen(
            provider_command(data_file, port, hold_seconds, faults_file),
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            start_new_session=own_session,
        )
    started = ProviderProcess("", process.pid, log_file, process)
    try:
        started.url = _wait_until_answering(started, offset, timeout)
    except BaseException:
        started.stop()
        raise
    return started


def _wait_until_answering(started: ProviderProcess, offset: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    url = ""
    while True:
        output = _log_from(started.log_file, offset)
        if not url:
            for line in output.splitlines():
                if line.startswith(READY_PREFIX):
                    url = line.removeprefix(READY_PREFIX).split()[0]
        if url and answers(url):
            return url
        if started.process.poll() is not None:
            raise ProviderProcessError(
                f"the payment provider exited with code {started.process.returncode}:\n"
                + output[-LOG_TAIL_CHARS:]
            )
        if time.monotonic() > deadline:
            raise ProviderProcessError(
                f"the payment provider did not answer within {timeout:.0f} s:\n"
                + output[-LOG_TAIL_CHARS:]
            )
        time.sleep(0.1)


def stop(pid: int, timeout: float = 10.0) -> None:
    """Stop a provider this program started and recorded by PID: SIGTERM, then SIGKILL
    after ``timeout``. A PID that is already gone is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _gone_within(pid, timeout):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not _gone_within(pid, 5.0):
        raise ProviderProcessError(f"process {pid} survived SIGKILL")


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        waited, _ = os.waitpid(pid, os.WNOHANG)  # our child: reap it once it exits
        if waited == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class KeptProvider:
    """A provider this program started, and starts again on the same port (the URL its
    workers know) when it exits by itself: killed by hand or by the kernel's OOM killer,
    until `stop`. ``say`` is told each time, in one line. Its options are `start`'s."""

    def __init__(self, data_file: Path, say: Callable[[str], None], **options: Any) -> None:
        self._data_file = data_file
        self._options = options
        self._say = say
        self.current = self._start(options.get("port", 0))
        self.url = self.current.url
        self._lock = threading.Lock()
        self._stopping = False
        self._keeper = threading.Thread(target=self._keep, name="payments-keeper", daemon=True)
        self._keeper.start()

    def _start(self, port: int) -> ProviderProcess:
        return start(self._data_file, **{**self._options, "port": port})

    def _keep(self) -> None:
        exits: collections.deque[float] = collections.deque()
        while True:
            code = self.current.process.wait()
            with self._lock:
                if self._stopping:
                    return
                now = time.monotonic()
                exits.append(now)
                while now - exits[0] > KEEP_WINDOW:
                    exits.popleft()
                how = exit_text(code)
                log = self.current.log_file
                if len(exits) > KEEP_RESTARTS:
                    self._say(
                        f"The local payment provider {how}, {len(exits)} times within "
                        f"{KEEP_WINDOW:.0f} s: left stopped (its log: {log})"
                    )
                    return
                self._say(
                    f"The local payment provider {how}: starting it again at {self.url} "
                    f"(its log: {log})"
                )
                try:
                    self.current = self._start(int(self.url.rsplit(":", 1)[1]))
                except ProviderProcessError as error:
                    self._say(f"The local payment provider could not start again: {error}")
                    return
                if self.current.url != self.url:
                    self._say(
                        f"The local payment provider's port was taken: it listens at "
                        f"{self.current.url} now; restart the workers so that they find it"
                    )
                    self.url = self.current.url

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
        self.current.stop()
        self._keeper.join(timeout=10)


def exit_text(code: int) -> str:
    """How a child process ended, by its return code: "exited with code 1", "was killed
    (SIGKILL)"."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed ({signal.Signals(-code).name})"
        return f"was killed (signal {-code})"
    return f"exited with code {code}"


@contextlib.contextmanager
def running(data_file: Path, **options: Any) -> Iterator[ProviderProcess]:
    """`start` (same options), for the duration of the block."""
    provider = start(data_file, **options)
    try:
        yield provider
    finally:
        provider.stop()
