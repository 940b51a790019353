"""The fault matrix, TLM rows: each fault knob of the TLM sandbox against the whole flow, on
real Prefect, checked as the Langfuse rows are (tests/flow/test_faults_langfuse.py).
"""

from __future__ import annotations

import socket

import pytest

from sandbox.faults import Fault
from sandbox.langfuse import LangfuseSandbox
from sandbox.tlm import TLMSandbox
from tasks.models import Bucket
from tests.support.fault_matrix import (
    assert_failed_loudly,
    assert_invariants,
    assert_recovered,
    gaps_after,
    ids_in,
    run,
    seed,
)
from tests.support.profiles import ON_BOTH_SERVERS

pytestmark = pytest.mark.usefixtures("prefect_harness", "fault_tuning")


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
    assert gap >= 0.9, (
        f"waited {gap:.2f} s after a 429 with Retry-After: 1"  # the plan: tests/unit/test_retry.py
    )


def test_tlm_429_without_retry_after_waits_at_least_the_floor(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client reads a missing Retry-After as 0 and retries at once: the run's TLM calls
    pause at least TRUST_EVAL_TLM_RATE_LIMIT_WAIT_S after each such 429, doubling while they
    go on (the first item goes alone, so each 429 is followed by its own retry)."""
    monkeypatch.setenv("TRUST_EVAL_TLM_RATE_LIMIT_WAIT_S", "0.3")
    lf = langfuse_sandbox
    seeded = seed(lf, 6)
    tlm.faults.set("tlm.score", Fault(status=429, first=3))  # no retry_after: no header
    r = run()
    assert_recovered(lf, tlm, seeded, r)
    assert tlm.faults.count("tlm.score", status=429) == 3
    gaps = gaps_after(tlm.faults.requests, "tlm.score", 429)
    assert len(gaps) == 3
    assert all(gap >= 0.95 * 0.3 * 2**n for n, gap in enumerate(gaps)), gaps
    assert any("429 without Retry-After" in w for w in r.report.warnings)


@pytest.mark.parametrize("shape", ["error", "detail", "text"])
def test_tlm_401_of_another_shape_fails_after_the_first_chunk(
    langfuse_sandbox: LangfuseSandbox,
    tlm: TLMSandbox,
    monkeypatch: pytest.MonkeyPatch,
    shape: str,
) -> None:
    """A 401 not shaped as the API's own (a gateway's ``{"error"}``, ``{"detail"}``, a proxy's
    plain text) is a refused key too: one request, then the run fails naming the key."""
    monkeypatch.setenv("TRUST_EVAL_PAGE_SIZE", "5")  # 3 chunks
    tlm.auth_shape = shape
    lf = langfuse_sandbox
    seeded = seed(lf, 12)
    monkeypatch.setenv("CLEANLAB_TLM_API_KEY", "tlm-not-the-key")
    r = run()
    assert_failed_loudly(r, mentions="CLEANLAB_TLM_API_KEY")
    assert tlm.faults.count("tlm.score") == tlm.faults.count("tlm.score", status=401) == 1
    assert r.report.fetched == 12 and ids_in(r.report.failed_to_score) == set(seeded.pairs)
    assert lf.store.all_scores() == [] and lf.faults.count("scores.create") == 0
    assert_invariants(lf, tlm, seeded, r)


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
    assert set(report.failed_to_score) == {"tlm_error"}
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
    why = r.report.why(Bucket.FAILED_TO_SCORE, reason)
    assert why.startswith("tlm_error: ") and "API key" not in why
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
    """TLM holds each call for an hour: the run ending at all, with a timeout, is the bound."""
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
