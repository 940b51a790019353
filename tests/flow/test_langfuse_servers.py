"""The window flow against Langfuse as its servers really behave: v4.16's single-score POST and
arrival timestamps, read lag, silent drops of config-invalid scores, root-only tags, refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from langfuse import Langfuse

from flows.evaluate_traces import EvaluationFailed, evaluate_traces
from sandbox.langfuse import LangfuseSandbox
from sandbox.openai_app import OpenAISandbox
from sandbox.tlm import TLMSandbox
from tests.support.langfuse_api import NO_RETRY
from tests.support.seeding import TAG, WINDOW, scores_by_trace, seed

pytestmark = pytest.mark.usefixtures("prefect_harness")


def listed_ids(lf: LangfuseSandbox, client: Langfuse) -> list[str]:
    """Every score id GET v3/scores lists, page by page, through the real SDK."""
    ids: list[str] = []
    cursor = None
    while True:
        resp = client.api.scores.get_many(limit=100, cursor=cursor, request_options=NO_RETRY)
        ids += [str(s.id) for s in resp.data]
        cursor = resp.meta.cursor
        if not cursor or not resp.data:
            return ids


def trace_starts(lf: LangfuseSandbox) -> dict[str, int]:
    """Each trace's start time (ms), from its root observation."""
    return {o.trace_id: o.start_ms for o in lf.store.all_observations() if o.is_root}


def assert_each_once_at_its_trace_start(lf: LangfuseSandbox, n: int) -> None:
    starts = trace_starts(lf)
    scores = lf.store.all_scores()
    assert len(scores) == len({s.id for s in scores}) == len({s.trace_id for s in scores}) == n
    assert all(s.timestamp_ms == starts[s.trace_id or ""] for s in scores)


@pytest.mark.parametrize("langfuse_sandbox", ["v4.16"], indirect=True)
def test_v416_a_thousand_scored_in_one_ingestion_batch_then_the_next_day_rerun_pays_nothing(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, langfuse_client: Langfuse
) -> None:
    lf = langfuse_sandbox
    seed(lf, 1000, step=timedelta(seconds=80))
    first = evaluate_traces(tags=[TAG], **WINDOW)
    assert first.uploaded == 1000 and first.langfuse_server == "Langfuse 4.16.0"
    assert len(tlm.calls) == 1000
    # score-create events in ONE batch on POST ingestion (a 207, one result per event), never
    # a single-score POST; each score timestamped with its trace's start time, so the
    # window's time range finds them: one GET to learn that nothing was scored yet
    posts = [r for r in lf.faults.requests if r.endpoint == "ingestion"]
    assert [r.status for r in posts] == [207]
    assert lf.faults.count("scores.create") == 0 and lf.faults.count("scores.list") == 1
    # health, projects, score configs (read, create), look-up, page, child probes (2), the
    # roots just before the window (a trace of the day before is not this window's), batch
    assert first.langfuse_requests <= 10, " ".join(r.endpoint for r in lf.faults.requests)
    assert_each_once_at_its_trace_start(lf, 1000)

    lf.faults.reset_log()
    lf.advance_clock(86_400)  # the next day: a single POST would stamp "now"
    again = evaluate_traces(tags=[TAG], **WINDOW)

    assert again.already_scored == 1000 and again.uploaded == 0
    assert again.tlm_requests == 0 and len(tlm.calls) == 1000
    # the ledger and one count of the window's scores agree: no look-up, nothing written
    assert lf.faults.count("scores.list") == 0 and lf.faults.count("ingestion") == 0
    assert again.langfuse_requests <= 6, " ".join(r.endpoint for r in lf.faults.requests)
    ids = listed_ids(lf, langfuse_client)
    assert len(ids) == len(set(ids)) == 1000
    assert_each_once_at_its_trace_start(lf, 1000)


