"""Closing the loop: score configs, labels, the review queue, run events, observation scope, RAG."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from flows.evaluate_traces import evaluate_traces
from flows.options import EvalOptions
from sandbox.langfuse import LangfuseSandbox
from sandbox.tlm import TLMSandbox, synthetic_score
from tasks.models import score_id
from tasks.report import EVENT_EVALUATED, EVENT_LOW_TRUST
from tests.support.profiles import ON_BOTH_SERVERS
from tests.support.seeding import seed, stream_of

pytestmark = pytest.mark.usefixtures("prefect_harness")

DAY = datetime(2026, 11, 27, tzinfo=UTC)
W: dict[str, Any] = {"window_start": DAY, "window_end": DAY + timedelta(days=1)}
TAG = "review-loop"


def seed_questions(lf: LangfuseSandbox, n: int) -> list[str]:
    """``n`` traces of the review loop's tag, 10 minutes apart, without a system prompt."""
    step, question = timedelta(minutes=10), "Question number {i}?"
    return seed(lf, n, tags=(TAG,), start=DAY, step=step, question=question, metadata=None)


def expected_score(i: int) -> float:
    return synthetic_score(f"Question number {i}?", f"Answer {i}.")


def test_score_config_made_once_and_scores_attached(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    lf = langfuse_sandbox
    seed_questions(lf, 4)
    evaluate_traces(tags=[TAG], options=EvalOptions(label_score=True), **W)
    evaluate_traces(tags=[TAG], options=EvalOptions(label_score=True, rescore=True), **W)

    configs = {c.name: c for c in lf.store.score_configs()}
    assert set(configs) == {"trust_score", "trust_score_label"}  # made once, not per run
    numeric, label = configs["trust_score"], configs["trust_score_label"]
    assert (numeric.data_type, numeric.min_value, numeric.max_value) == ("NUMERIC", 0, 1)
    assert numeric.description
    assert [c["label"] for c in label.categories or []] == [
        "untrustworthy",
        "review",
        "trustworthy",
    ]
    scores = lf.store.all_scores()
    trust = [s for s in scores if s.name == "trust_score"]
    labels = [s for s in scores if s.name == "trust_score_label"]
    assert len(trust) == len(labels) == 4  # upserted on the rescore, not duplicated
    assert {s.config_id for s in trust} == {numeric.id}
    assert {s.config_id for s in labels} == {label.id}
    by_trace = {s.trace_id: s.value for s in trust}
    for s in labels:
        v = by_trace[s.trace_id]
        assert isinstance(v, float)
        want = "untrustworthy" if v < 0.3 else "review" if v < 0.5 else "trustworthy"
        assert s.value == want


def test_review_queue_gets_low_trust_traces_once(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    lf = langfuse_sandbox
    ids = seed_questions(lf, 30)
    low = {t for i, t in enumerate(ids) if expected_score(i) < 0.5}
    assert 0 < len(low) < 30  # the synthetic scores spread both sides of the threshold

    first = evaluate_traces(tags=[TAG], options=EvalOptions(review_queue="Low trust"), **W)
    (queue,) = lf.store.annotation_queues()
    assert queue.name == "Low trust"
    items = lf.store.queue_items(queue.id)
    assert {i.object_id for i in items} == low and len(items) == len(low)
    assert {i.object_type for i in items} == {"TRACE"}
    assert first.queued_for_review == len(low)

    second = evaluate_traces(
        tags=[TAG], options=EvalOptions(review_queue="Low trust"), **W
    )  # a re-run
    third = evaluate_traces(
        tags=[TAG], options=EvalOptions(review_queue="Low trust", rescore=True), **W
    )
    assert len(lf.store.annotation_queues()) == 1
    assert len(lf.store.queue_items(queue.id)) == len(low)  # no second item, ever
    assert second.queued_for_review == third.queued_for_review == 0
    assert second.already_in_review == len(low)


@ON_BOTH_SERVERS
def test_a_review_queue_without_score_configs_gets_the_trust_scores_config(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    """Langfuse creates a queue only with at least one existing score config; a run that
    attaches its scores to none creates the numeric trust config for the queue all the same,
    and its scores stay without a configId. An existing queue is used as it is."""
    lf = langfuse_sandbox
    ids = seed_questions(lf, 20)
    low = {t for i, t in enumerate(ids) if expected_score(i) < 0.5}
    opts = EvalOptions(
        score_config=False, label_score=False, review_queue="Low trust", review_score=None
    )
    report = evaluate_traces(tags=[TAG], options=opts, **W)

    assert report.ok and report.queued_for_review == len(low) > 0
    (config,) = lf.store.score_configs()
    assert (config.name, config.data_type, config.min_value, config.max_value) == (
        "trust_score", "NUMERIC", 0, 1,
    )  # fmt: skip
    (queue,) = lf.store.annotation_queues()
    assert queue.score_config_ids == [config.id]
    assert {i.object_id for i in lf.store.queue_items(queue.id)} == low
    assert {s.config_id for s in lf.store.all_scores()} == {None}
    creates = [r for r in lf.faults.requests if r.endpoint == "annotation_queues.create"]
    assert [r.status for r in creates] == [200]  # never refused for want of a config

    # a queue someone made with their own config is used as it is: nothing else created
    own = lf.store.add_score_config(name="human_check", data_type="BOOLEAN")
    theirs = lf.store.create_annotation_queue(name="Theirs", score_config_ids=[own.id])
    seed(lf, 10, tags=("other",), start=DAY, question="Other {i}?", metadata=None)
    opts = EvalOptions(score_config=False, review_queue="Theirs", score_name="s2")
    again = evaluate_traces(tags=["other"], options=opts, **W)
    assert again.ok and again.queued_for_review == len(lf.store.queue_items(theirs.id)) > 0
    # (the review score's config is the run's own, made in its config step)
    assert {c.name for c in lf.store.score_configs()} == {
        "trust_score", "human_check", "trust_verdict"
    }  # fmt: skip
    assert lf.store.annotation_queues()[-1].score_config_ids == [own.id]


def test_review_lowest_n(langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox) -> None:
    lf = langfuse_sandbox
    ids = seed_questions(lf, 30)
    ranked = sorted((expected_score(i), t) for i, t in enumerate(ids))
    evaluate_traces(tags=[TAG], options=EvalOptions(review_queue="worst", review_lowest_n=3), **W)
    (queue,) = lf.store.annotation_queues()
    assert {i.object_id for i in lf.store.queue_items(queue.id)} == {t for _, t in ranked[:3]}


def _events(flow_run_id: str | None, expect: int) -> list[Any]:
    """The run's events as the Prefect server stored them (they arrive within seconds)."""
    from prefect.client.orchestration import get_client

    ours = f"prefect.flow-run.{flow_run_id}"

    async def read() -> list[Any]:
        async with get_client() as client:
            resp = await client._client.post(
                "/events/filter",
                json={"filter": {"event": {"prefix": ["trust-eval."]}}, "limit": 50},
            )
            resp.raise_for_status()
            return [
                e for e in resp.json()["events"]
                if any(r["prefect.resource.id"] == ours for r in e["related"])
            ]  # fmt: skip

    deadline = time.monotonic() + 20
    while True:
        found = asyncio.run(read())
        if len(found) >= expect or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


def test_run_events_carry_the_figures(langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox) -> None:
    lf = langfuse_sandbox
    ids = seed_questions(lf, 20)
    lf.store.add_trace(tags=(TAG,), start_time=DAY + timedelta(hours=20), input=None, output="x")
    n_low = sum(expected_score(i) < 0.5 for i in range(20))
    start = DAY + timedelta(hours=0, minutes=0)
    report = evaluate_traces(
        window_start=start,
        window_end=start + timedelta(days=1),
        tags=[TAG],
        options=EvalOptions(alert_low_trust_share=0.01),
    )
    assert report.uploaded == len(ids)
    by_name = {e["event"]: e for e in _events(report.flow_run_id, expect=2)}
    assert set(by_name) == {EVENT_EVALUATED, EVENT_LOW_TRUST}
    resource = by_name[EVENT_EVALUATED]["resource"]
    key = stream_of(langfuse_sandbox, [TAG]).key
    assert resource["prefect.resource.id"] == f"trust-eval.window.{key}.20261127T0000-20261128T0000"
    assert resource["trust-eval.tags"] == TAG
    payload = by_name[EVENT_EVALUATED]["payload"]
    assert payload["fetched"] == 21 and payload["uploaded"] == payload["scored"] == 20
    assert payload["skipped"] == 1 and payload["failures"] == 0
    assert payload["low_trust_count"] == n_low
    assert payload["low_trust_share"] == round(n_low / 20, 4)
    assert by_name[EVENT_LOW_TRUST]["payload"]["alert_low_trust_share"] == 0.01

    quiet = evaluate_traces(
        tags=[TAG], options=EvalOptions(alert_low_trust_share=1.0, rescore=True), **W
    )
    _events(quiet.flow_run_id, expect=1)
    time.sleep(3)  # an alert, had there been one, would be stored by now
    names = [e["event"] for e in _events(quiet.flow_run_id, expect=1)]
    assert names == [EVENT_EVALUATED]  # under the alert share: no alert


@ON_BOTH_SERVERS
def test_generation_scope_scores_land_on_the_observations(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    lf = langfuse_sandbox
    trace = lf.store.add_trace(
        tags=(TAG,),
        start_time=DAY + timedelta(hours=1),
        input={"args": ["plan a trip"], "kwargs": {}},
        output="Done.",
    )
    gens = [
        lf.store.add_observation(
            trace_id=trace, type="GENERATION", name=f"step{i}",
            start_time=DAY + timedelta(hours=1, seconds=i + 1),
            input=[{"role": "system", "content": "Agent."},
                   {"role": "user", "content": f"step {i}"}],
            output={"role": "assistant", "content": f"result {i}"},
        )
        for i in range(3)
    ]  # fmt: skip
    lone = lf.store.add_trace(
        tags=(TAG,), start_time=DAY + timedelta(hours=2), input="q", output="a"
    )
    report = evaluate_traces(
        tags=[TAG], options=EvalOptions(scope="generation", score_config=False), **W
    )
    assert report.uploaded == 3 and report.skipped == {"no_generation": [lone]}
    scores = lf.store.all_scores()
    assert {s.observation_id for s in scores} == set(gens)
    assert {s.trace_id for s in scores} == {trace}
    assert {s.id for s in scores} == {score_id(trace, "trust_score", g) for g in gens}
    assert {c["prompt"] for c in tlm.calls} == {
        f"System: Agent.\n\nUser: step {i}\n\nAssistant:" for i in range(3)
    }
    again = evaluate_traces(
        tags=[TAG], options=EvalOptions(scope="generation", score_config=False), **W
    )
    assert again.already_scored == 3 and again.uploaded == 0 and len(lf.store.all_scores()) == 3


def test_rag_context_is_part_of_the_prompt(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    lf = langfuse_sandbox
    t1 = lf.store.add_trace(
        tags=(TAG,),
        start_time=DAY + timedelta(hours=3),
        input={"args": ["When did the shop open?"], "kwargs": {}},
        output="It opened in 1999.",
        metadata={"system_prompt": "Answer from the context."},
    )
    lf.store.add_observation(
        trace_id=t1, type="RETRIEVER", name="search",
        start_time=DAY + timedelta(hours=3, seconds=1),
        input="shop opening", output=[{"page_content": "The shop opened in 1999."},
                                      {"page_content": "It moved in 2010."}],
    )  # fmt: skip
    lf.store.add_trace(
        tags=(TAG,),
        start_time=DAY + timedelta(hours=4),
        input="Who won?",
        output="Team A.",
        metadata={"context": "Team A won 3-1."},
    )
    evaluate_traces(tags=[TAG], options=EvalOptions(score_config=False), **W)
    assert sorted(tlm.prompts) == sorted([
        "System: Answer from the context.\n\nContext:\nThe shop opened in 1999.\n\n"
        "It moved in 2010.\n\nUser: When did the shop open?\n\nAssistant:",
        "Context:\nTeam A won 3-1.\n\nWho won?",
    ])  # fmt: skip
