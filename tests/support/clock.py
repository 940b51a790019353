"""A clock for tests: ``sleep`` moves its time forward at once (and records the wait), so a rule
about time runs in no time and says exactly what it waited."""

from __future__ import annotations

from collections.abc import Callable


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start  # epoch seconds
        self.mono = 1_000.0
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[FakeClock], None] | None = None  # runs after each sleep

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.mono += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(max(seconds, 0.0))
        if self.on_sleep is not None:
            self.on_sleep(self)
