"""Stopping a run cleanly: Ctrl-C, SIGTERM (a CLI killed, a cancelled deployment run) or a lost
window lock ask the runs of this process to stop; they send nothing more, land what TLM has
answered, release their locks and end with a report. The signal only sets a flag: nothing is
interrupted half-way through landing a chunk. A second signal stops the process at once."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

import prefect.context
from prefect.exceptions import TerminationSignal
from prefect.runtime import deployment

Listener = Callable[[str], None]


class Stop:
    """The process's stop request: why (None: not asked), and who to tell."""

    def __init__(self) -> None:
        self.why: str | None = None
        self.signum: int | None = None
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()

    def request(self, why: str, signum: int | None = None) -> None:
        with self._lock:
            if self.why is not None:
                return
            self.why, self.signum = why, signum
            listeners = list(self._listeners)
        for tell in listeners:
            tell(why)

    @contextmanager
    def listening(self, tell: Listener) -> Iterator[None]:
        """``tell(why)`` is called once a stop is asked (at once if it already was)."""
        with self._lock:
            self._listeners.append(tell)
            why = self.why
        if why is not None:
            tell(why)
        try:
            yield
        finally:
            with self._lock:
                self._listeners.remove(tell)

    def reset(self) -> None:
        with self._lock:
            self.why, self.signum = None, None


STOP = Stop()
NAMES: dict[int, str] = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


def deployed() -> bool:
    """Whether this flow run is a deployment's, or nested in one. Prefect's flow engine sets
    the ``_deployment_id`` context variable for those; ``prefect.runtime.deployment.id`` reads
    it too, but when it is unset (every run started by hand) it also reads the flow run back
    over the API, a request and a client for nothing. Read through here only; the public way
    if a Prefect release renames the variable (pinned by tests/unit/test_deployed.py)."""
    var = getattr(prefect.context, "_deployment_id", None)
    if var is None:
        return bool(deployment.id)
    return var.get() is not None


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """While the block runs (in the main thread; elsewhere it does nothing): the first SIGINT
    or SIGTERM asks the process's runs to stop (``STOP``), a second one raises at once.

    Nothing either in a deployment run: its worker cancels it with a SIGTERM that Prefect's own
    handler turns into TerminationSignal (Prefect's cancellation needs that handler in place);
    the run's except-path stops it the same way, and ``critical`` keeps the signal out of
    landing.
    """
    if threading.current_thread() is not threading.main_thread() or deployed():
        yield
        return
    STOP.reset()

    def handle(signum: int, frame: FrameType | None) -> None:
        if STOP.why is not None:  # asked twice: stop now
            raise KeyboardInterrupt if signum == signal.SIGINT else TerminationSignal(signum)
        STOP.request(f"stopped by {NAMES.get(signum, signum)}", signum)

    before = {s: signal.signal(s, handle) for s in NAMES}
    try:
        yield
    finally:
        for s, h in before.items():
            signal.signal(s, h)


@contextmanager
def critical() -> Iterator[None]:
    """Landing a chunk (its upload, the ledger, the report) is not cut in two: a SIGINT or
    SIGTERM arriving meanwhile is handed to the former handler once the block is done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[tuple[int, FrameType | None]] = []

    def defer(signum: int, frame: FrameType | None) -> None:
        pending.append((signum, frame))

    before = {s: signal.signal(s, defer) for s in NAMES}
    try:
        yield
    finally:
        for s, h in before.items():
            signal.signal(s, h)
        for signum, frame in pending[:1]:
            handler = before[signum]
            if callable(handler):
                handler(signum, frame)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), signum)
