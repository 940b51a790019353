"""The fault matrix, Langfuse rows: each fault knob of the Langfuse sandbox against the whole
flow, on real Prefect. Each row seeds a window, sets one fault, runs ``evaluate_traces`` and
checks its outcome (recovered, or failed loudly with an accurate report) and the invariants
of tests/support/fault_matrix.py. The table of rows is docs/RELIABILITY.md.
"""

from __future__ import annotations

import pytest

from sandbox.faults import Fault
from sandbox.langfuse import LangfuseSandbox
from sandbox.tlm import TLMSandbox
from tasks.models import Bucket
from tests.support.fault_matrix import (
    RETRIES,
    FailWhen,
    assert_failed_loudly,
    assert_invariants,
    assert_recovered,
    clear_after,
    gaps_after,
    ids_in,
    run,
    seed,
    wait_logged,
)
from tests.support.profiles import ON_BOTH_SERVERS

pytestmark = pytest.mark.usefixtures("prefect_harness", "fault_tuning")


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
    assert gap >= 0.9, (
        f"waited {gap:.2f} s after a 429 with Retry-After: 1"  # the plan: tests/unit/test_retry.py
    )


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
    assert_failed_loudly(r, mentions="reading traces (page 2) failed")
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
    """The sandbox holds each read for an hour: the run ending at all, with a timeout, is the
    bound (the test's own timeout is far below the hour)."""
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
        assert_failed_loudly(r, mentions="reading traces (page 1) failed")
        assert "timeout" in str(r.error).lower()
        assert r.report.fetched == 0 and lf.store.all_scores() == [] and tlm.calls == []
        assert_invariants(lf, tlm, seeded, r)


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


def writes(lf: LangfuseSandbox) -> str:
    """The endpoint that takes a chunk's scores in one request: the list POST, or on v4.16
    POST ingestion (score-create events)."""
    return "scores.create" if lf.profile == "current" else "ingestion"


@ON_BOTH_SERVERS
def test_write_429_retry_after_is_honoured(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    lf = langfuse_sandbox
    seeded = seed(lf, 6)
    lf.faults.set(writes(lf), Fault(status=429, retry_after=1, first=1))
    r = run()
    assert_recovered(lf, tlm, seeded, r)
    (gap,) = gaps_after(lf.faults.requests, writes(lf), 429)
    assert gap >= 0.9, (
        f"waited {gap:.2f} s after a 429 with Retry-After: 1"  # the plan: tests/unit/test_retry.py
    )


@ON_BOTH_SERVERS
def test_write_transient_5xx_recovers(langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox) -> None:
    lf = langfuse_sandbox
    seeded = seed(lf, 6)
    lf.faults.set(writes(lf), Fault(status=502, first=2))
    r = run()
    assert_recovered(lf, tlm, seeded, r)
    assert lf.faults.count(writes(lf), status=502) == 2


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
    lf.faults.set(writes(lf), FailWhen(status=500, when=lambda f: f.calls > 1))
    r = run()
    assert_failed_loudly(r, mentions="writing scores failed")
    report = r.report
    assert ["chunk 2" in e for e in report.errors] == [True, False]  # the first failure first
    assert "chunk 3" in report.errors[1]
    assert report.fetched == 12 and report.uploaded == 5
    assert ids_in(report.failed_to_upload) == set(seeded.order[:-5])
    assert set(report.failed_to_upload) == {"upload_error"}
    assert report.why(Bucket.FAILED_TO_UPLOAD, "upload_error").startswith("upload_error: HTTP 500")
    assert {s.trace_id for s in lf.store.all_scores()} == set(seeded.order[-5:])
    sent = (RETRIES + 1) * 2  # one request for chunk 2, one for chunk 3, each retried
    assert lf.faults.count(writes(lf), status=500) == sent
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
    lf.faults.set(writes(lf), fault)
    if mode == "transient":
        clear_after(lf.faults, writes(lf), 1)
    r = run()
    if mode == "transient":
        wait_logged(lf.faults, writes(lf), 2)  # the retry, and the held POST, handled late
        assert_recovered(lf, tlm, seeded, r)
    else:
        assert_failed_loudly(r, mentions="writing scores failed")
        assert ids_in(r.report.failed_to_upload) == set(seeded.pairs)
        sent = RETRIES + 1
        assert fault.calls == sent
        lf.faults.clear()  # release the held POSTs: they land late, as upserts
        wait_logged(lf.faults, writes(lf), sent)
        assert len(lf.store.all_scores()) == 5  # landed after all, once each
        assert_invariants(lf, tlm, seeded, r)


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
    assert set(report.failed_to_upload) == {"not confirmed after a 207"}
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
    lf.faults.set(writes(lf), Fault(lose_response=1))
    r = run()
    assert_recovered(lf, tlm, seeded, r)
    assert lf.faults.count(writes(lf), status=502) == 1  # landed, answer lost...
    assert lf.faults.count(writes(lf)) == 2  # ...sent again: an upsert
    assert len(lf.store.all_scores()) == 7
