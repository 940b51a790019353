"""`python -m sandbox seed`: past-dated trivia traces, sent through the real Langfuse SDK (OTLP)
to an in-process sandbox, land on their UTC days with the tag and the trivia app's shape."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest
from langfuse import Langfuse

from sandbox.langfuse import LangfuseSandbox
from sandbox.runner import free_port
from sandbox.seed import main, seed_days
from sandbox.tlm import synthetic_score

TODAY = date(2026, 11, 28)


def _day(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, UTC).date()


def test_seeded_traces_land_on_their_past_days_with_the_tag(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    by_day = seed_days(langfuse_client, days=3, per_day=7, tags=["seeded"], today=TODAY)

    assert list(by_day) == [TODAY - timedelta(days=k) for k in (3, 2, 1)]
    store = langfuse_sandbox.store
    roots = {o.trace_id: o for o in store.all_observations() if o.is_root}
    gens = {o.trace_id: o for o in store.all_observations() if o.type == "GENERATION"}
    assert len(roots) == len(gens) == 21 and set(roots) == {
        i for ids in by_day.values() for i in ids
    }
    scores = []
    for day, ids in by_day.items():
        assert len(ids) == 7
        for trace_id in ids:
            root, gen, trace = roots[trace_id], gens[trace_id], store.trace(trace_id)
            assert _day(root.start_ms) == _day(gen.start_ms) == _day(root.end_ms or 0) == day
            assert root.tags == gen.tags == ("seeded",) and trace is not None
            assert trace.name == "trivia" and trace.tags == ("seeded",)
            assert gen.parent_observation_id == root.id and root.name == "answer_trivia"
            question = json.loads(root.input or "")["args"][0]
            assert json.loads(gen.input or "")[-1] == {"role": "user", "content": question}
            scores.append(synthetic_score(question, json.loads(gen.output or "")["content"]))
    # the seed's recorded answers are partly wrong: the day's scores spread out
    assert min(scores) < 0.2 and max(scores) > 0.9


def test_the_command_seeds_the_days_before_today(
    langfuse_sandbox: LangfuseSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    lf = langfuse_sandbox
    keys = ["--public-key", lf.public_key, "--secret-key", lf.secret_key]
    today = datetime.now(UTC).date()

    code = main(["--days", "2", "--per-day", "3", "--tag", "t1", "--langfuse-url", lf.url, *keys])

    assert code == 0, capsys.readouterr().out
    roots = [o for o in lf.store.all_observations() if o.is_root]
    assert (
        sorted(_day(o.start_ms) for o in roots)
        == [today - timedelta(days=2)] * 3 + [today - timedelta(days=1)] * 3
    )
    assert all(o.tags == ("t1",) for o in roots)
    assert "backfill --start-date" in capsys.readouterr().out


def test_the_command_says_when_no_sandbox_runs(
    langfuse_sandbox: LangfuseSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"

    assert (
        main(["--days", "1", "--per-day", "1", "--langfuse-url", url, "--public-key", "pk-x"]) == 1
    )
    assert "make sandbox" in capsys.readouterr().out


def test_seeded_rag_answers_carry_a_retrieval_step(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    by_day = seed_days(langfuse_client, days=1, per_day=2, rag_per_day=3, today=TODAY)
    ids = by_day[TODAY - timedelta(days=1)]
    assert len(ids) == 5
    store = langfuse_sandbox.store
    found = {o.trace_id: o for o in store.all_observations() if o.type == "RETRIEVER"}
    assert set(found) == set(ids[2:])
    for trace_id in ids[2:]:
        docs = json.loads(found[trace_id].output or "")
        gen = next(
            o for o in store.all_observations() if o.trace_id == trace_id and o.type == "GENERATION"
        )
        assert docs[0]["page_content"] in json.loads(gen.input or "")[0]["content"]
