"""A backfill's in-process day (``flows.backfill.run_day``): which failures run the day again."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from prefect.exceptions import PrefectHTTPStatusError

from flows.backfill import DAY_PAUSE_S, DAY_TRIES, run_day
from tasks.report import EvalReport
from tests.support.clock import FakeClock

START = datetime(2026, 11, 9, tzinfo=UTC)
END = START + timedelta(days=1)
LOG = logging.getLogger("test")


def prefect_answered(status: int) -> PrefectHTTPStatusError:
    """The error Prefect's client raises for ``status`` (after its own retries)."""
    req = httpx.Request("POST", "http://127.0.0.1:4200/api/task_runs/")
    try:
        httpx.Response(status, request=req, json={"exception_message": "x"}).raise_for_status()
    except httpx.HTTPStatusError as err:
        return PrefectHTTPStatusError.from_httpx_error(err)
    raise AssertionError(f"{status} is not an error")


class Day:
    """The day's run: raises ``errors`` in turn, then returns its report."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self, **kw: Any) -> EvalReport:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return EvalReport(
            window_start=kw["window_start"],
            window_end=kw["window_end"],
            tags=kw["tags"],
            score_name="trust_score",
            fetched=3,
            uploaded=3,
        )


def test_a_day_the_prefect_server_refused_as_busy_runs_again_after_a_pause() -> None:
    clock, day = FakeClock(), Day(prefect_answered(503), prefect_answered(503))
    result = run_day(START, END, {"tags": ["a"]}, run=day, clock=clock, logger=LOG)
    assert result.status == "ok" and result.report is not None and result.report.uploaded == 3
    assert day.calls == 3 and clock.sleeps == [DAY_PAUSE_S, DAY_PAUSE_S]


def test_a_day_still_refused_after_its_tries_fails_naming_the_answer() -> None:
    clock = FakeClock()
    day = Day(*[prefect_answered(503) for _ in range(DAY_TRIES)])
    result = run_day(START, END, {"tags": ["a"]}, run=day, clock=clock, logger=LOG)
    assert result.status == "failed" and "503" in (result.error or "")
    assert day.calls == DAY_TRIES and len(clock.sleeps) == DAY_TRIES - 1


def test_any_other_failure_fails_the_day_at_once() -> None:
    for error in (prefect_answered(404), prefect_answered(422), ValueError("bad")):
        clock, day = FakeClock(), Day(error)
        result = run_day(START, END, {"tags": ["a"]}, run=day, clock=clock, logger=LOG)
        assert result.status == "failed" and day.calls == 1 and clock.sleeps == []
