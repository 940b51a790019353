"""Time as a seam: code that waits, leases or retries takes a :class:`Clock`.

Production passes :data:`SYSTEM`; tests pass a fake one (``tests/support/clock.py``) whose
``sleep`` moves its time forward at once, so a rule about time is tested without waiting.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Seconds since the epoch (wall clock: comparable across processes)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for deadlines and durations)."""

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(seconds, 0.0))


SYSTEM: Clock = SystemClock()


def utcnow(clock: Clock = SYSTEM) -> datetime:
    return datetime.fromtimestamp(clock.time(), tz=UTC)
