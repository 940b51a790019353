"""The real Langfuse SDK (5.0.4) reading traces from the Langfuse sandbox, over HTTP.

Every test uses a fresh sandbox with fresh keys (the SDK keeps one client per public key per
process), talks only to 127.0.0.1, and checks the answers the real service gives (wire facts in
``../shared/docs/PROTOCOLS.md``, shapes from the OpenAPI spec v4.16.0).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
from langfuse import Langfuse, get_client, observe, propagate_attributes
from langfuse.api import ObservationV2
from langfuse.api.core import ApiError

from sandbox.langfuse import LangfuseSandbox
from tests.support.langfuse_api import NO_RETRY, T0, fetch_all

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