@pytest.mark.parametrize("langfuse_sandbox", ["v4.16"], indirect=True)
def test_v416_single_posts_when_asked_are_looked_up_by_id_and_paid_once(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TRUST_EVAL_SCORE_WRITE=single: one score per POST, stamped on arrival, so the look-up
    goes by our score ids."""
    monkeypatch.setenv("TRUST_EVAL_SCORE_WRITE", "single")
    lf = langfuse_sandbox
    seed(lf, 30)
    first = evaluate_traces(tags=[TAG], **WINDOW)
    assert first.uploaded == 30 and lf.faults.count("ingestion") == 0
    posts = [r for r in lf.faults.requests if r.endpoint == "scores.create"]
    assert len(posts) == 30 and all(r.status == 200 for r in posts)
    lf.faults.reset_log()
    lf.advance_clock(86_400)
    again = evaluate_traces(tags=[TAG], **WINDOW)
    assert again.already_scored == 30 and again.tlm_requests == 0 and len(tlm.calls) == 30
    assert lf.faults.count("scores.list") == 1 and lf.faults.count("scores.create") == 0
    assert len(lf.store.all_scores()) == 30


@pytest.mark.parametrize("langfuse_sandbox", ["v4.16"], indirect=True)
def test_a_server_that_hides_its_version_is_asked_before_any_tlm_call(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    lf = langfuse_sandbox
    lf.version = "unknown"
    seed(lf, 6)
    report = evaluate_traces(tags=[TAG], **WINDOW)
    assert report.uploaded == 6
    assert_each_once_at_its_trace_start(lf, 6)
    creates = [r for r in lf.faults.requests if r.endpoint == "scores.create"]
    # the probe (an empty list: refused, writes nothing) came before TLM was paid; then the
    # scores went as ingestion events, never as a list of paid scores refused
    assert [r.status for r in creates] == [400]
    assert creates[0].started < tlm.faults.requests[0].started
    assert [r.status for r in lf.faults.requests if r.endpoint == "ingestion"] == [207]


@pytest.mark.parametrize("langfuse_sandbox", ["v4.16"], indirect=True)
def test_a_list_refused_after_tlm_falls_back_to_ingestion_batches(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Told (wrongly) that the server takes lists: the paid scores still land, as events."""
    monkeypatch.setenv("TRUST_EVAL_SCORE_WRITE", "batch")
    lf = langfuse_sandbox
    seed(lf, 5)
    report = evaluate_traces(tags=[TAG], **WINDOW)
    assert report.uploaded == 5
    assert_each_once_at_its_trace_start(lf, 5)
    assert [r.status for r in lf.faults.requests if r.endpoint == "scores.create"] == [400]
    assert [r.status for r in lf.faults.requests if r.endpoint == "ingestion"] == [207]


def test_a_run_within_the_read_lag_pays_nothing_for_what_the_last_run_scored(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    lf = langfuse_sandbox
    lf.set_score_read_lag(600)  # scores show to readers 10 minutes after they were written
    seed(lf, 40)
    first = evaluate_traces(tags=[TAG], **WINDOW)
    assert first.uploaded == 40 and len(tlm.calls) == 40

    second = evaluate_traces(tags=[TAG], **WINDOW)  # e.g. a backfill queued on the window lock

    assert second.tlm_requests == 0 and len(tlm.calls) == 40
    assert second.already_scored == second.already_pending == 40
    assert len(lf.store.all_scores()) == 40
    # after the lag Langfuse shows them: counted as scored, not pending
    lf.advance_clock(601)
    third = evaluate_traces(tags=[TAG], **WINDOW)
    assert third.already_scored == 40 and third.already_pending == 0 and len(tlm.calls) == 40


def test_scores_dropped_for_a_bad_config_are_not_confirmed_and_resent(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRUST_EVAL_VERIFY_WAIT_S", "1")
    lf = langfuse_sandbox
    # someone narrowed the score config: values above 0.5 are dropped after the HTTP answer
    config = lf.store.add_score_config(name="trust_score", min_value=0.0, max_value=0.5)
    ids = seed(lf, 20)
    first = evaluate_traces(tags=[TAG], **WINDOW)

    dropped = {d.score.trace_id for d in lf.dropped_scores}
    assert dropped and len(dropped) < 20  # the sandbox TLM's scores straddle 0.5
    assert first.uploaded == 20  # accepted: Langfuse said OK to all of them...
    assert first.confirmed == 20 - len(dropped)  # ...but only these were read back
    assert set(first.not_confirmed) == dropped
    assert set(scores_by_trace(lf)) == set(ids) - dropped

    lf.store.update_score_config(config.id, {"maxValue": 1.0})
    paid = len(tlm.calls)
    second = evaluate_traces(tags=[TAG], **WINDOW)

    assert second.resent == len(dropped) and len(tlm.calls) == paid  # no TLM paid again
    assert second.confirmed == len(dropped) and not second.not_confirmed
    assert set(scores_by_trace(lf)) == set(ids)
    assert all(len(v) == 1 for v in scores_by_trace(lf).values())


def test_an_app_that_tags_only_its_root_span_is_scored_from_its_generations(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, openai_sandbox: OpenAISandbox
) -> None:
    from sandbox.trivia_app import SEED_QUESTIONS, trace_answers

    lf = langfuse_sandbox
    start = datetime.now(UTC) - timedelta(seconds=1)
    answers = trace_answers(
        SEED_QUESTIONS, system_prompt="Answer like a pirate.", tag_root_only=True,
        langfuse_public_key=lf.public_key,
    )  # fmt: skip
    end = datetime.now(UTC) + timedelta(milliseconds=1)
    gens = [o for o in lf.store.all_observations() if o.type == "GENERATION"]
    roots = [o for o in lf.store.all_observations() if o.is_root]
    assert len(gens) == len(SEED_QUESTIONS) and not any(g.tags for g in gens)
    assert all(TAG in r.tags for r in roots)

    report = evaluate_traces(window_start=start, window_end=end, tags=[TAG])

    assert report.uploaded == len(SEED_QUESTIONS)
    assert report.generations_by_trace_id and report.pair_sources == {"generation": 5}
    sent = {c["prompt"]: c["response"]["response"] for c in tlm.calls}
    for question, answer in zip(SEED_QUESTIONS, answers, strict=True):
        assert sent[f"System: Answer like a pirate.\n\nUser: {question}\n\nAssistant:"] == answer


@pytest.mark.parametrize("langfuse_sandbox", ["v4.16"], indirect=True)
def test_v416_without_the_preview_flag_is_refused_in_one_line_before_tlm(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    lf = langfuse_sandbox
    lf.preview_opt_in = False
    seed(lf, 3)
    with pytest.raises(EvaluationFailed) as exc:
        evaluate_traces(tags=[TAG], **WINDOW)
    message = str(exc.value)
    assert "\n" not in message
    assert "LANGFUSE_MIGRATION_V4_ALLOW_PREVIEW_OPT_IN=false" in message and "v4.59" in message
    assert "Langfuse 4.16.0" in message and lf.url in message
    assert tlm.calls == [] and exc.value.report.fetched == 0
