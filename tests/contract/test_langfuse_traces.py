"""Contract tests: the real Langfuse SDK (5.0.4) against the local Langfuse sandbox, over HTTP.

Every test uses a fresh sandbox with fresh keys (the SDK keeps one client per public key per
process), talks only to 127.0.0.1, and checks the answers the real service gives (wire facts in
``../shared/docs/PROTOCOLS.md``, shapes from the OpenAPI spec v4.16.0).
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from langfuse import Langfuse, get_client, observe, propagate_attributes
from langfuse.api import (
    CreateScoreBatchResponse,
    CreateScoreBatchResults,
    ObservationV2,
    UnauthorizedError,
)
from langfuse.api.core import ApiError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from sandbox.faults import Fault
from sandbox.langfuse_app import LangfuseSandbox, iso, to_ms

NO_RETRY: dict[str, Any] = {"max_retries": 0}
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
LONG_PROMPT = "You are a careful assistant. " * 20  # 580 characters


# --------------------------------------------------------------------------- helpers


@observe(as_type="generation", name="llm")
def _llm(question: str) -> str:
    return f"answer: {question}"


@observe(name="chat")
def _chat(question: str, span_metadata: dict[str, Any] | None = None) -> str:
    if span_metadata:
        get_client().update_current_span(metadata=span_metadata)
    return _llm(question)


def make_trace(
    sandbox: LangfuseSandbox,
    question: str,
    *,
    tags: list[str],
    trace_name: str = "support-chat",
    metadata: dict[str, str] | None = None,
    span_metadata: dict[str, Any] | None = None,
) -> None:
    """One trace through the SDK: a root span ``chat`` with a child generation ``llm``."""
    with propagate_attributes(tags=tags, trace_name=trace_name, metadata=metadata):
        _chat(question, span_metadata, langfuse_public_key=sandbox.public_key)  # type: ignore[call-arg]


def fetch_all(client: Langfuse, **query: Any) -> Iterator[list[ObservationV2]]:
    """Yield every page of GET /api/public/v2/observations, following ``meta.cursor``."""
    cursor: str | None = None
    while True:
        page = client.api.observations.get_many(cursor=cursor, **query)
        yield page.data
        cursor = page.meta.cursor
        if not cursor:
            return


def roots(client: Langfuse, **query: Any) -> list[ObservationV2]:
    return [o for page in fetch_all(client, is_root_observation=True, **query) for o in page]


def tag_filter(operator: str, *tags: str) -> str:
    return json.dumps(
        [{"type": "arrayOptions", "column": "tags", "operator": operator, "value": list(tags)}]
    )


@pytest.fixture
def traced(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> tuple[LangfuseSandbox, Langfuse]:
    """Four SDK traces with different tags, flushed to the sandbox."""
    make_trace(langfuse_sandbox, "q-prod-chat", tags=["prod", "chat"], metadata={"team": "a"})
    make_trace(langfuse_sandbox, "q-prod", tags=["prod"])
    make_trace(langfuse_sandbox, "q-dev-chat", tags=["dev", "chat"])
    make_trace(
        langfuse_sandbox,
        "q-long",
        tags=["prod", "long"],
        span_metadata={"system_prompt": LONG_PROMPT, "short": "kept"},
    )
    langfuse_client.flush()
    return langfuse_sandbox, langfuse_client


# --------------------------------------------------------------------------- reading traces


def test_observed_traces_come_back_as_root_observations(
    traced: tuple[LangfuseSandbox, Langfuse],
) -> None:
    sandbox, client = traced
    assert sandbox.faults.count("otel", status=200) >= 1
    rows = roots(client, fields="core,basic,io,metadata,trace_context")
    assert len(rows) == 4
    by_question = {json.loads(o.input)["args"][0]: o for o in rows if o.input}
    assert set(by_question) == {"q-prod-chat", "q-prod", "q-dev-chat", "q-long"}
    root = by_question["q-prod-chat"]
    assert root.type == "SPAN"
    assert root.name == "chat"
    assert root.is_root_observation is True
    assert root.parent_observation_id is None
    assert root.trace_name == "support-chat"
    assert sorted(root.tags or []) == ["chat", "prod"]
    # io comes back as raw strings: @observe input is JSON text, a str output is kept as is
    assert isinstance(root.input, str)
    captured = json.loads(root.input)
    assert set(captured) == {"args", "kwargs"} and captured["args"][0] == "q-prod-chat"
    assert root.output == "answer: q-prod-chat"
    assert root.metadata == {"team": "a"}
    assert len({o.trace_id for o in rows}) == 4

    everything = [o for page in fetch_all(client, fields="core,basic") for o in page]
    assert len(everything) == 8
    children = [o for o in everything if not o.is_root_observation]
    assert {o.type for o in children} == {"GENERATION"}
    parents = {o.trace_id: o.id for o in rows}
    assert all(o.parent_observation_id == parents[o.trace_id] for o in children)


def test_default_field_groups_are_core_and_basic(traced: tuple[LangfuseSandbox, Langfuse]) -> None:
    sandbox, _ = traced
    answer = httpx.get(
        f"{sandbox.url}/api/public/v2/observations",
        params={"isRootObservation": "true", "limit": 1},
        auth=(sandbox.public_key, sandbox.secret_key),
    )
    assert answer.status_code == 200
    row = answer.json()["data"][0]
    core = {"id", "traceId", "startTime", "endTime", "projectId", "parentObservationId", "type"}
    assert core | {"name", "isRootObservation", "environment"} <= set(row)
    assert not {"input", "output", "metadata", "tags", "traceName"} & set(row)


def test_tag_filters_any_all_none(traced: tuple[LangfuseSandbox, Langfuse]) -> None:
    _, client = traced

    def questions(filter_json: str) -> set[str]:
        rows = roots(client, fields="core,io", filter=filter_json)
        return {json.loads(o.input)["args"][0] for o in rows if o.input}

    assert questions(tag_filter("any of", "chat")) == {"q-prod-chat", "q-dev-chat"}
    assert questions(tag_filter("any of", "dev", "long")) == {"q-dev-chat", "q-long"}
    assert questions(tag_filter("all of", "prod", "chat")) == {"q-prod-chat"}
    assert questions(tag_filter("none of", "chat")) == {"q-prod", "q-long"}
    assert questions(tag_filter("any of", "nope")) == set()


def test_query_params_and_filter_combine_unless_same_column(
    traced: tuple[LangfuseSandbox, Langfuse],
) -> None:
    _, client = traced
    # both apply: a query param on another column narrows the tag filter
    assert roots(client, name="chat", filter=tag_filter("any of", "chat"))
    assert roots(client, name="llm", filter=tag_filter("any of", "chat")) == []
    # the same column in both: the filter wins
    env_filter = json.dumps(
        [
            {
                "type": "stringOptions",
                "column": "environment",
                "operator": "any of",
                "value": ["default"],
            }
        ]
    )
    assert roots(client, environment="staging") == []
    assert len(roots(client, environment="staging", filter=env_filter)) == 4
    name_filter = json.dumps(
        [{"type": "string", "column": "traceName", "operator": "=", "value": "support-chat"}]
    )
    assert len(roots(client, filter=name_filter)) == 4


def test_time_window_from_inclusive_to_exclusive(traced: tuple[LangfuseSandbox, Langfuse]) -> None:
    _, client = traced
    rows = roots(client)
    newest = max(rows, key=lambda o: (o.start_time, o.id))
    start = newest.start_time
    ids_from = {o.id for o in roots(client, from_start_time=start)}
    ids_to = {o.id for o in roots(client, to_start_time=start)}
    assert newest.id in ids_from
    assert newest.id not in ids_to
    assert ids_from | ids_to == {o.id for o in rows}
    assert not ids_from & ids_to
    one_ms = timedelta(milliseconds=1)
    window = roots(client, from_start_time=start, to_start_time=start + one_ms)
    assert newest.id in {o.id for o in window}
    assert all(o.start_time == start for o in window)


def test_metadata_truncated_unless_expanded(traced: tuple[LangfuseSandbox, Langfuse]) -> None:
    _, client = traced
    flt = tag_filter("any of", "long")
    (short_view,) = roots(client, fields="core,metadata", filter=flt)
    assert short_view.metadata is not None
    truncated = short_view.metadata["system_prompt"]
    assert truncated != LONG_PROMPT
    assert truncated.startswith(LONG_PROMPT[:200])
    assert len(truncated) < len(LONG_PROMPT)
    assert short_view.metadata["short"] == "kept"
    (full_view,) = roots(
        client, fields="core,metadata", filter=flt, expand_metadata="system_prompt"
    )
    assert full_view.metadata is not None
    assert full_view.metadata["system_prompt"] == LONG_PROMPT


def test_paging_loses_and_repeats_nothing(traced: tuple[LangfuseSandbox, Langfuse]) -> None:
    sandbox, client = traced
    for i in range(3):
        make_trace(sandbox, f"more-{i}", tags=["prod"])
    client.flush()
    pages = list(fetch_all(client, is_root_observation=True, limit=2))
    assert [len(p) for p in pages] == [2, 2, 2, 1]
    ids = [o.id for p in pages for o in p]
    assert len(ids) == len(set(ids)) == 7
    starts = [o.start_time for p in pages for o in p]
    assert starts == sorted(starts, reverse=True)  # newest first


def test_paging_over_equal_start_times(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    store = langfuse_sandbox.store
    seeded = {store.add_trace(name=f"t{i}", start_time=T0, tags=["x"]) for i in range(23)}
    older = store.add_trace(name="old", start_time=T0 - timedelta(hours=1), tags=["x"])
    rows = roots(langfuse_client, limit=5, filter=tag_filter("all of", "x"))
    assert [o.trace_id for o in rows][-1] == older
    assert {o.trace_id for o in rows} == seeded | {older}
    assert len(rows) == 24


def test_seeded_store_round_trip(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    store = langfuse_sandbox.store
    trace_id = store.add_trace(
        name="rag",
        tags=["prod"],
        metadata={"system_prompt": "Be brief."},
        input="what is 2+2?",
        output={"answer": "4"},
        start_time=T0,
        end_time=T0 + timedelta(seconds=2),
        release="v1",
        user_id="u1",
    )
    store.add_observation(
        trace_id=trace_id,
        type="GENERATION",
        name="llm",
        input=[{"role": "user", "content": "what is 2+2?"}],
        output="4",
        start_time=T0 + timedelta(milliseconds=5),
        model="gpt-4.1-mini",
        usage_details={"input": 10, "output": 1},
    )
    (root,) = roots(langfuse_client, fields="core,basic,io,metadata,trace_context")
    assert root.trace_id == trace_id
    assert root.start_time == T0
    assert root.input == "what is 2+2?"
    assert root.output == '{"answer": "4"}'
    assert root.release == "v1"
    assert root.user_id == "u1"
    (gen,) = langfuse_client.api.observations.get_many(
        type="GENERATION", fields="core,io,model,usage"
    ).data
    assert json.loads(gen.input or "") == [{"role": "user", "content": "what is 2+2?"}]
    assert gen.model == "gpt-4.1-mini"
    assert gen.usage_details == {"input": 10, "output": 1}


def test_bad_queries_are_400(langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse) -> None:
    api = langfuse_client.api.observations
    for kwargs in (
        {"limit": 1001},
        {"parse_io_as_json": True},
        {"filter": "[{not json"},
        {"filter": '{"type": "arrayOptions"}'},
        {"cursor": "!!!"},
    ):
        with pytest.raises(ApiError) as err:
            api.get_many(**kwargs, request_options=NO_RETRY)
        assert err.value.status_code == 400, kwargs
        assert "message" in err.value.body
    assert len(api.get_many(limit=1000).data) == 0
    # an unknown field group is dropped, not refused (tests/contract/test_langfuse_profiles.py)
    assert api.get_many(fields="core,bogus", request_options=NO_RETRY).data == []


# --------------------------------------------------------------------------- writing scores


def _score(trace_id: str, n: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"score-{n}",
        "traceId": trace_id,
        "name": "trust",
        "value": n / 10,
        "dataType": "NUMERIC",
        "timestamp": iso(to_ms(T0 + timedelta(minutes=n))),
        "comment": f"explanation {n}",
        "metadata": {"n": n},
        **extra,
    }


def test_scores_create_then_read_back(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    api = langfuse_client.api.scores
    trace_ids = [langfuse_sandbox.store.add_trace(start_time=T0) for _ in range(5)]
    answer = api.create(request=[_score(t, n) for n, t in enumerate(trace_ids)])
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
    api.create(request=[_score(trace_id, 3)])
    api.create(request=[_score(trace_id, 3, value=0.9, comment="rescored")])
    (row,) = api.get_many(id="score-3", fields="details").data
    assert row.value == pytest.approx(0.9)
    assert row.comment == "rescored"
    assert len(langfuse_sandbox.store.scores_for(trace_id, "trust")) == 1

    later = iso(to_ms(T0 + timedelta(hours=1)))
    api.create(request=[_score(trace_id, 3, timestamp=later)])
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
            _score("t-ok", 1),
            _score("t-bad", 2),
            {"name": "trust", "value": 0.5},  # no subject: refused
            _score("t-ok", 4, dataType="BOOLEAN", value=0.5),  # boolean must be 0 or 1
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
    big = [_score("t1", n, comment="x" * 400_000) for n in range(3)]
    with pytest.raises(ApiError) as err:
        langfuse_client.api.scores.create(request=big, request_options=NO_RETRY)
    assert err.value.status_code == 413
    assert langfuse_sandbox.store.all_scores() == []


# --------------------------------------------------------------------------- other calls


def test_health_projects_and_auth_check(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    health = langfuse_client.api.health.health()
    assert health.status == "OK" and health.version
    assert httpx.get(f"{langfuse_sandbox.url}/api/public/health").status_code == 200  # no auth
    (project,) = langfuse_client.api.projects.get().data
    assert project.id == langfuse_sandbox.store.project_id
    assert project.organization.id and project.metadata == {}
    assert langfuse_client.auth_check() is True


def test_bad_key_is_401(
    langfuse_sandbox: LangfuseSandbox, make_langfuse_client: Callable[..., Langfuse]
) -> None:
    bad = make_langfuse_client(public_key=f"{langfuse_sandbox.public_key}-x", secret_key="nope")
    with pytest.raises(UnauthorizedError):
        bad.auth_check()
    with pytest.raises(UnauthorizedError):
        bad.api.observations.get_many()
    with pytest.raises(UnauthorizedError):
        bad.api.scores.create(request=[_score("t1", 1)])
    with pytest.raises(UnauthorizedError):
        bad.api.scores.get_many()
    otel = httpx.post(
        f"{langfuse_sandbox.url}/api/public/otel/v1/traces",
        content=b"",
        headers={"content-type": "application/x-protobuf"},
    )
    assert otel.status_code == 401
    assert "message" in otel.json()
    assert langfuse_sandbox.faults.count(status=401) == 5


def test_otlp_json_and_gzip_protobuf_ingestion(langfuse_sandbox: LangfuseSandbox) -> None:
    url = f"{langfuse_sandbox.url}/api/public/otel/v1/traces"
    auth = (langfuse_sandbox.public_key, langfuse_sandbox.secret_key)
    start_ns = to_ms(T0) * 1_000_000
    span = {
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        "spanId": "b7ad6b7169203331",
        "name": "json-root",
        "startTimeUnixNano": str(start_ns),
        "endTimeUnixNano": str(start_ns + 1_000_000),
        "attributes": [
            {
                "key": "langfuse.trace.tags",
                "value": {"arrayValue": {"values": [{"stringValue": "j"}]}},
            },
            {"key": "langfuse.observation.input", "value": {"stringValue": '{"q": 1}'}},
        ],
    }
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    answer = httpx.post(url, json=body, auth=auth)
    assert answer.status_code == 200 and answer.json() == {}

    request = ExportTraceServiceRequest()
    pb_span = request.resource_spans.add().scope_spans.add().spans.add()
    pb_span.trace_id = bytes.fromhex("1af7651916cd43dd8448eb211c80319c")
    pb_span.span_id = bytes.fromhex("c7ad6b7169203331")
    pb_span.name = "pb-root"
    pb_span.start_time_unix_nano = start_ns + 5_000_000
    answer = httpx.post(
        url,
        content=gzip.compress(request.SerializeToString()),
        headers={"content-type": "application/x-protobuf", "content-encoding": "gzip"},
        auth=auth,
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/x-protobuf"

    garbage = httpx.post(
        url,
        content=b"\xff\x00garbage",
        headers={"content-type": "application/x-protobuf"},
        auth=auth,
    )
    assert garbage.status_code == 400
    listing = httpx.get(
        f"{langfuse_sandbox.url}/api/public/v2/observations",
        params={"fields": "core,basic,io,trace_context"},
        auth=auth,
    ).json()["data"]
    assert [(o["name"], o["traceName"]) for o in listing] == [
        ("pb-root", "pb-root"),
        ("json-root", "json-root"),
    ]
    assert listing[1]["tags"] == ["j"] and listing[1]["input"] == '{"q": 1}'
    assert listing[1]["traceId"] == span["traceId"] and listing[1]["id"] == span["spanId"]


# --------------------------------------------------------------------------- fault knobs


def test_429_with_retry_after_is_retried_by_the_generated_client(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    faults = langfuse_sandbox.faults
    faults.set("observations", Fault(status=429, retry_after=1, first=1))
    started = time.monotonic()
    assert langfuse_client.api.observations.get_many().data == []
    assert time.monotonic() - started >= 0.9  # Retry-After: 1 honoured
    assert faults.count("observations", status=429) == 1
    assert faults.count("observations", status=200) == 1

    faults.set("observations", Fault(status=429, retry_after=1))
    with pytest.raises(ApiError) as err:
        langfuse_client.api.observations.get_many(request_options=NO_RETRY)
    assert err.value.status_code == 429
    assert err.value.headers is not None and err.value.headers["retry-after"] == "1"


def test_rate_limit_covers_the_general_api_group(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    langfuse_sandbox.set_rate_limit(per_minute=2, window_s=60.0)
    api = langfuse_client.api
    api.observations.get_many(request_options=NO_RETRY)
    api.scores.get_many(request_options=NO_RETRY)
    with pytest.raises(ApiError) as err:
        api.scores.create(request=[_score("t1", 1)], request_options=NO_RETRY)
    assert err.value.status_code == 429
    headers = err.value.headers or {}
    assert int(headers["retry-after"]) >= 1
    assert headers["x-ratelimit-limit"] == "2" and headers["x-ratelimit-remaining"] == "0"
    assert api.health.health().status == "OK"  # health is not in the group
    assert langfuse_sandbox.store.all_scores() == []


def test_5xx_every_nth_call(langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse) -> None:
    langfuse_sandbox.faults.set("scores.list", Fault(status=503, every=3))
    outcomes: list[int | None] = []
    for _ in range(6):
        try:
            langfuse_client.api.scores.get_many(request_options=NO_RETRY)
            outcomes.append(200)
        except ApiError as e:
            outcomes.append(e.status_code)
    assert outcomes == [200, 200, 503, 200, 200, 503]
    # with its default retries the client gets through a transient 5xx
    langfuse_sandbox.faults.set("scores.list", Fault(status=500, first=1, retry_after=1))
    assert langfuse_client.api.scores.get_many().data == []


def test_hang_is_bounded_by_the_client_timeout(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    langfuse_sandbox.faults.set("observations", Fault(hang=True))
    started = time.monotonic()
    with pytest.raises(httpx.TimeoutException):
        langfuse_client.api.observations.get_many(
            request_options={"timeout_in_seconds": 1, "max_retries": 0}
        )
    assert time.monotonic() - started < 3
    langfuse_sandbox.faults.clear()
    assert langfuse_client.api.observations.get_many().data == []


def test_lost_response_still_stores_the_scores(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    langfuse_sandbox.faults.set("scores.create", Fault(lose_response=1))
    with pytest.raises(ApiError) as err:
        langfuse_client.api.scores.create(request=[_score("t1", 1)], request_options=NO_RETRY)
    assert err.value.status_code == 502
    assert [s.id for s in langfuse_sandbox.store.all_scores()] == ["score-1"]
    # the caller resends: same id and timestamp, so no duplicate
    langfuse_client.api.scores.create(request=[_score("t1", 1)], request_options=NO_RETRY)
    assert len(langfuse_sandbox.store.all_scores()) == 1


def test_repeated_rows_across_pages(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    store = langfuse_sandbox.store
    seeded = {store.add_trace(start_time=T0 + timedelta(seconds=i)) for i in range(7)}
    langfuse_sandbox.faults.set("observations", Fault(repeat_rows=1))
    pages = list(fetch_all(langfuse_client, is_root_observation=True, limit=3))
    trace_ids = [o.trace_id for page in pages for o in page]
    assert len(trace_ids) > len(set(trace_ids))  # rows repeat across pages ...
    assert set(trace_ids) == seeded  # ... but none is lost
    assert pages[1][0].id == pages[0][-1].id


def test_request_log_counts(langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse) -> None:
    faults = langfuse_sandbox.faults
    faults.reset_log()
    langfuse_client.api.health.health()
    for _ in range(3):
        langfuse_client.api.observations.get_many(limit=10)
    langfuse_client.api.scores.create(request=[_score("t1", 1)])
    assert faults.count() == 5
    assert faults.count("observations") == 3
    assert faults.count("scores.create", status=202) == 1
    assert faults.count("health") == 1
    record = next(r for r in faults.requests if r.endpoint == "observations")
    assert record.method == "GET" and "limit=10" in record.query
