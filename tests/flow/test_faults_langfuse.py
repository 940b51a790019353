"""The fault matrix: every fault knob of the sandboxes against the whole flow, on real Prefect.

Each row seeds a window, sets one fault, runs ``evaluate_traces`` and checks its expected
outcome (recovered, or failed loudly with an accurate report). Every row also checks the
invariants that no fault may break (:func:`assert_invariants`):

- no duplicate score: no two stored scores share (trace id, score name);
- no score for an item that was not scored: every stored score belongs to a pair TLM
  actually scored, carries exactly the value TLM gave it, and its trace is in no skipped or
  failed-to-score bucket;
- every fetched trace is in exactly one bucket: ``report.accounted() == report.fetched``.

The table of rows is docs/RELIABILITY.md. Delays are shrunk through the environment (short
timeouts, 10 ms backoff); a row that measures a ``Retry-After`` wait sets it to 1 s.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from flows.evaluate_traces import EvaluationFailed, evaluate_traces
from sandbox.faults import Fault, FaultState, RequestRecord
from sandbox.langfuse_app import LangfuseSandbox
from sandbox.tlm_app import TLMSandbox, synthetic_score
from tasks.report import EvalReport
from tests.support.profiles import ON_BOTH_SERVERS

pytestmark = pytest.mark.usefixtures("prefect_harness")

DAY = datetime(2026, 11, 28, tzinfo=UTC)
TAG = "TLM_eval_pipeline"
SYSTEM = "You are a trivia master."
RETRIES = 3


# --------------------------------------------------------------------------- helpers


@dataclass
class Seeded:
    """The traces of a row: trace id -> the exact (prompt, response) TLM must be sent."""

    pairs: dict[str, tuple[str, str]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # in seeding order (oldest first)

    @property
    def ids(self) -> list[str]:
        return list(self.order)


def seed(lf: LangfuseSandbox, n: int, *, prefix: str = "Question") -> Seeded:
    """``n`` traces spread over the day (oldest first), each with its expected TLM pair."""
    out = Seeded()
    step = timedelta(days=1) / max(n, 1)
    for i in range(n):
        question, answer = f"{prefix} {i}?", f"Answer {i}."
        trace_id = lf.store.add_trace(
            name=f"q{i}",
            tags=(TAG,),
            start_time=DAY + i * step,
            input={"args": [question], "kwargs": {}},
            output=answer,
            metadata={"system_prompt": SYSTEM},
        )
        out.pairs[trace_id] = (f"System: {SYSTEM}\n\nUser: {question}\n\nAssistant:", answer)
        out.order.append(trace_id)
    return out


@dataclass
class Result:
    report: EvalReport
    error: EvaluationFailed | None
    elapsed_s: float


def run(**kwargs: Any) -> Result:
    """Run the window flow; a loud failure is returned (with its report), not raised."""
    t0 = time.monotonic()
    try:
        report = evaluate_traces(
            window_start=DAY, window_end=DAY + timedelta(days=1), tags=[TAG], **kwargs
        )
        error = None
    except EvaluationFailed as err:
        report, error = err.report, err
    return Result(report, error, time.monotonic() - t0)


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


@pytest.fixture(autouse=True)
def fast(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    monkeypatch.setenv("TRUST_EVAL_RETRIES", str(RETRIES))
    monkeypatch.setenv("TRUST_EVAL_RETRY_BASE_DELAY_S", "0.01")
    monkeypatch.setenv("TRUST_EVAL_RETRY_MAX_DELAY_S", "2")
    monkeypatch.setenv("LANGFUSE_TIMEOUT", "2")
    yield
    langfuse_sandbox.faults.clear()  # release held requests before the sandbox stops


# --------------------------------------------------------------------------- Langfuse reads


@ON_BOTH_SERVERS
def test_read_429_retry_after_is_honoured(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    lf = langfuse_sandbox
    seeded = seed(lf, 6)
    lf.faults.set("observations", Fault(status=429, retry_after=1, first=1))
    r = run()
    assert_recovered(lf, tlm, seeded, r)
    assert lf.faults.count("observations", status=429) == 1
    (gap,) = gaps_after(lf.faults.requests, "observations", 429)
    assert 0.9 <= gap <= 2.5, f"waited {gap:.2f} s after a 429 with Retry-After: 1"


@ON_BOTH_SERVERS
def test_read_transient_5xx_recovers(langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox) -> None:
    lf = langfuse_sandbox
    seeded = seed(lf, 6)
    lf.faults.set("observations", Fault(status=503, first=2))
    r = run()
    assert_recovered(lf, tlm, seeded, r)
    assert lf.faults.count("observations", status=503) == 2


@ON_BOTH_SERVERS
def test_read_persistent_5xx_fails_loudly_with_what_landed(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Page 1 is read and scored; page 2 never answers: the run fails, and says so, with page
    1's scores landed."""
    monkeypatch.setenv("TRUST_EVAL_PAGE_SIZE", "5")
    lf = langfuse_sandbox
    seeded = seed(lf, 12)
    # the outage starts after page 1 and the two child-observation probes were read
    lf.faults.set(
        "observations", FailWhen(status=500, when=lambda f: lf.faults.count("observations") >= 3)
    )
    r = run()
    assert_failed_loudly(r, mentions="reading traces failed on page 2")
    assert "HTTP 500" in str(r.error)
    assert lf.faults.count("observations", status=500) == RETRIES + 1
    assert r.report.fetched == 5 and r.report.uploaded == 5  # the page before the outage
    newest = set(seeded.order[-5:])
    assert {s.trace_id for s in lf.store.all_scores()} == newest
    assert_invariants(lf, tlm, seeded, r)


