"""The metrics APIs' counting subset and the write modes, on the Langfuse sandbox over HTTP: v2
metrics through the real SDK (5.0.4), v1 metrics (SDK 5 has no client for it) through httpx.

Sources (v4.16.0): web/src/pages/api/public/metrics/index.ts, .../v2/metrics.ts,
web/src/features/public-api/types/metrics.ts, packages/shared/src/features/query/ (dataModel.ts,
server/queryBuilder.ts), web/src/env.mjs and worker/src/env.ts (LANGFUSE_MIGRATION_V4_*).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from langfuse import Langfuse, propagate_attributes
from langfuse.api import MetricsV2Response
from langfuse.api.core import ApiError

from sandbox.langfuse import LangfuseSandbox, iso, to_ms
from tests.support.langfuse_api import NO_RETRY, T0, raw
from tests.support.openapi import Validate

BOTH = pytest.mark.parametrize("profile", ["current", "v4.16"])
V1, V2 = "/api/public/metrics", "/api/public/v2/metrics"


def at(minutes: float) -> str:
    return iso(to_ms(T0 + timedelta(minutes=minutes))) or ""


def count_query(view: str, *filters: dict[str, Any], start: float = 0, end: float = 60) -> str:
    return json.dumps(
        {
            "view": view,
            "metrics": [{"measure": "count", "aggregation": "count"}],
            "filters": list(filters),
            "fromTimestamp": at(start),
            "toTimestamp": at(end),
        }
    )


def name_is(name: str) -> dict[str, Any]:
    return {"column": "name", "operator": "=", "value": name, "type": "string"}


def tags_any(*tags: str, operator: str = "any of") -> dict[str, Any]:
    return {"column": "tags", "operator": operator, "value": list(tags), "type": "arrayOptions"}


def is_root(flag: bool = True) -> dict[str, Any]:
    return {"column": "isRootObservation", "operator": "=", "value": flag, "type": "boolean"}


def count(client: Langfuse, query: str) -> Any:
    answer = client.api.metrics.metrics(query=query, request_options=NO_RETRY)
    assert isinstance(answer, MetricsV2Response)
    (row,) = answer.data
    return row["count_count"]


# --------------------------------------------------------------------------- v2: scores


@BOTH
def test_v2_counts_scores_of_a_name_in_a_window_in_one_request(
    langfuse_sandbox: LangfuseSandbox,
    langfuse_client: Langfuse,
    validate: Validate,
    profile: str,
) -> None:
    langfuse_sandbox.profile = profile
    store = langfuse_sandbox.store
    for minute in (1, 2, 10):
        store.add_score(
            trace_id="t", name="trust", value=0.5, timestamp=T0 + timedelta(minutes=minute)
        )
    store.add_score(trace_id="t", name="flag", value=1, data_type="BOOLEAN", timestamp=T0)
    store.add_score(trace_id="t", name="other", value=1, timestamp=T0 + timedelta(minutes=1))
    for minute in (3, 4):
        store.add_score(
            trace_id="t",
            name="verdict",
            value="correct",
            data_type="CATEGORICAL",
            timestamp=T0 + timedelta(minutes=minute),
        )

    assert count(langfuse_client, count_query("scores-numeric", name_is("trust"), end=5)) == 2
    # both ends inclusive (QueryBuilder: >= from, <= to)
    assert (
        count(langfuse_client, count_query("scores-numeric", name_is("trust"), start=2, end=10))
        == 2
    )
    either = {
        "column": "name",
        "operator": "any of",
        "value": ["trust", "other"],
        "type": "stringOptions",
    }
    assert count(langfuse_client, count_query("scores-numeric", either)) == 4
    assert count(langfuse_client, count_query("scores-numeric")) == 5  # NUMERIC and BOOLEAN
    assert count(langfuse_client, count_query("scores-boolean")) == 1
    assert count(langfuse_client, count_query("scores-categorical", name_is("verdict"))) == 2
    # "scoreName" falls back to the name dimension (QueryBuilder.resolveDimension)
    score_name = {**name_is("verdict"), "column": "scoreName"}
    assert count(langfuse_client, count_query("scores-categorical", score_name, end=3)) == 1
    nothing = count_query("scores-numeric", name_is("nope"))
    wire = raw(langfuse_sandbox, "GET", V2, query=nothing)
    assert wire.json() == {"data": [{"count_count": 0}]}  # one row, a JSON number
    validate("MetricsV2Response", wire.json())

    langfuse_sandbox.set_score_read_lag(600)  # the scores table lags like the v3 read
    langfuse_sandbox.advance_clock(600)  # the scores above are readable again
    store.add_score(trace_id="t", name="trust", value=1, timestamp=T0 + timedelta(minutes=3))
    assert count(langfuse_client, count_query("scores-numeric", name_is("trust"), end=5)) == 2
    langfuse_sandbox.advance_clock(600)
    assert count(langfuse_client, count_query("scores-numeric", name_is("trust"), end=5)) == 3


# --------------------------------------------------------------------------- v2: observations


@BOTH
def test_v2_counts_root_observations_carrying_a_tag(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse, profile: str
) -> None:
    langfuse_sandbox.profile = profile
    store = langfuse_sandbox.store
    for minute, tags in ((1, ["a"]), (2, ["a", "b"]), (3, ["b"]), (70, ["a"])):
        trace_id = store.add_trace(tags=tags, start_time=T0 + timedelta(minutes=minute))
        store.add_observation(trace_id=trace_id, start_time=T0 + timedelta(minutes=minute))
    assert count(langfuse_client, count_query("observations", is_root(), tags_any("a"))) == 2
    assert count(langfuse_client, count_query("observations", is_root(False), tags_any("a"))) == 2
    assert count(langfuse_client, count_query("observations", tags_any("a", "b"))) == 6
    assert (
        count(
            langfuse_client,
            count_query("observations", is_root(), tags_any("a", "b", operator="all of")),
        )
        == 1
    )
    assert (
        count(
            langfuse_client,
            count_query("observations", is_root(), tags_any("a", operator="none of")),
        )
        == 1
    )
    assert count(langfuse_client, count_query("observations", is_root(), end=120)) == 4


# --------------------------------------------------------------------------- v2: refusals


def test_v2_query_refusals_are_worded_as_langfuse_words_them(
    langfuse_sandbox: LangfuseSandbox,
) -> None:
    def get(query: Any) -> httpx.Response:
        text = query if isinstance(query, str) else json.dumps(query)
        return raw(langfuse_sandbox, "GET", V2, query=text)

    base = json.loads(count_query("scores-numeric"))
    traces = get({**base, "view": "traces"})  # v1 only
    assert traces.status_code == 400 and traces.json()["message"] == "Invalid request data"
    assert traces.json()["error"][0]["path"] == ["query", "view"]
    assert get("{nope").json() == {
        "message": "Invalid JSON in query parameter",
        "error": "InvalidRequestError",
    }
    assert raw(langfuse_sandbox, "GET", V2).status_code == 400  # no query at all
    backwards = get({**base, "fromTimestamp": at(10), "toTimestamp": at(5)})
    assert backwards.json()["error"][0]["message"] == "fromTimestamp must be before toTimestamp"

    metric = get({**base, "metrics": [{"measure": "latency", "aggregation": "count"}]})
    assert metric.status_code == 400
    assert metric.json() == {
        "message": "Invalid metric latency. Must be one of count,value",
        "error": "InvalidRequestError",
    }
    tags_as_string = {"column": "tags", "operator": "=", "value": "a", "type": "string"}
    wrong_type = get({**base, "view": "observations", "filters": [tags_as_string]})
    assert wrong_type.status_code == 400
    assert wrong_type.json()["message"] == (
        "Invalid filter for field 'tags': Filter type 'string' is not supported for dimension "
        "type 'string[]'. Expected 'arrayOptions'."
    )
    unknown = get({**base, "filters": [{**name_is("x"), "column": "score"}]})
    assert unknown.status_code == 400
    assert unknown.json()["message"].startswith("Invalid filter column score. Must be one of ")
    bad_operator = get({**base, "filters": [{**name_is("x"), "operator": "any of"}]})
    assert bad_operator.status_code == 400
    assert bad_operator.json()["error"][0]["path"] == ["query", "filters", 0, "operator"]
    # a valid query the sandbox does not compute says so (501), it does not guess
    grouped = get({**base, "dimensions": [{"field": "name"}]})
    assert grouped.status_code == 501 and "does not model" in grouped.json()["message"]


def test_v2_metrics_need_the_opt_in_and_an_events_write_mode(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    langfuse_sandbox.profile = "v4.16"
    query = count_query("scores-numeric")
    assert count(langfuse_client, query) == 0  # opt-in true and events_only: v4.16's defaults
    for setting in ({"preview_opt_in": False}, {"write_mode": "legacy"}):
        langfuse_sandbox.preview_opt_in, langfuse_sandbox.write_mode = True, None
        for key, value in setting.items():
            setattr(langfuse_sandbox, key, value)
        answer = raw(langfuse_sandbox, "GET", V2, query=query)
        assert answer.status_code == 404, setting
        assert answer.json() == {
            "message": "The metrics v2 API is only available in a Langfuse v4 write mode. "
            "Learn more at: https://langfuse.com/docs/v4",
            "error": "LangfuseNotFoundError",
        }
        # the query schema comes first
        assert raw(langfuse_sandbox, "GET", V2, query="{}").status_code == 400


# --------------------------------------------------------------------------- write modes, v1


def _traced(client: Langfuse, name: str, tags: list[str]) -> None:
    with propagate_attributes(tags=tags), client.start_as_current_observation(name=name):
        pass


def test_legacy_write_mode_hides_new_traces_from_v2_and_v1_metrics_still_counts_them(
    langfuse_sandbox: LangfuseSandbox,
    make_langfuse_client: Callable[..., Langfuse],
    validate: Validate,
) -> None:
    lf = langfuse_sandbox
    lf.profile = "v4.16"
    client = make_langfuse_client()
    start = lf.store.now() - timedelta(minutes=1)
    window = json.dumps(
        {
            "view": "traces",
            "metrics": [{"measure": "count", "aggregation": "count"}],
            "filters": [tags_any("nightly", "adhoc")],
            "fromTimestamp": iso(to_ms(start)),
            "toTimestamp": iso(to_ms(start + timedelta(hours=1))),
        }
    )
    _traced(client, "before", ["nightly"])  # v4.16's default write mode: events_only
    client.flush()
    # events_only: no legacy tables, so no v1 metrics (404 before auth)
    refused = httpx.get(f"{lf.url}{V1}", params={"query": window})
    assert refused.status_code == 404
    assert (
        "not available on deployments running in Langfuse v4 events_only mode"
        in (refused.json()["message"])
    )

    lf.write_mode = "legacy"  # LANGFUSE_MIGRATION_V4_WRITE_MODE=legacy
    for i, tags in enumerate((["nightly"], ["adhoc", "x"], ["other"])):
        _traced(client, f"legacy-{i}", tags)
    client.flush()
    assert lf.store.trace_count() == 4

    # v2 observations: 200, but only what reached the events tables
    listed = client.api.observations.get_many(is_root_observation=True, fields="core,basic")
    assert [o.name for o in listed.data] == ["before"]
    tagged = raw(lf, "GET", "/api/public/v2/observations", filter=json.dumps([tags_any("adhoc")]))
    assert tagged.status_code == 200 and tagged.json() == {"data": [], "meta": {}}
    # v1 metrics reads the legacy traces table: the traces written since, with either tag
    answer = raw(lf, "GET", V1, query=window)
    assert answer.status_code == 200
    assert answer.json() == {"data": [{"count_count": 2}]}  # self-hosted: no _deprecation
    validate("legacyMetricsResponse", answer.json())
    assert raw(lf, "GET", V2, query=count_query("observations")).status_code == 404
    assert httpx.get(f"{lf.url}{V1}", params={"query": window}).status_code == 401

    lf.write_mode = "dual"  # both tables from now on
    _traced(client, "dual", ["nightly"])
    client.flush()
    assert raw(lf, "GET", V1, query=window).json()["data"] == [{"count_count": 3}]
    names = {o.name for o in client.api.observations.get_many(is_root_observation=True).data}
    assert names == {"before", "dual"}


def test_v1_metrics_on_cloud_counts_traces_and_carries_the_deprecation(
    langfuse_sandbox: LangfuseSandbox, validate: Validate
) -> None:
    store = langfuse_sandbox.store
    for minute, tags in ((1, ["a"]), (2, ["b"]), (3, ["a", "c"]), (90, ["a"])):
        store.add_trace(name=f"q{minute}", tags=tags, start_time=T0 + timedelta(minutes=minute))
    query = count_query("traces", tags_any("a", "c"), end=60)
    body = raw(langfuse_sandbox, "GET", V1, query=query).json()
    assert body["data"] == [{"count_count": 2}]
    assert body["_deprecation"]["replacement"].startswith("GET /api/public/v2/metrics")
    assert body["_deprecation"]["sunsetAt"] == "2026-11-16"
    validate("legacyMetricsResponse", body)
    by_name = count_query("traces", {**name_is("q2"), "column": "name"})
    assert raw(langfuse_sandbox, "GET", V1, query=by_name).json()["data"] == [{"count_count": 1}]


def test_metrics_rate_limit_buckets(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    langfuse_sandbox.set_rate_limit(per_minute=2, bucket="public-api-v2-metrics")
    langfuse_sandbox.set_rate_limit(per_minute=2, bucket="public-api-metrics")
    query = count_query("scores-numeric")
    assert count(langfuse_client, query) == 0
    with pytest.raises(ApiError) as caught:
        langfuse_client.api.metrics.metrics(query=query, request_options=NO_RETRY)
    assert caught.value.status_code == 429
    v1 = [raw(langfuse_sandbox, "GET", V1, query=count_query("traces")) for _ in range(2)]
    assert [a.status_code for a in v1] == [200, 429]
    assert langfuse_client.api.scores.get_many(request_options=NO_RETRY).data == []
