"""explain=low_trust and max_cost on the window flow, on real Prefect, against the Langfuse and TLM
sandboxes over HTTP: every trace scored cheaply, only the low tail explained, a budget never
passed, and nothing paid twice across runs."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.backfill import backfill
from flows.backfill_summary import BackfillSummary
from flows.cli import main
from flows.evaluate_traces import evaluate_traces
from flows.evaluated_days import complete
from flows.options import EvalOptions
from sandbox.langfuse import LangfuseSandbox
from sandbox.tlm import TLMSandbox, marker, synthetic_explanation
from tasks.explain import not_explained
from tasks.windows import midnight
from tests.support.seeding import DAY, TAG, WINDOW, scores_by_trace, seed, stream_of

pytestmark = pytest.mark.usefixtures("prefect_harness")

W = WINDOW
HIGH, LOW = marker("trustworthiness", 0.9), marker("trustworthiness", 0.1)


def summary_markdown(key: str) -> str:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), limit=1
        )
    assert found, f"no artifact {key}"
    return str(found[0].data)


def seed_tail(lf: LangfuseSandbox, high: int, low: int) -> tuple[list[str], list[str]]:
    """``high`` traces TLM trusts (0.9) and ``low`` it does not (0.1), in one day."""
    trusted = seed(lf, high, question=f"Question {{i}}? {HIGH}", step=timedelta(minutes=5))
    tail = seed(lf, low, question=f"Doubtful {{i}}? {LOW}", start=DAY + timedelta(hours=20),
                step=timedelta(minutes=1))  # fmt: skip
    return trusted, tail


def test_low_trust_explains_only_the_tail_and_a_rerun_pays_nothing(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 traces, 20% below the threshold, explain=low_trust at base: 200 scoring calls at
    base, none asking for a logged explanation; 40 explanation calls, each the comment of its
    trace's score; the review queue and the lowest-trust table get the explained tail; a
    re-run calls TLM for nothing."""
    monkeypatch.setenv("TRUST_EVAL_PAGE_SIZE", "50")
    monkeypatch.setenv("TRUST_EVAL_PRICE_PER_1K_TOKENS", "0.01")
    lf = langfuse_sandbox
    trusted, tail = seed_tail(lf, 160, 40)
    opts = EvalOptions(
        explain="low_trust",
        quality_preset="base",
        review_queue="Low trust",
        alert_low_trust_share=0.1,
    )

    report = evaluate_traces(tags=[TAG], options=opts, **W)

    scored = tlm.records("tlm.score")
    assert len(scored) == 200 and {(r.preset, r.log) for r in scored} == {("base", ())}
    explained = tlm.records("tlm.explain")
    assert len(explained) == 40
    bodies = tlm.explain_calls
    expected = {synthetic_explanation(b["prompt"], b["response"]["response"], 0.1) for b in bodies}
    landed = scores_by_trace(lf)
    assert {t: len(v) for t, v in landed.items()} == dict.fromkeys(trusted + tail, 1)
    assert {landed[t][0].comment for t in tail} == expected and len(expected) == 40
    assert {landed[t][0].comment for t in trusted} == {not_explained(0.5)}
    # the report's two stages, priced (characters / 4 x the multiplier), and explain=all's
    score_chars = sum(r.chars for r in scored)
    explain_chars = sum(r.chars for r in explained)
    s, e = report.stages["scoring"], report.stages["explaining"]
    assert (s.calls, s.tokens) == (200, round(score_chars / 4 * 1))  # base: 1
    assert (e.calls, e.tokens) == (40, round(explain_chars / 4 * 4))  # an explanation: 4
    assert s.cost == round(s.tokens / 1000 * 0.01, 6) and e.cost is not None
    every = report.explain_all
    assert every is not None and report.explain_all_preset == "medium"
    assert every.tokens == round(score_chars / 4 * 4) and every.cost is not None
    assert every.cost > s.cost + e.cost  # the point of it
    # the review queue, the lowest-trust table and the alert use the explained tail
    (queue,) = lf.store.annotation_queues()
    assert {i.object_id for i in lf.store.queue_items(queue.id)} == set(tail)
    assert report.queued_for_review == 40 and report.low_trust_count == 40
    assert report.lowest and all(r.explanation in expected for r in report.lowest)

    again = evaluate_traces(tags=[TAG], options=opts, **W)
    assert len(tlm.records("tlm.score")) == 200 and len(tlm.records("tlm.explain")) == 40
    assert again.already_scored == 200 and again.stages["explaining"].calls == 0


