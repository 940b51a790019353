"""The fault matrix's seeding, runner and invariants (tests/flow/test_faults_*.py).

:func:`assert_invariants` is what no fault may break: no duplicate score; no score for an item
TLM did not score (each is TLM's value, for a trace in no skipped or failed bucket); every
fetched trace in exactly one bucket (``report.accounted() == report.fetched``).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from flows.evaluate_traces import EvaluationFailed, evaluate_traces
from sandbox.faults import Fault, FaultState, RequestRecord
from sandbox.langfuse import LangfuseSandbox
from sandbox.tlm import TLMSandbox, synthetic_score
from tasks.report import EvalReport
from tests.support import seeding
from tests.support.seeding import DAY, SYSTEM_PROMPT, TAG, with_options

RETRIES = 3  # TRUST_EVAL_RETRIES in the matrix (the ``fault_tuning`` fixture)


@dataclass
class Seeded:
    """The traces of a row: trace id -> the exact (prompt, response) TLM must be sent."""

    pairs: dict[str, tuple[str, str]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # in seeding order (oldest first)

    @property
    def ids(self) -> list[str]:
        return list(self.order)


def seed(lf: LangfuseSandbox, n: int) -> Seeded:
    """``n`` traces spread over the day (oldest first), each with its expected TLM pair."""
    out = Seeded()
    for i, trace_id in enumerate(seeding.seed(lf, n, step=timedelta(days=1) / max(n, 1))):
        prompt = f"System: {SYSTEM_PROMPT}\n\nUser: Question {i}?\n\nAssistant:"
        out.pairs[trace_id] = (prompt, f"Answer {i}.")
        out.order.append(trace_id)
    return out


@dataclass
class Result:
    report: EvalReport
    error: EvaluationFailed | None


def run(**kwargs: Any) -> Result:
    """Run the window flow; a loud failure is returned (with its report), not raised."""
    try:
        report = evaluate_traces(
            window_start=DAY, window_end=DAY + timedelta(days=1), tags=[TAG], **with_options(kwargs)
        )
        error = None
    except EvaluationFailed as err:
        report, error = err.report, err
    return Result(report, error)


def ids_in(groups: dict[str, list[str]]) -> set[str]:
    return {t for ids in groups.values() for t in ids}


def assert_invariants(lf: LangfuseSandbox, tlm: TLMSandbox, seeded: Seeded, r: Result) -> None:
    """What no fault may break (see the module docstring)."""
    report = r.report
    scores = lf.store.all_scores()
    dupes = {k: n for k, n in Counter((s.trace_id, s.name) for s in scores).items() if n > 1}
    assert not dupes, f"duplicate scores (trace id, name) -> count: {dupes}"
    sent = {(c["prompt"], c["response"]["response"]) for c in tlm.calls}
    not_scored = ids_in(report.skipped) | ids_in(report.failed_to_score)
    for s in scores:
        assert s.trace_id in seeded.pairs, f"score {s.id} for unknown trace {s.trace_id}"
        pair = seeded.pairs[s.trace_id]
        assert pair in sent, f"trace {s.trace_id} has a score but its pair never reached TLM"
        assert s.value == synthetic_score(*pair), f"trace {s.trace_id}: not TLM's score"
        assert s.trace_id not in not_scored, (
            f"trace {s.trace_id} has a score but is reported skipped or failed to score"
        )
    assert report.accounted() == report.fetched, (
        f"{report.accounted()} outcomes for {report.fetched} fetched traces: {report.counts()}"
    )
    for groups in (report.skipped, report.failed_to_score, report.failed_to_upload):
        for ids in groups.values():
            assert len(ids) == len(set(ids)), f"a trace is reported twice: {ids}"
    buckets = [ids_in(report.skipped), ids_in(report.failed_to_score)]
    buckets.append(ids_in(report.failed_to_upload))
    for i, a in enumerate(buckets):
        for b in buckets[i + 1 :]:
            assert not a & b, f"traces in two buckets: {a & b}"


def assert_recovered(lf: LangfuseSandbox, tlm: TLMSandbox, seeded: Seeded, r: Result) -> None:
    """The fault was absorbed: every trace scored once and uploaded once, the report clean."""
    assert r.error is None, f"the run failed: {r.error}"
    report = r.report
    assert report.ok, f"report not ok: {report.counts()} {report.errors}"
    assert report.fetched == report.uploaded == len(seeded.pairs), report.counts()
    landed = {s.trace_id for s in lf.store.all_scores()}
    assert landed == set(seeded.pairs)
    assert_invariants(lf, tlm, seeded, r)


def assert_failed_loudly(r: Result, *, mentions: str) -> EvaluationFailed:
    assert r.error is not None, f"expected EvaluationFailed, the run returned {r.report.counts()}"
    assert r.error.report is r.report and r.report.errors, "EvaluationFailed without its report"
    assert not r.report.ok
    assert mentions.lower() in str(r.error).lower(), f"{mentions!r} not in {r.error}"
    return r.error


def gaps_after(records: list[RequestRecord], endpoint: str, status: int) -> list[float]:
    """Seconds from the end of each ``status`` answer of ``endpoint`` to the next request."""
    rows = sorted((r for r in records if r.endpoint == endpoint), key=lambda r: r.started)
    return [
        nxt.started - (cur.started + cur.duration)
        for cur, nxt in itertools.pairwise(rows)
        if cur.status == status
    ]


def clear_after(faults: FaultState, endpoint: str, calls: int) -> threading.Thread:
    """Remove ``endpoint``'s fault as soon as it has seen ``calls`` calls (a transient fault)."""
    fault = faults.faults[endpoint]

    def watch() -> None:
        deadline = time.monotonic() + 60
        while fault.calls < calls and time.monotonic() < deadline:
            time.sleep(0.002)
        faults.set(endpoint, None)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def wait_logged(faults: FaultState, endpoint: str, n: int, timeout_s: float = 10.0) -> None:
    """Wait until ``n`` requests of ``endpoint`` were answered (a held request ends late)."""
    deadline = time.monotonic() + timeout_s
    while faults.count(endpoint) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    assert faults.count(endpoint) >= n, f"{endpoint}: {faults.count(endpoint)} of {n} answered"


@dataclass
class FailWhen(Fault):
    """A status fault that hits every call for which ``when(fault)`` holds (e.g. an outage
    that starts once chunk 1 has landed, and never ends)."""

    when: Callable[[Fault], bool] = lambda fault: True

    def status_hit(self) -> bool:
        return self.status is not None and self.when(self)
