"""The backfill flow and the per-window lock, on real Prefect, against the sandboxes over HTTP."""

from __future__ import annotations

import threading
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from prefect import get_client
from prefect.client.schemas.actions import VariableCreate
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
)
from prefect.exceptions import ParameterTypeError

from flows.backfill import BackfillFailed, backfill
from flows.backfill_summary import summary_markdown
from flows.evaluate_traces import evaluate_traces
from flows.window_lock import lock_names
from sandbox.faults import Fault
from sandbox.langfuse import LangfuseSandbox
from sandbox.tlm import TLMSandbox
from tasks.errors import ConfigError
from tasks.windows import midnight
from tests.support.profiles import ON_BOTH_SERVERS
from tests.support.seeding import TAG, seed, stream_of, with_options

pytestmark = pytest.mark.usefixtures("prefect_harness")

FIRST = date(2026, 10, 1)


def seed_days(
    lf: LangfuseSandbox, first: date, days: int, per_day: int, marker: str = ""
) -> dict[date, list[str]]:
    """``per_day`` tagged traces spread over each day, including one right at 00:00."""
    out: dict[date, list[str]] = {}
    step = timedelta(hours=23) / max(per_day - 1, 1)
    for d in range(days):
        day = first + timedelta(days=d)
        question = f"{marker}Question {{i}} of {day}?"
        name = f"{day} q{{i}}"
        out[day] = seed(lf, per_day, start=midnight(day), step=step, name=name, question=question)
    return out


def scored_ids(lf: LangfuseSandbox) -> list[str]:
    return sorted(s.trace_id or "" for s in lf.store.all_scores())


def children(parent_id: str) -> list[Any]:
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[UUID(parent_id)])
            )
        )


@ON_BOTH_SERVERS
def test_three_days_scored_once_then_rerun_adds_nothing(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    lf = langfuse_sandbox
    by_day = seed_days(lf, FIRST - timedelta(days=1), 5, 4)  # a day either side: out
    inside = [
        t for d, ids in by_day.items() if FIRST <= d <= FIRST + timedelta(days=2) for t in ids
    ]

    summary = backfill(FIRST, FIRST + timedelta(days=2), tags=[TAG], max_concurrency=3)

    assert summary.ok and not summary.failed_days
    assert [d.day for d in summary.days] == [FIRST + timedelta(days=i) for i in range(3)]
    assert scored_ids(lf) == sorted(inside)  # each of those days' traces, once; no others
    assert summary.total("uploaded") == summary.total("fetched") == 12
    assert len(tlm.prompts) == 12
    kids = children(summary.flow_run_id or "")
    assert (
        len(kids) == 3 and {k.flow_id for k in kids} and all(k.state.is_completed() for k in kids)
    )

    again = backfill(FIRST, FIRST + timedelta(days=2), tags=[TAG])
    assert again.ok and again.total("uploaded") == 0 and again.total("already_scored") == 12
    assert scored_ids(lf) == sorted(inside) and len(tlm.prompts) == 12
    md = summary_markdown(again)
    assert "| **total** | 3 ran, 0 failed | 12 | 0 | 12 |" in md


def test_days_run_concurrently_bounded_and_show_as_children(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    """TLM holds every call until two are in flight (it would hold one alone until the item
    times out, failing its day): every day scoring proves they ran two at a time, and the
    highest number in flight is the bound, never more."""
    seed_days(langfuse_sandbox, FIRST, 4, 1)  # one TLM call per day
    tlm.faults.set("tlm.score", Fault(hang=True))
    peak, done = [0], threading.Event()

    def gate() -> None:
        while not done.is_set():
            n = tlm._rec.in_flight
            peak[0] = max(peak[0], n)
            if n >= 2:
                time.sleep(0.3)  # a third call, if one were running, would show up now
                peak[0] = max(peak[0], tlm._rec.in_flight)
                tlm.faults.release_hangs()
            time.sleep(0.01)

    watcher = threading.Thread(target=gate, daemon=True)
    watcher.start()
    try:
        summary = backfill(FIRST, FIRST + timedelta(days=3), tags=[TAG], max_concurrency=2)
    finally:
        done.set()
        tlm.faults.release_hangs()
    assert summary.ok and summary.total("uploaded") == 4
    assert peak[0] == 2  # really concurrent, and never more than max_concurrency
    kids = children(summary.flow_run_id or "")
    assert len(kids) == 4
    assert all(k.parent_task_run_id is not None for k in kids)  # nested under the backfill run
    with get_client(sync_client=True) as client:  # the session's server holds many artifacts
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(
                    any_=[stream_of(langfuse_sandbox).artifact_key("trust-backfill-summary")]
                )
            ),
            limit=200,
        )
    summaries = [a for a in arts if str(a.flow_run_id) == summary.flow_run_id]
    assert len(summaries) == 1
    assert "| ok | 1 | 1 | 0 | 0 | 0 |" in str(summaries[0].data)
    assert "2026-10-04" in str(summaries[0].data)


