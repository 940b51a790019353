"""The rules of RAG evals, criteria and causes (tasks/evals.py), and what the pay-once memory
does with a unit's several scores (tasks/scorebook.py)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tasks.evals import (
    CAUSES,
    EvalPlan,
    call_chars,
    cause_of,
    criteria_problem,
    rag_cause,
    read_criteria,
    read_rag,
)
from tasks.models import Bucket, Pair, Scored, score_id
from tasks.scorebook import Ledger, ScoreBook
from tasks.upload import ScoreSpec, score_bodies
from tests.support.clock import FakeClock

T0 = datetime(2026, 11, 26, 8, tzinfo=UTC)
LOW, HIGH = 0.1, 0.9


@pytest.mark.parametrize(
    ("cs", "rg", "qe", "rh", "cause"),
    [
        (LOW, LOW, LOW, LOW, "retrieval_gap"),  # the first below the threshold names it
        (HIGH, LOW, LOW, LOW, "hallucination"),
        (HIGH, HIGH, LOW, LOW, "unclear_question"),
        (HIGH, HIGH, HIGH, LOW, "unhelpful"),
        (HIGH, HIGH, HIGH, HIGH, "other"),
        (None, LOW, HIGH, HIGH, "hallucination"),  # an eval not scored is passed over
        (None, None, None, None, "other"),
        (0.5, 0.5, 0.5, 0.5, "other"),  # at the threshold is not below it
        (0.4999, HIGH, HIGH, HIGH, "retrieval_gap"),
    ],
)
def test_the_cause_is_the_first_eval_below_the_threshold_in_the_rule_order(
    cs: float | None, rg: float | None, qe: float | None, rh: float | None, cause: str
) -> None:
    evals = {
        "context_sufficiency": cs,
        "response_groundedness": rg,
        "query_ease": qe,
        "response_helpfulness": rh,
    }
    assert cause_of(evals, 0.5) == cause
    assert cause in CAUSES


def test_a_cause_only_for_a_low_trust_unit_with_rag_evals() -> None:
    plan = EvalPlan("t", rag=True, threshold=0.5)
    scores = {"t_context_sufficiency": 0.1}
    assert rag_cause(plan, 0.4, scores) == "retrieval_gap"
    assert rag_cause(plan, 0.5, scores) is None
    assert rag_cause(EvalPlan("t"), 0.1, scores) is None


@pytest.mark.parametrize(
    ("names", "texts", "needle"),
    [
        ([""], ["x"], "needs a name"),
        (["has space"], ["x"], "not a slug"),
        (["Upper"], ["x"], "not a slug"),
        (["a", "a"], ["x", "y"], "given twice"),
        (["context_sufficiency"], ["x"], "reserved"),
        (["cause"], ["x"], "reserved"),
        (["abcdefghijklmnopqrstuvwx"], ["x"], "over Langfuse's 35"),
        (["ok"], ["   "], "no criteria text"),
        (["ok"], ["x" * 2001], "over 2000"),
        ([f"c{i}" for i in range(11)], ["x"] * 11, "at most 10"),
    ],
)
def test_bad_criteria_are_named_in_one_line(
    names: list[str], texts: list[str], needle: str
) -> None:
    problem = criteria_problem("trust_score", names, texts)
    assert problem is not None and needle in problem and "\n" not in problem


def test_good_criteria_pass_at_the_limits() -> None:
    assert criteria_problem("trust_score", ["abcdefghijklmnopqrstuvw"], ["x" * 2000]) is None
    assert criteria_problem("trust_score", [], []) is None


def test_an_eval_answered_none_nan_out_of_range_or_missing_is_failed_not_written() -> None:
    plan = EvalPlan("t", rag=True, criteria=(("concise", "short"),))
    answer = {
        "trustworthiness": {"score": 0.3},
        "context_sufficiency": {"score": 0.2},
        "response_groundedness": {"score": None},
        "query_ease": {"score": math.nan},
        "response_helpfulness": {"score": 1.5},
    }
    got = read_rag(plan, answer)
    assert got.scores == {"t_context_sufficiency": 0.2}
    assert got.failed == {
        "t_response_groundedness": "none",
        "t_query_ease": "nan",
        "t_response_helpfulness": "out of range",
        "t_concise": "missing",
    }
    log = {"custom_eval_criteria": [{"name": "concise", "score": 0.7}]}
    assert read_criteria(plan, log).scores == {"t_concise": 0.7}
    assert read_criteria(plan, {}).failed == {"t_concise": "missing"}


def test_the_estimate_counts_what_a_rag_call_and_a_criterion_send() -> None:
    plain = call_chars(None, "p" * 100, "r" * 10, None)
    assert plain == 110
    criteria = EvalPlan("t", criteria=(("concise", "c" * 50),))
    assert call_chars(criteria, "p" * 100, "r" * 10, None) == 110 + 7 + 50
    rag = EvalPlan("t", rag=True)
    assert call_chars(rag, "p" * 100, "r" * 10, "x" * 40) > 110 + 2 * 40 + 1000  # + the evals
    assert call_chars(rag, "p" * 100, "r" * 10, None) == 110  # no context: plain TLM


# --------------------------------------------------------------------------- pay once, names

PLAN = EvalPlan("t", rag=True, criteria=(("concise", "short"),))


def pair(key: str, context: str | None = "ctx") -> Pair:
    return Pair(key, T0, "q", None, "p", "r", "text", context=context, query="q")


def book(tmp_path: Path, clock: FakeClock, plan: EvalPlan = PLAN) -> ScoreBook:
    ledger = Ledger(str(tmp_path), "s", retention_s=1e9, clock=clock)
    return ScoreBook(ledger, "t", read_lag_s=900, run_id="r", warn=print, clock=clock, plan=plan)


def test_a_unit_is_done_when_it_carries_every_name_its_options_ask_for(tmp_path: Path) -> None:
    b = book(tmp_path, FakeClock())
    for name in ("t", "t_concise"):
        b.saw({"rag": 0.3, "plain": 0.3}, name)
    b.saw({"rag": 0.3}, "t_query_ease")  # any eval: a RAG call landed for it
    b.saw({"lacks": 0.3}, "t")
    again, fresh, done = b.split([pair("rag"), pair("plain", None), pair("lacks")], rescore=False)
    assert again == [] and [p.key for p in fresh] == ["lacks"]
    assert {o.trace_id: o.bucket for o in done.outcomes} == {
        "rag": Bucket.ALREADY_SCORED,
        "plain": Bucket.ALREADY_SCORED,  # no context: it needs no eval
    }
    # one call, and only the names it lacks are written (its trust stays as it is)
    only = fresh[0].only
    assert only is not None and "t" not in only and {"t_concise", "t_query_ease"} <= only


def test_paid_scores_of_every_name_are_resent_from_the_ledger_without_tlm(tmp_path: Path) -> None:
    clock = FakeClock(start=10_000.0)
    first = book(tmp_path, clock)
    p = pair("u")
    item = Scored(p, 0.2, "why", extra={"t_concise": 0.4, "t_query_ease": 0.6})
    item.labels["t_cause"] = "other"
    first.record([item], set())  # Langfuse took none of them
    nxt = book(tmp_path, clock)
    nxt.load([T0.date()])
    again, fresh, _ = nxt.split([pair("u")], rescore=False)
    assert fresh == [] and len(again) == 1
    resent = again[0]
    assert (resent.score, resent.extra, resent.labels) == (
        0.2, {"t_concise": 0.4, "t_query_ease": 0.6}, {"t_cause": "other"}
    )  # fmt: skip
    spec = ScoreSpec("t", {})
    names = {b["name"] for b in score_bodies(resent, spec)}
    assert names == {"t", "t_concise", "t_query_ease", "t_cause"}


def test_the_ledger_records_each_name_and_what_langfuse_took(tmp_path: Path) -> None:
    clock = FakeClock(start=10_000.0)
    b = book(tmp_path, clock)
    item = Scored(pair("u"), 0.8, None, extra={"t_concise": 0.4})
    b.record([item], {score_id("u", "t")})  # the trust score taken, the criterion not
    assert set(b.accepted) == {"u"}
    nxt = book(tmp_path, clock)
    nxt.load([T0.date()])
    assert nxt.verdict("u").value == "pending"
    assert nxt.verdict("u", "t_concise").value == "resend"


def test_only_the_lacking_names_become_score_bodies() -> None:
    p = pair("u")
    p.only = frozenset({"t_polite"})
    item = Scored(p, 0.3, "x", extra={"t_concise": 0.5, "t_polite": 0.9})
    item.labels["t_cause"] = "other"
    assert [b["name"] for b in score_bodies(item, ScoreSpec("t", {}))] == ["t_polite"]
