"""RAG evals, criteria and causes: one TLM call per trace, every score paid for once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from flows.cli import main
from flows.evaluate_traces import evaluate_traces
from flows.options import Criterion, EvalOptions
from sandbox.langfuse import LangfuseSandbox
from sandbox.tlm import TLMSandbox, marker
from tasks.evals import RAG_EVALS, cause_of
from tasks.report import (
    EVENT_LOW_TRUST,
    event_payload,
    lowest_table,
    md_escape,
    summary_markdown,
)
from tests.support.profiles import ON_BOTH_SERVERS

pytestmark = pytest.mark.usefixtures("prefect_harness")

DAY = datetime(2026, 11, 26, tzinfo=UTC)
W: dict[str, Any] = {"window_start": DAY, "window_end": DAY + timedelta(days=1)}
TAG = "rag-app"
S = "trust_score"
CONCISE = Criterion(name="concise", criteria="The answer is one short sentence.")
POLITE = Criterion(name="polite", criteria="The answer is polite.")
EVALS = [f"{S}_{e}" for e in RAG_EVALS]


def forced(trust: float, *evals: float) -> dict[str, float]:
    """Forced values of a RAG trace: trust, then the evals in the cause rule's order."""
    return {"trustworthiness": trust} | dict(zip(RULE_ORDER, evals, strict=False))


RULE_ORDER = ("context_sufficiency", "response_groundedness", "query_ease", "response_helpfulness")
RAG_CASES = [
    forced(0.2, 0.1),  # retrieval_gap
    forced(0.2, 0.9, 0.1),  # hallucination
    forced(0.2, 0.9, 0.9, 0.1),  # unclear_question
    forced(0.2, 0.9, 0.9, 0.9, 0.1),  # unhelpful
    forced(0.2, 0.9, 0.9, 0.9, 0.9),  # other
    forced(0.9),  # above the threshold: no cause
]
PLAIN_CASES: list[dict[str, float]] = [{"trustworthiness": 0.3}, {"trustworthiness": 0.8}]


def marks(values: dict[str, Any]) -> str:
    return "".join(marker(k, v) for k, v in values.items())


def rag_trace(lf: LangfuseSandbox, i: int, values: dict[str, Any]) -> str:
    """A trace of a RAG app: the question at the root, a retrieval step (RETRIEVER) as
    Langfuse's integrations log it, the answer."""
    question = f"What year did shop {i} open? {marks(values)}"
    t = lf.store.add_trace(
        tags=(TAG,), start_time=DAY + timedelta(hours=i), input={"args": [question], "kwargs": {}},
        output=f"Shop {i} opened in {1990 + i}.", metadata={"system_prompt": "Use the context."},
    )  # fmt: skip
    lf.store.add_observation(
        trace_id=t, type="RETRIEVER", name="search", start_time=DAY + timedelta(hours=i, seconds=1),
        input=question, output=[{"page_content": f"Shop {i} opened in {1990 + i}."}],
    )  # fmt: skip
    return t


def plain_trace(lf: LangfuseSandbox, i: int, values: dict[str, Any]) -> str:
    return lf.store.add_trace(
        tags=(TAG,), start_time=DAY + timedelta(hours=12 + i),
        input={"args": [f"Tell me a fact {i}. {marks(values)}"], "kwargs": {}},
        output=f"Fact {i}.", metadata={"system_prompt": "You are a trivia master."},
    )  # fmt: skip


def by_trace(lf: LangfuseSandbox) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for s in lf.store.all_scores():
        out.setdefault(s.trace_id or "", {})[s.name] = s.value
    return out


def written(lf: LangfuseSandbox) -> dict[str, int]:
    """Score id -> when it was last written."""
    return {s.id: s.updated_ms for s in lf.store.all_scores()}


def calls(tlm: TLMSandbox) -> tuple[int, int, int]:
    """TrustworthyRAG score calls, TLM score calls, explanation calls."""
    return tuple(len(tlm.records(e)) for e in ("tlm.rag_score", "tlm.score", "tlm.explain"))  # type: ignore[return-value]