def test_a_failed_day_is_reported_and_the_others_still_run(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    lf = langfuse_sandbox
    seed_days(lf, FIRST, 1, 3)
    bad = seed_days(lf, FIRST + timedelta(days=1), 1, 3, marker="BADDAY ")
    seed_days(lf, FIRST + timedelta(days=2), 1, 3)
    tlm.fail_status = 422  # a fast, non-retried per-item failure
    tlm.faults.set("tlm.score", Fault(fail_items={"BADDAY"}))

    with pytest.raises(BackfillFailed, match="1 of 3 day") as exc:
        backfill(FIRST, FIRST + timedelta(days=2), tags=[TAG])

    summary = exc.value.summary
    statuses = {d.day: d.status for d in summary.days}
    assert statuses == {
        FIRST: "ok",
        FIRST + timedelta(days=1): "failed",
        FIRST + timedelta(days=2): "ok",
    }
    failed = summary.failed_days[0]
    assert failed.report is not None  # the partial report of the failed window run
    assert failed.report.fetched == 3 and failed.failed_traces == 3
    assert failed.error and "TLM scored none" in failed.error
    assert len(lf.store.all_scores()) == 6
    assert not set(scored_ids(lf)) & set(bad[FIRST + timedelta(days=1)])
    md = summary_markdown(summary)
    assert "FAILED (1 of 3 days)" in md and "## Failed days" in md


def test_backfill_refuses_bad_configuration(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="end_date"):
        backfill(FIRST, FIRST - timedelta(days=1), tags=[TAG])
    with pytest.raises(ConfigError, match="not over yet"):
        backfill(FIRST, datetime.now(UTC).date(), tags=[TAG])
    with pytest.raises(ParameterTypeError, match="max_concurrency"):  # refused by its bounds
        backfill(FIRST, FIRST, tags=[TAG], max_concurrency=0)
    with pytest.raises(ConfigError, match="tags"):
        backfill(FIRST, FIRST, tags=[])
    monkeypatch.delenv("CLEANLAB_TLM_API_KEY")
    with pytest.raises(ConfigError, match="CLEANLAB_TLM_API_KEY"):
        backfill(FIRST, FIRST, tags=[TAG])
    assert langfuse_sandbox.faults.requests == [] and tlm.prompts == []


# --------------------------------------------------------------------------- the window lock


def test_two_runs_of_one_window_do_not_race(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    """Both runs start together; the second waits for the first, then finds all scored."""
    ids = seed_days(langfuse_sandbox, FIRST, 1, 5)[FIRST]
    tlm.faults.set("tlm.score", Fault(latency=0.5))
    window: dict[str, Any] = {
        "window_start": midnight(FIRST),
        "window_end": midnight(FIRST) + timedelta(days=1),
        "tags": [TAG],
    }
    reports: list[Any] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        reports.append(evaluate_traces(**with_options(window)))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    assert sorted((r.uploaded, r.already_scored) for r in reports) == [(0, 5), (5, 0)]
    assert len(tlm.prompts) == 5  # TLM paid once, not twice
    assert scored_ids(langfuse_sandbox) == sorted(ids)
    (name,) = lock_names(stream_of(langfuse_sandbox), window["window_start"], window["window_end"])
    with get_client(sync_client=True) as client:
        assert client.read_variable_by_name(name) is None  # released


def test_a_lock_left_by_a_dead_run_is_taken_over(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A holder on record that never beats again (it died without releasing): the next run of
    the window takes the lock over after one lease of silence instead of waiting forever."""
    monkeypatch.setenv("TRUST_EVAL_LOCK_LEASE_S", "1")
    ids = seed_days(langfuse_sandbox, FIRST, 1, 2)[FIRST]
    s, e = midnight(FIRST), midnight(FIRST) + timedelta(days=1)
    (name,) = lock_names(stream_of(langfuse_sandbox), s, e)
    dead = {"flow_run_id": str(uuid4()), "lease_s": 1.0, "host": "elsewhere", "beat": 7}
    with get_client(sync_client=True) as client:
        client.create_variable(VariableCreate(name=name, value=dead))

    began = time.monotonic()
    report = evaluate_traces(window_start=s, window_end=e, tags=[TAG])
    assert report.uploaded == 2 and scored_ids(langfuse_sandbox) == sorted(ids)
    assert time.monotonic() - began >= 1  # it waited one lease of silence
    with get_client(sync_client=True) as client:
        assert client.read_variable_by_name(name) is None
