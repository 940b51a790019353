"""The real Langfuse SDK (5.0.4) writing and reading scores on the Langfuse sandbox, over HTTP
(fresh sandbox and keys per test, 127.0.0.1 only, as in test_langfuse_traces.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from langfuse import Langfuse
from langfuse.api import CreateScoreBatchResponse, CreateScoreBatchResults
from langfuse.api.core import ApiError

from sandbox.faults import Fault
from sandbox.langfuse import LangfuseSandbox, iso, to_ms
from tests.support.langfuse_api import NO_RETRY, T0, score_body


def test_scores_create_then_read_back(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    api = langfuse_client.api.scores
    trace_ids = [langfuse_sandbox.store.add_trace(start_time=T0) for _ in range(5)]
    answer = api.create(request=[score_body(t, n) for n, t in enumerate(trace_ids)])
    assert isinstance(answer, CreateScoreBatchResponse)
    assert answer.message == "Accepted"
    assert langfuse_sandbox.faults.requests[-1].status == 202

    rows = api.get_many(name="trust").data
    assert [r.id for r in rows] == [f"score-{n}" for n in (4, 3, 2, 1, 0)]  # newest first
    assert rows[0].value == pytest.approx(0.4)
    assert rows[0].comment is None and rows[0].subject is None  # core fields only

    (one,) = api.get_many(trace_id=trace_ids[2], fields="details,subject").data
    assert one.comment == "explanation 2"
    assert one.metadata == {"n": 2}
    assert one.subject is not None and one.subject.kind == "trace"
    assert one.subject.id == trace_ids[2]
    assert one.timestamp == T0 + timedelta(minutes=2)

    both = api.get_many(trace_id=f"{trace_ids[0]},{trace_ids[1]}").data
    assert {r.id for r in both} == {"score-0", "score-1"}
    window = api.get_many(
        from_timestamp=T0 + timedelta(minutes=1), to_timestamp=T0 + timedelta(minutes=3)
    ).data
    assert {r.id for r in window} == {"score-1", "score-2"}  # from inclusive, to exclusive
    assert api.get_many(name="other").data == []

    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = api.get_many(name="trust", limit=2, cursor=cursor)
        assert page.meta.limit == 2
        seen += [r.id for r in page.data]
        cursor = page.meta.cursor
        if not cursor:
            break
    assert sorted(seen) == [f"score-{n}" for n in range(5)]


def test_resend_same_id_and_timestamp_upserts_other_timestamp_duplicates(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    api = langfuse_client.api.scores
    trace_id = langfuse_sandbox.store.add_trace(start_time=T0)
    api.create(request=[score_body(trace_id, 3)])
    api.create(request=[score_body(trace_id, 3, value=0.9, comment="rescored")])
    (row,) = api.get_many(id="score-3", fields="details").data
    assert row.value == pytest.approx(0.9)
    assert row.comment == "rescored"
    assert len(langfuse_sandbox.store.scores_for(trace_id, "trust")) == 1

    later = iso(to_ms(T0 + timedelta(hours=1)))
    api.create(request=[score_body(trace_id, 3, timestamp=later)])
    assert len(api.get_many(id="score-3").data) == 2
    assert len(langfuse_sandbox.store.scores_for(trace_id)) == 2


def test_missing_id_and_timestamp_are_generated(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    langfuse_client.api.scores.create(request=[{"traceId": "t1", "name": "n", "value": 1}])
    langfuse_client.api.scores.create(request=[{"traceId": "t1", "name": "n", "value": 1}])
    rows = langfuse_client.api.scores.get_many(trace_id="t1").data
    assert len(rows) == 2 and rows[0].id != rows[1].id
    assert all(r.timestamp >= before for r in rows)


def test_partial_rejection_is_207(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    langfuse_sandbox.faults.set("scores.create", Fault(reject_trace_ids={"t-bad"}))
    answer = langfuse_client.api.scores.create(
        request=[
            score_body("t-ok", 1),
            score_body("t-bad", 2),
            {"name": "trust", "value": 0.5},  # no subject: refused
            score_body("t-ok", 4, dataType="BOOLEAN", value=0.5),  # boolean must be 0 or 1
        ],
        request_options=NO_RETRY,
    )
    assert isinstance(answer, CreateScoreBatchResults)
    assert (answer.accepted, answer.rejected, len(answer.errors)) == (1, 3, 3)
    assert all(e.message for e in answer.errors)
    assert langfuse_sandbox.faults.requests[-1].status == 207
    assert [s.id for s in langfuse_sandbox.store.all_scores()] == ["score-1"]


def test_score_read_validation_is_400(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    api = langfuse_client.api.scores
    for kwargs in (
        {"limit": 101},
        {"observation_id": "o1"},
        {"fields": "bogus"},
        {"value": "1"},
    ):
        with pytest.raises(ApiError) as err:
            api.get_many(**kwargs, request_options=NO_RETRY)
        assert err.value.status_code == 400, kwargs
    assert api.get_many(limit=100).data == []


def test_score_body_over_1mb_is_413(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    big = [score_body("t1", n, comment="x" * 400_000) for n in range(3)]
    with pytest.raises(ApiError) as err:
        langfuse_client.api.scores.create(request=big, request_options=NO_RETRY)
    assert err.value.status_code == 413
    assert langfuse_sandbox.store.all_scores() == []