def test_read_persistent_5xx_of_existing_scores_fails_with_report(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    lf = langfuse_sandbox
    seeded = seed(lf, 4)
    lf.faults.set("scores.list", Fault(status=500))
    r = run()
    assert_failed_loudly(r, mentions="reading existing scores failed")
    assert lf.faults.count("scores.list", status=500) == RETRIES + 1
    assert r.report.fetched == 0 and lf.store.all_scores() == []
    assert_invariants(lf, tlm, seeded, r)


@pytest.mark.parametrize("mode", ["transient", "persistent"])
def test_read_hang_is_bounded_by_langfuse_timeout(
    langfuse_sandbox: LangfuseSandbox,
    tlm: TLMSandbox,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    monkeypatch.setenv("LANGFUSE_TIMEOUT", "0.5")
    lf = langfuse_sandbox
    seeded = seed(lf, 5)
    lf.faults.set("observations", Fault(hang=True))
    if mode == "transient":
        clear_after(lf.faults, "observations", 1)
    r = run()
    if mode == "transient":
        assert_recovered(lf, tlm, seeded, r)
    else:
        assert_failed_loudly(r, mentions="reading traces failed on page 1")
        assert "timeout" in str(r.error).lower()
        assert r.report.fetched == 0 and lf.store.all_scores() == [] and tlm.calls == []
        assert_invariants(lf, tlm, seeded, r)
    # 4 attempts of 0.5 s, plus Prefect's own overhead: never the hour the server holds them
    assert r.elapsed_s < 20, f"a hung read held the run for {r.elapsed_s:.1f} s"


@ON_BOTH_SERVERS
def test_rows_repeated_across_pages_are_counted_once(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRUST_EVAL_PAGE_SIZE", "5")
    lf = langfuse_sandbox
    seeded = seed(lf, 23)
    lf.faults.set("observations", Fault(repeat_rows=2))
    r = run()
    assert_recovered(lf, tlm, seeded, r)
    assert lf.faults.count("observations") > 5  # the repeats cost pages: they happened
    assert len(tlm.prompts) == 23  # no trace was sent to TLM twice


def test_rate_limit_across_endpoints_is_waited_out(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    """Langfuse Cloud style: a request budget per window over the general API (reads and
    writes alike), answered 429 with Retry-After when spent."""
    lf = langfuse_sandbox
    seeded = seed(lf, 6)
    lf.set_rate_limit(per_minute=3, window_s=1.0)
    r = run()
    assert_recovered(lf, tlm, seeded, r)
    limited = lf.faults.count(status=429)
    assert limited >= 1, "the budget was never spent: the row tested nothing"
    for endpoint in ("observations", "scores.list", "scores.create"):
        for gap in gaps_after(lf.faults.requests, endpoint, 429):
            assert gap >= 0.9, f"{endpoint}: retried {gap:.2f} s after a 429 (Retry-After: 1)"


# --------------------------------------------------------------------------- score writes


def posts_for(lf: LangfuseSandbox, scores: int) -> int:
    """POSTs that write ``scores`` scores of one chunk: one list, or one each on v4.16."""
    return 1 if lf.profile == "current" else scores


@ON_BOTH_SERVERS
def test_write_429_retry_after_is_honoured(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRUST_EVAL_SINGLE_POST_CONCURRENCY", "1")  # the retry is the next POST
    lf = langfuse_sandbox
    seeded = seed(lf, 6)
    lf.faults.set("scores.create", Fault(status=429, retry_after=1, first=1))
    r = run()
    assert_recovered(lf, tlm, seeded, r)
    (gap,) = gaps_after(lf.faults.requests, "scores.create", 429)
    assert 0.9 <= gap <= 2.5, f"waited {gap:.2f} s after a 429 with Retry-After: 1"


@ON_BOTH_SERVERS
def test_write_transient_5xx_recovers(langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox) -> None:
    lf = langfuse_sandbox
    seeded = seed(lf, 6)
    lf.faults.set("scores.create", Fault(status=502, first=2))
    r = run()
    assert_recovered(lf, tlm, seeded, r)
    assert lf.faults.count("scores.create", status=502) == 2


@ON_BOTH_SERVERS
def test_write_persistent_5xx_fails_loudly_with_what_landed(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunk 1 lands; every write after it fails: the run fails and names what did not land.
    Chunk 3 was already at TLM (two chunks in flight) when chunk 2's write failed: paid for,
    it is still tried, and reported."""
    monkeypatch.setenv("TRUST_EVAL_PAGE_SIZE", "5")
    monkeypatch.setenv("TRUST_EVAL_CHUNKS_IN_FLIGHT", "2")
    lf = langfuse_sandbox
    seeded = seed(lf, 12)
    chunk1 = posts_for(lf, 5)
    lf.faults.set("scores.create", FailWhen(status=500, when=lambda f: f.calls > chunk1))
    r = run()
    assert_failed_loudly(r, mentions="writing scores failed")
    report = r.report
    assert ["chunk 2" in e for e in report.errors] == [True, False]  # the first failure first
    assert "chunk 3" in report.errors[1]
    assert report.fetched == 12 and report.uploaded == 5
    assert ids_in(report.failed_to_upload) == set(seeded.order[:-5])
    assert all(k.startswith("upload_error: HTTP 500") for k in report.failed_to_upload)
    assert {s.trace_id for s in lf.store.all_scores()} == set(seeded.order[-5:])
    sent = (RETRIES + 1) * (posts_for(lf, 5) + posts_for(lf, 2))
    assert lf.faults.count("scores.create", status=500) == sent
    assert_invariants(lf, tlm, seeded, r)


@pytest.mark.parametrize("mode", ["transient", "persistent"])
@ON_BOTH_SERVERS
def test_write_hang_is_bounded_and_never_duplicates(
    langfuse_sandbox: LangfuseSandbox,
    tlm: TLMSandbox,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    """A held POST times out and is retried. In the transient row the held POST is handled
    after all (1.5 s later, after the retry landed): the scores upsert, nothing doubles."""
    monkeypatch.setenv("LANGFUSE_TIMEOUT", "0.5")
    lf = langfuse_sandbox
    seeded = seed(lf, 5)
    fault = Fault(hang=True, hang_seconds=1.5 if mode == "transient" else 3600)
    lf.faults.set("scores.create", fault)
    if mode == "transient":
        clear_after(lf.faults, "scores.create", 1)
    r = run()
    if mode == "transient":
        wait_logged(lf.faults, "scores.create", 2)  # the retry, and the held POST, handled late
        assert_recovered(lf, tlm, seeded, r)
    else:
        assert_failed_loudly(r, mentions="writing scores failed")
        assert ids_in(r.report.failed_to_upload) == set(seeded.pairs)
        sent = (RETRIES + 1) * posts_for(lf, 5)
        assert fault.calls == sent
        lf.faults.clear()  # release the held POSTs: they land late, as upserts
        wait_logged(lf.faults, "scores.create", sent)
        assert len(lf.store.all_scores()) == 5  # landed after all, once each
        assert_invariants(lf, tlm, seeded, r)
    assert r.elapsed_s < 20, f"a hung write held the run for {r.elapsed_s:.1f} s"


def test_207_refuses_only_some_traces(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRUST_EVAL_PAGE_SIZE", "8")
    lf = langfuse_sandbox
    seeded = seed(lf, 20)
    refused = {seeded.order[0], seeded.order[9], seeded.order[10], seeded.order[19]}
    lf.faults.set("scores.create", Fault(reject_trace_ids=set(refused)))
    r = run()
    assert r.error is None  # some traces refused is not a stage failure: reported, not raised
    report = r.report
    assert not report.ok
    assert ids_in(report.failed_to_upload) == refused
    assert all(k.startswith("not confirmed after a 207") for k in report.failed_to_upload)
    assert report.uploaded == 16 and report.fetched == 20
    assert {s.trace_id for s in lf.store.all_scores()} == set(seeded.pairs) - refused
    # SDK 5: a 207 batch is not re-sent; its scores are read back by id (one GET per 100)
    assert lf.faults.count("scores.create") == 3  # one POST per chunk of 8, none again
    # every chunk had a refusal: each read back once, after the window's one range look-up
    assert report.read_back == 20 and lf.faults.count("scores.list") == 1 + 3
    assert_invariants(lf, tlm, seeded, r)
    # the next run re-sends the refused scores as recorded, without paying TLM again
    lf.faults.clear()
    paid = len(tlm.calls)
    again = run()
    assert again.error is None and again.report.resent == 4 and len(tlm.calls) == paid
    assert {s.trace_id for s in lf.store.all_scores()} == set(seeded.pairs)


@ON_BOTH_SERVERS
def test_lost_answer_is_retried_without_duplicating(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    lf = langfuse_sandbox
    seeded = seed(lf, 7)
    lf.faults.set("scores.create", Fault(lose_response=1))
    r = run()
    assert_recovered(lf, tlm, seeded, r)
    assert lf.faults.count("scores.create", status=502) == 1  # landed, answer lost...
    assert lf.faults.count("scores.create") == posts_for(lf, 7) + 1  # ...sent again: an upsert
    assert len(lf.store.all_scores()) == 7


# --------------------------------------------------------------------------- TLM


def test_tlm_429_retry_after_is_honoured(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    lf = langfuse_sandbox
    seeded = seed(lf, 6)
    tlm.faults.set("tlm.score", Fault(status=429, retry_after=1, first=1))
    r = run()
    assert_recovered(lf, tlm, seeded, r)
    assert tlm.faults.count("tlm.score", status=429) == 1
    (gap,) = gaps_after(tlm.faults.requests, "tlm.score", 429)
    assert 0.9 <= gap <= 2.5, f"waited {gap:.2f} s after a 429 with Retry-After: 1"


def test_tlm_transient_5xx_recovers(langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox) -> None:
    lf = langfuse_sandbox
    seeded = seed(lf, 6)
    tlm.faults.set("tlm.score", Fault(status=503, first=1))
    r = run()
    assert_recovered(lf, tlm, seeded, r)
    assert tlm.faults.count("tlm.score", status=503) == 1
    assert r.report.tlm_requests == 6


@ON_BOTH_SERVERS
def test_tlm_per_item_errors_fail_only_those_items(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    lf = langfuse_sandbox
    seeded = seed(lf, 10)
    bad = {seeded.order[3], seeded.order[7]}
    tlm.fail_status = 422  # not retried: the retry is not the point here
    tlm.faults.set("tlm.score", Fault(fail_items={"Question 3?", "Question 7?"}))
    r = run()
    assert r.error is None  # two bad items do not fail the run...
    report = r.report
    assert not report.ok  # ...but the report says they failed
    assert ids_in(report.failed_to_score) == bad
    assert all(k.startswith("tlm_error: ") for k in report.failed_to_score)
    assert report.uploaded == 8
    assert {s.trace_id for s in lf.store.all_scores()} == set(seeded.pairs) - bad
    assert_invariants(lf, tlm, seeded, r)


def test_tlm_item_error_at_batch_index_401_is_not_a_bad_key(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    """A list call once prefixed an item's error with "Error executing query at index N", and
    index 401 read as a refused key. The engine calls TLM per item and tells a refused key by
    the client's AuthError: the item at position 401 is one failure, nothing more."""
    lf = langfuse_sandbox
    seeded = seed(lf, 403)
    # newest first, after the one-item probe: the oldest trace is index 401 of the batch
    tlm.fail_status = 422
    tlm.faults.set("tlm.score", Fault(fail_items={"Question 0?"}))
    r = run()
    assert r.error is None, f"one failed item failed the run: {r.error}"
    assert ids_in(r.report.failed_to_score) == {seeded.order[0]}
    (reason,) = r.report.failed_to_score
    assert reason.startswith("tlm_error: ") and "API key" not in reason
    assert r.report.uploaded == 402
    assert_invariants(lf, tlm, seeded, r)


def test_tlm_invalid_key_fails_fast_and_uploads_nothing(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    lf = langfuse_sandbox
    seeded = seed(lf, 12)
    monkeypatch.setenv("CLEANLAB_TLM_API_KEY", "tlm-not-the-key")
    r = run()
    assert_failed_loudly(r, mentions="CLEANLAB_TLM_API_KEY")
    assert tlm.faults.count("tlm.score") == 1  # one probe, not one request per trace
    assert r.report.fetched == 12 and ids_in(r.report.failed_to_score) == set(seeded.pairs)
    assert lf.store.all_scores() == [] and lf.faults.count("scores.create") == 0
    assert_invariants(lf, tlm, seeded, r)


def test_tlm_hang_is_bounded_by_tlm_timeout(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRUST_EVAL_TLM_TIMEOUT_S", "1")
    lf = langfuse_sandbox
    seeded = seed(lf, 6)
    tlm.faults.set("tlm.score", Fault(hang=True))
    r = run()
    assert_failed_loudly(r, mentions="TLM scored none")
    assert "timeout" in str(r.error).lower()
    assert ids_in(r.report.failed_to_score) == set(seeded.pairs)
    assert lf.store.all_scores() == [] and lf.faults.count("scores.create") == 0
    assert_invariants(lf, tlm, seeded, r)
    assert r.elapsed_s < 20, f"a hung TLM held the run for {r.elapsed_s:.1f} s"


def test_tlm_answer_without_log_fails_loudly_and_uploads_nothing(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    """Scores asked with explanations come back without ``log``: no item is usable."""
    lf = langfuse_sandbox
    seeded = seed(lf, 5)
    tlm.faults.set("tlm.score", Fault(missing_log=True))
    r = run()
    assert_failed_loudly(r, mentions="TLM scored none")
    assert ids_in(r.report.failed_to_score) == set(seeded.pairs)
    assert lf.store.all_scores() == [] and lf.faults.count("scores.create") == 0
    assert_invariants(lf, tlm, seeded, r)


@pytest.mark.parametrize("outage", ["every_call_503", "unreachable"])
def test_tlm_total_outage_fails_loudly_and_uploads_nothing(
    langfuse_sandbox: LangfuseSandbox,
    tlm: TLMSandbox,
    monkeypatch: pytest.MonkeyPatch,
    outage: str,
) -> None:
    monkeypatch.setenv("TRUST_EVAL_TLM_TIMEOUT_S", "1")
    lf = langfuse_sandbox
    seeded = seed(lf, 6)
    if outage == "every_call_503":
        tlm.faults.set("tlm.score", Fault(status=503))
    else:
        import cleanlab_tlm.internal.api.api as tlm_api

        with socket.socket() as s:  # a port nothing listens on
            s.bind(("127.0.0.1", 0))
            dead = f"http://127.0.0.1:{s.getsockname()[1]}/api/v0/trustworthy_llm"
        monkeypatch.setattr(tlm_api, "tlm_base_url", dead)
    r = run()
    assert_failed_loudly(r, mentions="TLM scored none")
    assert ids_in(r.report.failed_to_score) == set(seeded.pairs)
    assert r.report.uploaded == 0 and r.report.fetched == 6
    assert lf.store.all_scores() == [] and lf.faults.count("scores.create") == 0
    assert tlm.calls == []
    assert_invariants(lf, tlm, seeded, r)
    assert r.elapsed_s < 20
