"""The daily flow heals missed schedules: it evaluates the previous day, and first any of the
``catch_up_days`` days before it with no completed evaluation; a finished day is not re-run."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from flows.daily import daily
from flows.evaluate_traces import evaluate_traces
from flows.evaluated_days import evaluated_days
from sandbox.langfuse import LangfuseSandbox
from sandbox.tlm import TLMSandbox
from tasks.windows import midnight
from tests.support.seeding import seed, stream_of

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_the_daily_run_catches_up_the_days_whose_runs_never_happened(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    lf = langfuse_sandbox
    tag = f"daily-{uuid4().hex[:8]}"  # a stream of its own: its watermark starts empty
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=i) for i in (5, 4, 3, 2, 1)]
    traces = {
        d: seed(lf, 2, tags=(tag,), start=midnight(d) + timedelta(hours=6), name=f"{d} q{{i}}")
        for d in days
    }
    # the schedule ran on the day before the three missed ones
    evaluate_traces(tags=[tag], window_start=midnight(days[1]), window_end=midnight(days[2]))
    stream, log = stream_of(lf, [tag]), logging.getLogger("test")
    assert evaluated_days(stream, days, log) == {days[1]}
    sent = len(tlm.prompts)

    summary = daily(tags=[tag], catch_up_days=3)  # due today: yesterday, and 3 days before it

    assert summary.caught_up == [days[2], days[3]]  # days[1] was done, days[0] is too old
    assert [d.day for d in summary.days] == [days[2], days[3], days[4]]
    assert summary.ok and summary.total("uploaded") == 6
    scored = {s.trace_id for s in lf.store.all_scores()}
    assert scored == {t for d in days[1:] for t in traces[d]}  # days[0] stays unscored
    assert len(tlm.prompts) - sent == 6  # no day paid twice
    assert evaluated_days(stream, days, log) == set(days[1:])

    again = daily(tags=[tag], catch_up_days=3)  # nothing missed: only yesterday, already scored
    assert again.caught_up == [] and [d.day for d in again.days] == [days[4]]
    assert again.total("uploaded") == 0 and len(tlm.prompts) - sent == 6
