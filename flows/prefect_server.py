"""The Prefect server a CLI run (or the demo) talks to, chosen before Prefect is imported
(Prefect reads PREFECT_API_URL once, at import):

1. the one PREFECT_API_URL names (or Prefect's settings, when it is already imported);
2. the server of ``make prefect`` (``TRUST_EVAL_LOCAL_PREFECT_API``, http://127.0.0.1:4200/api)
   when its health answers;
3. else an embedded server of this process: Prefect's ephemeral app (no UI) served by uvicorn
   in a session of its own, so the terminal's Ctrl-C reaches the run and not the server: the
   run stops sending, lands what TLM answered and reports through a server that is still up.
   It stops with this process (``close``), and by itself when this process is gone (it watches
   its parent), ``kill -9`` included. Runs on it keep the OS window lock of a run without a
   server (flows/window_lock.py).

``python -m flows.prefect_server --fd N --parent PID`` is the embedded server's own process.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tasks.config import EMBEDDED_PREFECT_API_VAR
from tasks.errors import ConfigError, TrustEvalError

STARTUP_VAR = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
STARTUP_DEFAULT_S = 180  # Prefect's own 20 s is too short on a busy 2-core machine
PROGRESS_EVERY_S = 5.0
Say = Callable[[str], None]


class ServerStartFailed(TrustEvalError):
    """The embedded Prefect server did not come up."""


def answers(api_url: str, timeout_s: float = 1.0) -> bool:
    """The Prefect API at ``api_url`` says it is healthy."""
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout_s) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def startup_timeout_s() -> tuple[int, bool]:
    """How long the embedded server may take to start, and whether the user chose it."""
    raw = os.environ.get(STARTUP_VAR, "").strip()
    if raw.isdigit() and int(raw) > 0:
        return int(raw), True
    return STARTUP_DEFAULT_S, False


def prefect_home() -> Path:
    return Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()


class Embedded:
    """Prefect's ephemeral API in a process of its own session, on a socket this process bound
    and keeps (handed over as a file descriptor: no race for the port, and the same port if the
    server has to be started again)."""

    ATTEMPTS = 3  # two servers setting up one new database at once: the loser starts again

    def __init__(self) -> None:
        home = prefect_home()
        home.mkdir(parents=True, exist_ok=True)
        self.log = home / "embedded-server.log"
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)  # requests before the server is up wait instead of being refused
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/api"
        self.started = time.monotonic()
        self.attempts = 0
        self.proc = self.spawn()

    def spawn(self) -> subprocess.Popen[bytes]:
        self.attempts += 1
        env = os.environ | {
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
        }
        env.pop("PREFECT_API_URL", None)
        fd = self.sock.fileno()
        with self.log.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "flows.prefect_server", "--fd", str(fd),
                 "--parent", str(os.getpid())],
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                pass_fds=[fd], start_new_session=True,
            )  # fmt: skip

    def wait(self, say: Say) -> float:
        """Until the server answers (progress every few seconds); its start-up time."""
        timeout, _ = startup_timeout_s()
        next_note = time.monotonic() + 1.0
        while not answers(self.url, timeout_s=1.0):
            now = time.monotonic()
            if self.proc.poll() is not None:
                if self.attempts >= self.ATTEMPTS or now - self.started > timeout:
                    raise ServerStartFailed(
                        f"Prefect's embedded server exited ({self.proc.returncode}) before it "
                        f"answered; see {self.log}"
                    )
                say("  ... Prefect's server stopped while setting up (another run's server on "
                    "the same PREFECT_HOME?); starting it again")  # fmt: skip
                self.proc = self.spawn()
            if now - self.started > timeout:
                self.stop()
                raise ServerStartFailed(
                    f"Prefect's embedded server did not answer within {timeout} s: set "
                    f"{STARTUP_VAR} higher, or run `make prefect` and use its server; "
                    f"see {self.log}"
                )
            if now >= next_note:
                say(f"  ... Prefect's server still starting ({now - self.started:.0f} s)")
                next_note = now + PROGRESS_EVERY_S
            time.sleep(0.2)
        took = time.monotonic() - self.started
        say(f"Prefect's embedded server is up after {took:.1f} s")
        return took

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM its session, then SIGKILL what is left."""
        self.sock.close()
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)


@dataclass
class PrefectApi:
    """The server chosen: its URL, how it was found, and the embedded one if started here."""

    url: str | None  # None: the one Prefect's settings name (already imported)
    kind: str  # "configured", "local" or "embedded"
    embedded: Embedded | None = None
    startup_s: float | None = None

    def ready(self, say: Say) -> None:
        """Wait for the embedded server, once."""
        if self.embedded is not None and self.startup_s is None:
            self.startup_s = self.embedded.wait(say)

    def close(self) -> None:
        """Hand Prefect's pending logs and events to the server, then stop it (embedded)."""
        if self.embedded is None:
            return
        if self.startup_s is not None and "prefect" in sys.modules:
            from prefect.events.worker import EventsWorker
            from prefect.logging.handlers import APILogWorker

            with contextlib.suppress(Exception):
                EventsWorker.drain_all(timeout=3)
                APILogWorker.drain_all(timeout=3)
        self.embedded.stop()


def choose(local_api: str | None, say: Say, *, no_embedded: str | None = None) -> PrefectApi:
    """Pick the server (see the module docstring) and point PREFECT_API_URL at it. An embedded
    server is started here and starts while the caller goes on (``ready`` waits for it);
    ``no_embedded``: why this run cannot use one (a ConfigError, nothing started)."""
    configured = os.environ.get("PREFECT_API_URL")
    if not configured and "prefect" in sys.modules:  # a caller (a test) set it in-process
        from prefect.settings import get_current_settings

        configured = get_current_settings().api.url
    if configured:
        say(f"Prefect: {configured} (PREFECT_API_URL)")
        return PrefectApi(os.environ.get("PREFECT_API_URL"), "configured")
    if local_api and answers(local_api, timeout_s=0.5):
        os.environ["PREFECT_API_URL"] = local_api
        say(f"Prefect: the local server at {local_api} (`make prefect`); runs show in its UI")
        return PrefectApi(local_api, "local")
    if no_embedded:
        raise ConfigError(no_embedded)
    server = Embedded()
    timeout, chosen = startup_timeout_s()
    why = f"{STARTUP_VAR}={timeout}" if chosen else f"up to {timeout} s; {STARTUP_VAR} sets it"
    say(f"Prefect: starting an embedded server for this run at {server.url} ({why}) ...")
    os.environ["PREFECT_API_URL"] = server.url
    os.environ[EMBEDDED_PREFECT_API_VAR] = server.url
    os.environ.setdefault(STARTUP_VAR, str(timeout))  # any ephemeral server Prefect starts too
    os.environ.setdefault("PREFECT_UI_URL", "")  # it has no UI: no links to one
    return PrefectApi(server.url, "embedded", server)


# --- the embedded server's own process ----------------------------------------------------


def serve(fd: int, parent: int) -> None:
    """Serve Prefect's ephemeral app on the socket ``fd`` until SIGTERM, or until ``parent``
    is gone."""
    import uvicorn

    sock = socket.socket(fileno=fd)
    config = uvicorn.Config(
        "prefect.server.api.server:create_app", factory=True, log_level="error", lifespan="on"
    )
    server = uvicorn.Server(config)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        server.should_exit = True

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    server.run(sockets=[sock])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Prefect's API for one CLI run")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    args = parser.parse_args(argv)
    serve(args.fd, args.parent)


if __name__ == "__main__":
    main()
