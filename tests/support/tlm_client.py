"""Helpers for the contract tests that drive the real cleanlab-tlm client against the session TLM
sandbox: a clean sandbox per test, a call run in the background, and a wait on a condition.

Nothing here imports ``cleanlab_tlm``: the test modules import it after the session sandbox has
set ``CLEANLAB_API_BASE_URL``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from sandbox.tlm import TLMSandbox, session_tlm_sandbox

T = TypeVar("T")

# A wait that has not seen its condition after this long fails with a message instead of hanging
# until pytest-timeout: a liveness guard for a stuck test, never a timing check.
LIVENESS_GUARD_S = 120.0


def fresh_session_sandbox() -> Iterator[TLMSandbox]:
    """The session sandbox, reset before and after the test (use as a fixture body)."""
    sandbox = session_tlm_sandbox()
    sandbox.reset()
    yield sandbox
    sandbox.reset()


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll until ``condition()`` holds (see :data:`LIVENESS_GUARD_S`)."""
    deadline = time.monotonic() + LIVENESS_GUARD_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what} (liveness guard, not a timing check)")
        time.sleep(0.005)


class Background(Generic[T]):
    """``fn()`` run in a daemon thread; :meth:`result` joins it and returns or re-raises.

    A client's sync methods drive the event loop it found when built: one built in the test
    thread may run here as long as the test thread makes no client call until :meth:`result`.
    """

    def __init__(self, fn: Callable[[], T]) -> None:
        self._fn = fn
        self._result: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = self._fn()
        except BaseException as exc:  # handed to the test thread by result()
            self._error = exc

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self) -> T:
        wait_for(self.done, "the background call to return")
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]


def error_slot(message: str, *, retryable: bool) -> dict[str, Any]:
    """The ``log`` the client puts in a list call's slot for an item that failed."""
    return {"error": {"message": message, "retryable": retryable}}