def test_a_budget_hit_mid_run_completes_and_the_next_run_scores_exactly_the_rest(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRUST_EVAL_PAGE_SIZE", "10")
    monkeypatch.setenv("TRUST_EVAL_PRICE_PER_1K_TOKENS", "1")
    lf = langfuse_sandbox
    ids = seed(lf, 60)
    dry = evaluate_traces(tags=[TAG], options=EvalOptions(dry_run=True), **W)
    whole = dry.stages["scoring"].cost
    assert whole is not None and whole > 0
    budget = whole * 0.4

    report = evaluate_traces(tags=[TAG], options=EvalOptions(max_cost=budget), **W)  # Completed

    over = report.skipped["over_budget"]
    assert report.ok and not report.errors and not complete(report, EvalOptions(max_cost=budget))
    assert 0 < report.uploaded < 60 and report.uploaded + len(over) == report.fetched == 60
    assert report.accounted() == 60
    cost = report.stages["scoring"].cost
    assert cost is not None and cost <= budget
    paid = {p for p in tlm.prompts}
    assert len(paid) == len(tlm.prompts) == report.uploaded
    landed = scores_by_trace(lf)
    assert set(landed) == set(ids) - set(over)  # the rest: not marked scored anywhere

    rest = evaluate_traces(tags=[TAG], **W)
    assert rest.uploaded == len(over) and rest.already_scored == 60 - len(over)
    assert len(tlm.prompts) == 60 and len(set(tlm.prompts)) == 60  # each trace paid once
    assert set(scores_by_trace(lf)) == set(ids)
    evaluate_traces(tags=[TAG], **W)
    assert len(tlm.prompts) == 60


def test_a_budget_with_explanations_reserves_them_and_is_never_passed(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRUST_EVAL_PAGE_SIZE", "10")
    monkeypatch.setenv("TRUST_EVAL_PRICE_PER_1K_TOKENS", "1")
    lf = langfuse_sandbox
    trusted, tail = seed_tail(lf, 40, 10)
    opts = EvalOptions(explain="low_trust", quality_preset="base")
    dry = evaluate_traces(tags=[TAG], options=opts.model_copy(update={"dry_run": True}), **W)
    most = (dry.stages["scoring"].cost or 0) + (dry.stages["explaining"].cost or 0)
    budget = most * 0.5
    report = evaluate_traces(tags=[TAG], options=opts.model_copy(update={"max_cost": budget}), **W)
    spent = (report.stages["scoring"].cost or 0) + (report.stages["explaining"].cost or 0)
    assert 0 < spent <= budget
    over = report.skipped["over_budget"]
    assert over and report.uploaded + len(over) == 50 and report.ok
    first_explained = len(tlm.explain_calls)

    rest = evaluate_traces(tags=[TAG], options=opts, **W)
    assert rest.uploaded == len(over)
    assert len(tlm.prompts) == 50 == len(set(tlm.prompts))
    explained_prompts = [b["prompt"] for b in tlm.explain_calls]
    assert len(explained_prompts) == len(set(explained_prompts)) == 10  # each once, in all
    assert rest.stages["explaining"].calls == 10 - first_explained
    assert set(scores_by_trace(lf)) == set(trusted + tail)


def test_a_backfills_total_is_shared_by_its_days_and_the_next_backfill_pays_only_the_rest(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three days of 12 traces, max_cost for about 1.5 days: the backfill completes, spends
    at most its total, leaves the rest over_budget; the next backfill scores exactly those."""
    monkeypatch.setenv("TRUST_EVAL_PAGE_SIZE", "5")
    monkeypatch.setenv("TRUST_EVAL_PRICE_PER_1K_TOKENS", "1")
    lf = langfuse_sandbox
    first = date(2026, 10, 1)
    ids = [
        t
        for d in range(3)
        for t in seed(lf, 12, start=midnight(first + timedelta(days=d)), question=f"D{d} Q{{i}}?")
    ]
    last = first + timedelta(days=2)

    def run(opts: EvalOptions) -> BackfillSummary:
        return backfill(start_date=first, end_date=last, tags=[TAG], options=opts)

    dry = run(EvalOptions(dry_run=True))
    whole = sum(d.report.stages["scoring"].cost or 0 for d in dry.days if d.report)
    total = whole / 2

    summary = run(EvalOptions(max_cost=total))  # no BackfillFailed

    reports = [d.report for d in summary.days if d.report is not None]
    assert len(reports) == 3 and all(d.status == "ok" for d in summary.days)
    spent = sum(r.stages["scoring"].cost or 0 for r in reports)
    assert 0 < spent <= total
    over = [t for r in reports for t in r.skipped.get("over_budget", [])]
    assert over and sum(r.uploaded for r in reports) + len(over) == 36
    assert len(tlm.prompts) == 36 - len(over)
    assert reports[-1].uploaded == 0  # the total was spent before the last day

    rest = run(EvalOptions())
    assert sum(d.report.uploaded for d in rest.days if d.report) == len(over)
    assert len(tlm.prompts) == 36 == len(set(tlm.prompts))
    assert sorted(scores_by_trace(lf)) == sorted(ids)


def test_the_dry_run_and_the_summary_show_both_stages(
    langfuse_sandbox: LangfuseSandbox,
    tlm: TLMSandbox,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TRUST_EVAL_PRICE_PER_1K_TOKENS", "2")
    seed_tail(langfuse_sandbox, 8, 2)
    args = ["window", "--start", DAY.isoformat(), "--end", (DAY + timedelta(days=1)).isoformat(),
            "--tag", TAG, "--explain", "low_trust", "--quality-preset", "low"]  # fmt: skip
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "Dry run, at most: scoring 10 calls" in out and "explaining 10 calls" in out
    assert "explain=all at medium would have cost $" in out
    assert tlm.faults.requests == []
    assert main([*args, "--max-cost", "100"]) == 0
    out = capsys.readouterr().out
    assert "TLM scoring 10 calls" in out and "explaining 2 calls" in out
    assert "Budget $100.0000." in out
    text = summary_markdown(stream_of(langfuse_sandbox).artifact_key("trust-summary"))
    assert "explaining 2 calls" in text and "explain=all at medium would have cost" in text
