"""The evaluate-traces flow on real Prefect, against the Langfuse and TLM sandboxes over HTTP."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from prefect.exceptions import ParameterTypeError

from flows.evaluate_traces import EvaluationFailed, evaluate_traces
from flows.options import EvalOptions
from sandbox.faults import Fault
from sandbox.langfuse import LangfuseSandbox
from sandbox.openai_app import OpenAISandbox
from sandbox.tlm import TLMSandbox
from tasks.errors import ConfigError
from tasks.models import score_id
from tasks.select import sampled as in_sample
from tests.support.profiles import ON_BOTH_SERVERS
from tests.support.seeding import (
    DAY,
    TAG,
    WINDOW,
    artifact_keys,
    scores_by_trace,
    seed,
    stream_of,
)

pytestmark = pytest.mark.usefixtures("prefect_harness")

W = WINDOW


@ON_BOTH_SERVERS
def test_window_and_tags_across_pages_one_score_each(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRUST_EVAL_PAGE_SIZE", "7")
    lf = langfuse_sandbox
    inside = seed(lf, 30)  # 30 traces over 3.5 hours of the day: 5 pages of 7
    edge_start = seed(lf, 1, start=DAY)[0]  # exactly at the start: in
    seed(lf, 1, start=DAY + timedelta(days=1))  # exactly at the end: out
    seed(lf, 2, start=DAY - timedelta(seconds=1), step=-timedelta(hours=1))  # before: out
    seed(lf, 3, tags=("other",))  # wrong tag: out
    both = seed(lf, 1, tags=("other", TAG), start=DAY + timedelta(hours=5))[0]  # any of: in

    report = evaluate_traces(tags=[TAG], **W)

    expected = set(inside) | {edge_start, both}
    landed = scores_by_trace(lf)
    assert set(landed) == expected
    assert all(len(v) == 1 for v in landed.values())
    assert report.fetched == report.uploaded == len(expected)
    assert report.accounted() == report.fetched
    # 32 traces, 7 a page: 5 pages, plus two probes that find no child observations (by tag,
    # then by the first page's trace ids, for apps that tag only the root span), plus one for
    # the traces of the hour before the window (a trace whose roots straddle its start)
    assert lf.faults.count("observations") == 5 + 2 + 1
    for trace_id, (score,) in landed.items():
        trace = lf.store.trace(trace_id)
        assert trace is not None
        assert score.id == score_id(trace_id, "trust_score")
        if lf.profile == "current":  # v4.16 ignores the timestamp: stamped on arrival
            assert score.timestamp == datetime.fromtimestamp(trace.start_ms / 1000, UTC)
        assert score.comment and len(score.comment) > 50  # the explanation
        assert 0.0 <= score.value <= 1.0
        assert score.metadata["tlm_quality_preset"] == "medium"
    assert len(tlm.prompts) == len(expected)


@ON_BOTH_SERVERS
def test_rerun_scores_nothing_and_writes_nothing(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    lf = langfuse_sandbox
    seed(lf, 12)
    first = evaluate_traces(tags=[TAG], **W)
    assert first.uploaded == 12
    writes = ("scores.create", "ingestion")  # the list POST, or v4.16's ingestion batches
    tlm_calls, posts = len(tlm.prompts), sum(lf.faults.count(e) for e in writes)
    assert posts > 0
    before = sorted((s.id, s.value, s.comment) for s in lf.store.all_scores())

    second = evaluate_traces(tags=[TAG], **W)

    assert second.already_scored == 12 and second.uploaded == 0
    assert second.tlm_requests == 0 and len(tlm.prompts) == tlm_calls
    assert sum(lf.faults.count(e) for e in writes) == posts
    assert sorted((s.id, s.value, s.comment) for s in lf.store.all_scores()) == before


@ON_BOTH_SERVERS
def test_rescore_upserts_instead_of_duplicating(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    lf = langfuse_sandbox
    seed(lf, 5)
    evaluate_traces(tags=[TAG], **W)
    again = evaluate_traces(tags=[TAG], options=EvalOptions(rescore=True), **W)
    assert again.uploaded == 5
    assert len(lf.store.all_scores()) == 5
    assert len(tlm.prompts) == 10


SHAPES: list[tuple[Any, Any, dict[str, Any] | None, str, str]] = [
    # (input, output, metadata, expected prompt, expected response)
    (
        {"args": ["What is the capital of France?"], "kwargs": {}},
        "The capital of France is Paris.",
        {"system_prompt": "You are a trivia master."},
        "System: You are a trivia master.\n\nUser: What is the capital of France?\n\nAssistant:",
        "The capital of France is Paris.",
    ),
    (
        [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2?"}],
        {"role": "assistant", "content": "4"},
        None,
        "System: Be terse.\n\nUser: 2+2?\n\nAssistant:",
        "4",
    ),
    (
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi there"}]}]},
        {"choices": [{"message": {"role": "assistant", "content": "Hello!"}}]},
        None,
        "Hi there",
        "Hello!",
    ),
    ("Plain question?", "Plain answer.", None, "Plain question?", "Plain answer."),
    ({"query": "Where is Lima?"}, {"output": "In Peru."}, None, "Where is Lima?", "In Peru."),
]


def test_exact_prompt_tlm_receives_for_each_shape(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    lf = langfuse_sandbox
    for i, (inp, out, meta, _, _) in enumerate(SHAPES):
        lf.store.add_trace(
            name=f"shape{i}",
            tags=(TAG,),
            start_time=DAY + timedelta(hours=i),
            input=inp,
            output=out,
            metadata=meta,
        )
    report = evaluate_traces(tags=[TAG], **W)
    assert report.uploaded == len(SHAPES)
    sent = {(c["prompt"], c["response"]["response"]) for c in tlm.calls}
    assert sent == {(p, r) for *_, p, r in SHAPES}


def test_long_system_prompt_in_metadata_is_read_in_full(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    long_prompt = "You are a careful assistant. " * 20  # ~580 characters: truncated by default
    seed(langfuse_sandbox, 1, metadata={"system_prompt": long_prompt})
    evaluate_traces(tags=[TAG], **W)
    assert tlm.prompts == [f"System: {long_prompt}\n\nUser: Question 0?\n\nAssistant:"]


@ON_BOTH_SERVERS
def test_unpairable_traces_are_recorded_skips(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    lf = langfuse_sandbox
    good = seed(lf, 2)
    lf.store.add_trace(tags=(TAG,), start_time=DAY + timedelta(hours=9), input=None, output="x")
    lf.store.add_trace(tags=(TAG,), start_time=DAY + timedelta(hours=10), input="Q", output=None)
    lf.store.add_trace(tags=(TAG,), start_time=DAY + timedelta(hours=11), input=7, output="x")
    report = evaluate_traces(tags=[TAG], **W)
    assert report.uploaded == 2 and set(scores_by_trace(lf)) == set(good)
    assert {k: len(v) for k, v in report.skipped.items()} == {
        "missing_input": 1,
        "missing_output": 1,
        "unsupported_input": 1,
    }
    assert report.accounted() == report.fetched == 5
    assert len(tlm.prompts) == 2


@ON_BOTH_SERVERS
def test_dry_run_scores_nothing(langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox) -> None:
    seed(langfuse_sandbox, 9)
    report = evaluate_traces(tags=[TAG], options=EvalOptions(dry_run=True), **W)
    assert report.would_score == 9 and report.uploaded == 0 and report.tlm_requests == 0
    assert tlm.prompts == [] and langfuse_sandbox.store.all_scores() == []
    assert langfuse_sandbox.faults.count("scores.create") == 0
    assert langfuse_sandbox.faults.count("ingestion") == 0
    # a dry run's artifacts have keys of their own: the stream's real summary stays the real one
    stream = stream_of(langfuse_sandbox)
    real = evaluate_traces(tags=[TAG], **W)
    again = evaluate_traces(tags=[TAG], options=EvalOptions(dry_run=True, rescore=True), **W)
    assert again.would_score == 9
    keys = {k: artifact_keys(r.flow_run_id) for k, r in (("real", real), ("dry", again))}
    assert keys["real"] == {stream.artifact_key(k) for k in ("trust-summary", "trust-lowest")}
    assert keys["dry"] == {stream.artifact_key("trust-summary-dry-run")}  # nothing scored


@ON_BOTH_SERVERS
def test_cost_caps(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRUST_EVAL_PAGE_SIZE", "4")
    # fixed ids, so the half sampled is known and is neither none nor all of them
    ids = seed(langfuse_sandbox, 10, ids=[f"{i:032x}" for i in range(10)])
    chosen = {t for t in ids if in_sample(t, 0.5)}
    assert 0 < len(chosen) < 10
    capped = evaluate_traces(tags=[TAG], options=EvalOptions(max_traces=6), **W)
    assert capped.uploaded == 6 and capped.capped and len(tlm.prompts) == 6
    assert capped.accounted() == capped.fetched
    assert "over_max_traces" in capped.skipped

    sampled = evaluate_traces(tags=[TAG], options=EvalOptions(sample_rate=0.5, rescore=True), **W)
    assert sampled.uploaded == len(chosen)
    assert set(sampled.skipped["not_sampled"]) == set(ids) - chosen
    again = evaluate_traces(
        tags=[TAG],
        options=EvalOptions(sample_rate=0.5, rescore=True, dry_run=True),
        **W,
    )
    assert again.would_score == sampled.uploaded  # the same traces are sampled every run


def test_207_refusals_are_pinned_to_their_traces(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    lf = langfuse_sandbox
    ids = seed(lf, 20)
    refused = {ids[3], ids[14]}
    lf.faults.set("scores.create", Fault(reject_trace_ids=set(refused)))
    report = evaluate_traces(tags=[TAG], **W)
    assert report.uploaded == 18
    assert {t for v in report.failed_to_upload.values() for t in v} == refused
    assert set(scores_by_trace(lf)) == set(ids) - refused
    assert all(len(v) == 1 for v in scores_by_trace(lf).values())
    assert not report.ok


def test_bad_configuration_is_refused_before_any_call(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(langfuse_sandbox, 1)
    with pytest.raises(ParameterTypeError, match="quality_preset"):  # not an explaining preset
        evaluate_traces(tags=[TAG], options=cast(Any, {"quality_preset": "low"}), **W)
    with pytest.raises(ConfigError, match="window_end"):
        evaluate_traces(window_start=DAY, window_end=DAY - timedelta(hours=1), tags=[TAG])
    with pytest.raises(ConfigError, match="tags"):
        evaluate_traces(tags=[], **W)
    monkeypatch.delenv("CLEANLAB_TLM_API_KEY")
    with pytest.raises(ConfigError, match="CLEANLAB_TLM_API_KEY"):
        evaluate_traces(tags=[TAG], **W)
    monkeypatch.delenv("LANGFUSE_SECRET_KEY")
    with pytest.raises(ConfigError, match="LANGFUSE_SECRET_KEY"):
        evaluate_traces(tags=[TAG], options=EvalOptions(dry_run=True), **W)
    assert langfuse_sandbox.faults.requests == [] and tlm.prompts == []


def test_invalid_tlm_key_fails_fast_and_uploads_nothing(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(langfuse_sandbox, 25)
    monkeypatch.setenv("CLEANLAB_TLM_API_KEY", "wrong-key")
    with pytest.raises(EvaluationFailed, match="CLEANLAB_TLM_API_KEY") as info:
        evaluate_traces(tags=[TAG], **W)
    report = info.value.report
    assert report.fetched == 25 and report.uploaded == 0
    assert report.accounted() == 25
    assert tlm.faults.count("tlm.score") == 1  # the probe: not one request per trace
    assert langfuse_sandbox.store.all_scores() == []


def test_report_artifacts_escape_markup(langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox) -> None:
    from prefect.client.orchestration import get_client

    seed(langfuse_sandbox, 3, input={"args": ["<script>alert(1)</script> | *bold*"], "kwargs": {}})
    tlm.rich_explanations = True
    report = evaluate_traces(tags=[TAG], **W)
    assert report.uploaded == 3

    async def artifacts() -> list[Any]:
        from uuid import UUID

        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        assert report.flow_run_id is not None
        run_filter = ArtifactFilterFlowRunId(any_=[UUID(report.flow_run_id)])
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=run_filter)
            )

    import asyncio

    found = [a for a in asyncio.run(artifacts()) if str(a.flow_run_id) == report.flow_run_id]
    stream = stream_of(langfuse_sandbox)
    lowest, summary_key = stream.artifact_key("trust-lowest"), stream.artifact_key("trust-summary")
    assert lowest == f"trust-lowest-tlm-eval-pipeline-trust-score-{stream.key[:8]}"
    keys = sorted(a.key for a in found if a.key)  # (the persisted result has no key)
    assert keys == [lowest, "trust-progress", summary_key], keys
    table = next(a for a in found if a.key == lowest)
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert len(rows) == 3 and float(rows[0]["score"]) <= float(rows[-1]["score"])
    assert list(rows[0]) == ["rank", "score", "trace", "explanation", "answer", "question"]
    assert "<script>" not in json.dumps(rows) and "\\<script\\>" in rows[0]["question"]
    summary = next(a for a in found if a.key == summary_key)
    assert "| 3 | 0 | 0 | 0 | 3 | 0 |" in summary.data


# --------------------------------------------------------------------------- langfuse.openai


@ON_BOTH_SERVERS
def test_prompt_comes_from_the_generation_the_integration_recorded(
    langfuse_sandbox: LangfuseSandbox,
    tlm: TLMSandbox,
    openai_sandbox: OpenAISandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sandbox.openai_app import TRIVIA
    from sandbox.trivia_app import SEED_QUESTIONS, synthetic_questions, trace_answers

    lf = langfuse_sandbox
    monkeypatch.setenv("TRUST_EVAL_PAGE_SIZE", "4")
    start = datetime.now(UTC) - timedelta(seconds=1)
    questions = SEED_QUESTIONS + synthetic_questions(7)
    answers = trace_answers(
        questions, system_prompt="You are a trivia master.", langfuse_public_key=lf.public_key
    )
    end = datetime.now(UTC) + timedelta(milliseconds=1)
    # the integration recorded one GENERATION per call, under the @observe root
    roots = [o for o in lf.store.all_observations() if o.is_root]
    gens = [o for o in lf.store.all_observations() if o.type == "GENERATION"]
    assert len(roots) == len(gens) == 12 and {g.trace_id for g in gens} == {
        r.trace_id for r in roots
    }
    lf.faults.reset_log()

    report = evaluate_traces(window_start=start, window_end=end, tags=[TAG])

    assert report.uploaded == len(questions) == 12
    sent = {c["prompt"]: c["response"]["response"] for c in tlm.calls}
    for question, answer in zip(questions, answers, strict=True):
        prompt = f"System: You are a trivia master.\n\nUser: {question}\n\nAssistant:"
        assert sent[prompt] == answer  # exactly what the model saw, and what it answered
    for question in SEED_QUESTIONS:
        assert (
            sent[f"System: You are a trivia master.\n\nUser: {question}\n\nAssistant:"]
            == (TRIVIA[question])
        )
    # 3 pages of 4 traces: one probe (its 12 children are all generations), then per page one
    # root query and one generation query: constant per page, not one per trace; and one for
    # the traces of the hour before the window
    assert lf.faults.count("observations") == 1 + 3 + 3 + 1


@ON_BOTH_SERVERS
def test_each_chunk_writes_its_own_scores(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No paid score waits for a later chunk to fill a POST: a crash loses only work at TLM."""
    monkeypatch.setenv("TRUST_EVAL_PAGE_SIZE", "4")
    monkeypatch.setenv("TRUST_EVAL_UPLOAD_BATCH_BYTES", "10000")  # ~13 scores a POST
    monkeypatch.setenv("TRUST_EVAL_INGESTION_BATCH_BYTES", "10000")  # v4.16's events
    lf = langfuse_sandbox
    seed(lf, 30)
    report = evaluate_traces(tags=[TAG], options=EvalOptions(score_config=False), **W)
    assert report.uploaded == 30 and len(lf.store.all_scores()) == 30
    # one POST per chunk of 4: a list, or on v4.16 a batch of score-create events
    endpoint = "scores.create" if lf.profile == "current" else "ingestion"
    posts = [r for r in lf.faults.requests if r.endpoint in ("scores.create", "ingestion")]
    assert len(posts) == 8 and {p.endpoint for p in posts} == {endpoint}
    assert len(tlm.calls) == 30 and all(p.body_bytes <= 10_000 for p in posts)