@ON_BOTH_SERVERS
def test_rag_and_plain_traces_carry_every_score_paid_for_once(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    lf = langfuse_sandbox
    rag = [rag_trace(lf, i, c) for i, c in enumerate(RAG_CASES)]
    plain = [plain_trace(lf, i, c) for i, c in enumerate(PLAIN_CASES)]
    opts = EvalOptions(rag_evals=True, criteria=[CONCISE])
    first = evaluate_traces(tags=[TAG], options=opts, **W)
    assert first.ok and first.uploaded == 8, first.errors
    # one score call per trace: TrustworthyRAG for the traces with context, TLM for the others;
    # the low-trust RAG traces (medium preset: no logged explanation) explained one call each
    assert calls(tlm) == (6, 2, 5)
    assert (first.rag_units, first.no_context_units) == (6, 2)
    scores = by_trace(lf)
    for t, case in zip(rag, RAG_CASES, strict=True):
        got = scores[t]
        low = case["trustworthiness"] < 0.5
        want = {S, *EVALS, f"{S}_concise"} | ({f"{S}_cause"} if low else set())
        assert set(got) == want, t
        assert got[S] == case["trustworthiness"]
        for e in RAG_EVALS:
            if e in case:
                assert got[f"{S}_{e}"] == case[e]
        if low:  # the cause follows the rule over the evals as written
            evals = {e: got[f"{S}_{e}"] for e in RAG_EVALS}
            assert got[f"{S}_cause"] == cause_of(evals, 0.5)
    assert [scores[t][f"{S}_cause"] for t in rag[:5]] == [
        "retrieval_gap", "hallucination", "unclear_question", "unhelpful", "other"
    ]  # fmt: skip
    for t in plain:
        assert set(scores[t]) == {S, f"{S}_concise"}
    assert first.causes == dict.fromkeys(
        ["retrieval_gap", "hallucination", "unclear_question", "unhelpful", "other"], 1
    )
    assert event_payload(first)["cause_shares"]["hallucination"] == 0.2
    assert all(r.cause for r in first.lowest if r.trace_id in rag[:5])
    # a re-run pays nothing and writes nothing
    before, n_calls = written(lf), calls(tlm)
    again = evaluate_traces(tags=[TAG], options=opts, **W)
    assert again.ok and again.uploaded == 0 and again.already_scored == 8 and again.resent == 0
    assert calls(tlm) == n_calls and written(lf) == before
    # a second criterion: one call per trace, and only the new score is written
    opts2 = EvalOptions(rag_evals=True, criteria=[CONCISE, POLITE])
    third = evaluate_traces(tags=[TAG], options=opts2, **W)
    assert third.ok and third.uploaded == 8, third.errors
    rag_n, tlm_n, _ = calls(tlm)
    assert (rag_n, tlm_n) == (n_calls[0] + 6, n_calls[1] + 2)
    after = written(lf)
    changed = {i for i in after if before.get(i) != after[i]}
    new_names = {s.name for s in lf.store.all_scores() if s.id in changed}
    assert new_names == {f"{S}_polite"} and len(changed) == 8
    assert evaluate_traces(tags=[TAG], options=opts2, **W).uploaded == 0


def test_an_eval_answered_none_or_nan_is_counted_and_the_rest_land(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    lf = langfuse_sandbox
    a = rag_trace(lf, 0, {"trustworthiness": 0.9, "response_helpfulness": None})
    b = rag_trace(lf, 1, {"trustworthiness": 0.9, "query_ease": "nan"})
    opts = EvalOptions(rag_evals=True)
    report = evaluate_traces(tags=[TAG], options=opts, **W)
    assert report.ok and report.uploaded == 2
    scores = by_trace(lf)
    assert set(scores[a]) == {S, *EVALS} - {f"{S}_response_helpfulness"}
    assert set(scores[b]) == {S, *EVALS} - {f"{S}_query_ease"}
    assert report.failed_evals == {
        f"{S}_response_helpfulness": {"none": 1}, f"{S}_query_ease": {"nan": 1}
    }  # fmt: skip
    n = calls(tlm)
    again = evaluate_traces(tags=[TAG], options=opts, **W)
    assert again.uploaded == 0 and calls(tlm) == n  # a failed eval is not paid for again


def test_a_criterion_on_plain_tlm_is_sent_as_custom_eval_criteria(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    lf = langfuse_sandbox
    t = plain_trace(lf, 0, {"concise": 0.25})
    report = evaluate_traces(tags=[TAG], options=EvalOptions(criteria=[CONCISE]), **W)
    assert report.ok and calls(tlm) == (0, 1, 0)
    assert tlm.records("tlm.score")[0].criteria == ("concise",)
    assert by_trace(lf)[t][f"{S}_concise"] == 0.25


@pytest.mark.parametrize(
    ("flag", "needle"),
    [
        ("=be short", "needs a name"),
        ("has space=be short", "is not a slug"),
        ("a_criterion_name_too_long=x", "over Langfuse's 35"),
        ("cause=x", "is reserved"),
        ("query_ease=x", "is reserved"),
        ("long=" + "x" * 2001, "over 2000"),
    ],
)
def test_a_bad_criterion_is_one_line_before_any_call(
    langfuse_sandbox: LangfuseSandbox,
    tlm: TLMSandbox,
    capsys: pytest.CaptureFixture[str],
    flag: str,
    needle: str,
) -> None:
    argv = ["window", "--since", "24h", "--tag", TAG, "--rag-evals", "--criteria", flag]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and err.count("\n") == 1, err
    assert langfuse_sandbox.faults.requests == [] and tlm.records() == []


def test_a_duplicate_criterion_is_one_line_before_any_call(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["window", "--since", "24h", "--tag", TAG, "--criteria", "a=x", "--criteria", "a=y"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "'a' is given twice" in err and err.count("\n") == 1
    assert langfuse_sandbox.faults.requests == [] and tlm.records() == []


def test_the_low_trust_event_carries_each_cause_share_and_the_top_cause(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    from tests.flow.test_review import _events

    lf = langfuse_sandbox
    for i, case in enumerate([forced(0.2, 0.1), forced(0.2, 0.1), forced(0.2, 0.9, 0.1)]):
        rag_trace(lf, i, case)
    opts = EvalOptions(rag_evals=True, alert_low_trust_share=0.1)
    report = evaluate_traces(tags=[TAG], options=opts, **W)
    assert report.causes == {"retrieval_gap": 2, "hallucination": 1}
    alert = {e["event"]: e for e in _events(report.flow_run_id, expect=2)}[EVENT_LOW_TRUST]
    assert alert["resource"]["trust-eval.top-cause"] == "retrieval_gap"
    assert alert["payload"]["cause_shares"] == {"hallucination": 0.3333, "retrieval_gap": 0.6667}
    assert "## Causes of low trust" in summary_markdown(report)
    causes = {row["cause"] for row in lowest_table(report.lowest)}
    assert causes == {md_escape("retrieval_gap"), md_escape("hallucination")}


def test_a_dry_run_estimates_what_rag_calls_and_criteria_send(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    lf = langfuse_sandbox
    rag_trace(lf, 0, {})
    plain_trace(lf, 0, {})
    trust_only = evaluate_traces(tags=[TAG], options=EvalOptions(dry_run=True), **W)
    rag = EvalOptions(dry_run=True, rag_evals=True, criteria=[CONCISE])
    with_evals = evaluate_traces(tags=[TAG], options=rag, **W)
    assert tlm.records() == [] and lf.store.all_scores() == []
    assert (with_evals.rag_units, with_evals.no_context_units) == (1, 1)
    assert with_evals.would_score == trust_only.would_score == 2
    # the RAG call also sends the context, the question and the evals' criteria (~2,500
    # characters); the plain call the criterion's name and text
    extra = with_evals.would_score_chars - trust_only.would_score_chars
    assert extra > 2000 + 2 * len(CONCISE.criteria)
    assert with_evals.estimated_tokens > trust_only.estimated_tokens
