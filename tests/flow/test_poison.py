"""Traces that once made every run of their window fail: now each is its own recorded skip or
failure, and the rest of the window is scored."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from flows.evaluate_traces import evaluate_traces
from sandbox.faults import Fault
from sandbox.langfuse import LangfuseSandbox
from sandbox.tlm import TLMSandbox
from tests.support.seeding import DAY, TAG, WINDOW, scores_by_trace, seed

pytestmark = pytest.mark.usefixtures("prefect_harness")
DEEP = "[" * 100_000 + "]" * 100_000


def test_poison_traces_are_skipped_and_the_rest_scored_once(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRUST_EVAL_PAGE_SIZE", "3")  # the poison sits on the first page
    lf = langfuse_sandbox
    good = seed(lf, 7, start=DAY)
    late = DAY + timedelta(hours=20)  # newest first: these come on page 1
    deep = seed(lf, 1, start=late, metadata={"context": DEEP, "system_prompt": "Hi."})[0]
    tool = seed(
        lf,
        1,
        start=late + timedelta(minutes=1),
        output=json.dumps(
            {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": 5}}]}
        ),
    )[0]

    report = evaluate_traces(tags=[TAG], **WINDOW)

    assert report.errors == [] and report.fetched == 9
    assert report.skipped == {"unrecognised_metadata": [deep], "unreadable_output": [tool]}
    assert set(scores_by_trace(lf)) == set(good) and report.uploaded == 7
    paid = len(tlm.calls)
    again = evaluate_traces(tags=[TAG], **WINDOW)
    assert again.tlm_requests == 0 and len(tlm.calls) == paid
    assert again.already_scored == 7 and sum(len(v) for v in again.skipped.values()) == 2


def test_a_chunk_tlm_cannot_score_does_not_stop_the_window(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRUST_EVAL_PAGE_SIZE", "2")
    lf = langfuse_sandbox
    ids = seed(lf, 8)  # newest first: Questions 7 and 6 make up chunk 1
    tlm.fail_status = 422  # not retried by the client
    tlm.faults.set("tlm.score", Fault(fail_items={"Question 7?", "Question 6?"}))

    report = evaluate_traces(tags=[TAG], **WINDOW)

    assert report.errors == [] and not report.ok  # reported, not raised
    assert {t for v in report.failed_to_score.values() for t in v} == {ids[7], ids[6]}
    assert set(scores_by_trace(lf)) == set(ids[:6]) and report.uploaded == 6


def test_tlm_down_for_several_chunks_in_a_row_stops_the_run_with_what_landed(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRUST_EVAL_PAGE_SIZE", "2")
    monkeypatch.setenv("TRUST_EVAL_TLM_DOWN_AFTER_CHUNKS", "2")
    monkeypatch.setenv("TRUST_EVAL_CHUNKS_IN_FLIGHT", "2")
    lf = langfuse_sandbox
    ids = seed(lf, 12)  # chunk 1 (Questions 11, 10) scores; chunks 2 and 3 all fail
    tlm.fail_status = 422
    tlm.faults.set("tlm.score", Fault(fail_items={f"Question {i}?" for i in range(6, 10)}))

    from flows.evaluate_traces import EvaluationFailed

    with pytest.raises(EvaluationFailed, match="TLM scored nothing in 2 chunks in a row") as exc:
        evaluate_traces(tags=[TAG], **WINDOW)
    report = exc.value.report
    # chunk 1 landed; chunk 4 was already at TLM (two chunks in flight) and still lands;
    # nothing after it was fetched
    assert set(scores_by_trace(lf)) == {ids[11], ids[10], ids[5], ids[4]}
    assert report.uploaded == 4 and report.fetched == 8
    assert report.accounted() == report.fetched  # every fetched trace in one bucket
