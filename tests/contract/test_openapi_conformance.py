"""The Langfuse sandbox's real HTTP answers validate against Langfuse's OpenAPI spec (v4.16.0).

The spec lives outside the repository (``../shared/reference/``); without it these tests skip.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
from langfuse import Langfuse

from sandbox.langfuse import LangfuseSandbox
from tests.support.langfuse_api import T0, config_score, make_configs, raw
from tests.support.openapi import Validate


def test_the_validator_rejects_a_wrong_shape(validate: Validate) -> None:
    with pytest.raises(AssertionError):
        validate("ObservationsV2Response", {"data": [{"id": "x"}], "meta": {}})
    with pytest.raises(AssertionError):
        validate("GetScoresV3Response", {"data": [{"id": "x", "dataType": "NUMERIC"}]})


@pytest.fixture
def seeded(langfuse_sandbox: LangfuseSandbox) -> LangfuseSandbox:
    store = langfuse_sandbox.store
    for i in range(3):
        trace_id = store.add_trace(
            name=f"chat-{i}",
            tags=["prod", "chat"],
            metadata={"system_prompt": "x" * 300, "team": "a"},
            input={"args": [f"q{i}"], "kwargs": {}},
            output=f"a{i}",
            start_time=T0 + timedelta(minutes=i),
            end_time=T0 + timedelta(minutes=i, seconds=3),
            release="v1",
            user_id="u1",
            session_id="s1",
        )
        obs_id = store.add_observation(
            trace_id=trace_id,
            type="GENERATION",
            name="llm",
            input=[{"role": "user", "content": f"q{i}"}],
            output=f"a{i}",
            start_time=T0 + timedelta(minutes=i, seconds=1),
            end_time=T0 + timedelta(minutes=i, seconds=2),
            model="gpt-4.1-mini",
            model_parameters={"temperature": 0},
            usage_details={"input": 12, "output": 3},
            cost_details={"total": 0.001},
        )
        store.add_score(trace_id=trace_id, name="trust", value=0.5 + i / 10, comment="ok")
        store.add_score(
            trace_id=trace_id,
            observation_id=obs_id,
            name="label",
            value="good",
            data_type="CATEGORICAL",
            metadata={"k": i},
        )
        store.add_score(trace_id=trace_id, name="flag", value=1, data_type="BOOLEAN")
        store.add_score(session_id="s1", name="session-note", value="fine", data_type="TEXT")
    return langfuse_sandbox


def _get(sandbox: LangfuseSandbox, path: str, **params: Any) -> Any:
    answer = httpx.get(
        f"{sandbox.url}{path}", params=params, auth=(sandbox.public_key, sandbox.secret_key)
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    return answer.json()


@pytest.mark.parametrize(
    "fields",
    [
        None,
        "core",
        "core,basic,io",
        "core,basic,time,io,metadata,model,usage,prompt,metrics,trace_context",
    ],
)
def test_v2_observations(seeded: LangfuseSandbox, validate: Validate, fields: str | None) -> None:
    params: dict[str, Any] = {"limit": 4}
    if fields:
        params["fields"] = fields
    body = _get(seeded, "/api/public/v2/observations", **params)
    assert len(body["data"]) == 4 and body["meta"]["cursor"]
    validate("ObservationsV2Response", body)
    last = _get(seeded, "/api/public/v2/observations", limit=4, cursor=body["meta"]["cursor"])
    assert last["meta"] == {}
    validate("ObservationsV2Response", last)


def test_v2_observations_root_filter_and_expanded_metadata(
    seeded: LangfuseSandbox, validate: Validate
) -> None:
    body = _get(
        seeded,
        "/api/public/v2/observations",
        isRootObservation="true",
        fields="core,basic,metadata,trace_context",
        expandMetadata="system_prompt",
        filter=json.dumps(
            [{"type": "arrayOptions", "column": "tags", "operator": "all of", "value": ["chat"]}]
        ),
    )
    assert len(body["data"]) == 3
    validate("ObservationsV2Response", body)


@pytest.mark.parametrize("fields", [None, "details", "subject", "details,subject,annotation"])
def test_v3_scores(seeded: LangfuseSandbox, validate: Validate, fields: str | None) -> None:
    params: dict[str, Any] = {"limit": 100}
    if fields:
        params["fields"] = fields
    body = _get(seeded, "/api/public/v3/scores", **params)
    assert len(body["data"]) == 12
    assert {s["dataType"] for s in body["data"]} == {"NUMERIC", "CATEGORICAL", "BOOLEAN", "TEXT"}
    validate("GetScoresV3Response", body)
    paged = _get(seeded, "/api/public/v3/scores", limit=5, **({"fields": fields} if fields else {}))
    assert paged["meta"]["cursor"]
    validate("GetScoresV3Response", paged)


def test_health_and_projects(seeded: LangfuseSandbox, validate: Validate) -> None:
    health = httpx.get(f"{seeded.url}/api/public/health")
    assert health.status_code == 200
    validate("HealthResponse", health.json())
    validate("Projects", _get(seeded, "/api/public/projects"))


def test_otel_answer_for_json_export(seeded: LangfuseSandbox, validate: Validate) -> None:
    answer = httpx.post(
        f"{seeded.url}/api/public/otel/v1/traces",
        json={"resourceSpans": []},
        auth=(seeded.public_key, seeded.secret_key),
    )
    assert answer.status_code == 200
    validate("OtelTraceResponse", answer.json())


# --------------------------------------------------------------------------- review endpoints


def test_the_validator_rejects_wrong_shapes(validate: Validate) -> None:
    with pytest.raises(AssertionError):
        validate("ScoreConfig", {"id": "x", "name": "n", "dataType": "NUMERIC"})
    with pytest.raises(AssertionError):
        validate("PaginatedAnnotationQueueItems", {"data": [], "meta": {"page": 1}})


def test_review_answers_match_the_spec(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse, validate: Validate
) -> None:
    configs = make_configs(langfuse_client)
    queue = langfuse_client.api.annotation_queues.create_queue(
        name="review", score_config_ids=[c.id for c in configs.values()]
    )
    api = langfuse_client.api.annotation_queues
    item = api.create_queue_item(queue.id, object_id="t1", object_type="TRACE")
    api.create_queue_item(queue.id, object_id="g1", object_type="OBSERVATION", status="COMPLETED")
    base = "/api/public"

    def get(path: str, **params: Any) -> Any:
        answer = raw(langfuse_sandbox, "GET", f"{base}{path}", **params)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("application/json")
        return answer.json()

    validate("ScoreConfigs", get("/score-configs"))
    validate("ScoreConfigs", get("/score-configs", page=2, limit=1))
    for config in configs.values():
        validate("ScoreConfig", get(f"/score-configs/{config.id}"))
    validate("PaginatedAnnotationQueues", get("/annotation-queues"))
    validate("AnnotationQueue", get(f"/annotation-queues/{queue.id}"))
    validate("PaginatedAnnotationQueueItems", get(f"/annotation-queues/{queue.id}/items"))
    validate(
        "PaginatedAnnotationQueueItems",
        get(f"/annotation-queues/{queue.id}/items", status="COMPLETED", limit=1),
    )
    validate("AnnotationQueueItem", get(f"/annotation-queues/{queue.id}/items/{item.id}"))

    patched = raw(
        langfuse_sandbox,
        "PATCH",
        f"{base}/annotation-queues/{queue.id}/items/{item.id}",
        {"status": "COMPLETED"},
    )
    validate("AnnotationQueueItem", patched.json())
    deleted = raw(
        langfuse_sandbox, "DELETE", f"{base}/annotation-queues/{queue.id}/items/{item.id}"
    )
    validate("DeleteAnnotationQueueItemResponse", deleted.json())
    updated = raw(
        langfuse_sandbox, "PATCH", f"{base}/score-configs/{configs['trust'].id}", {"maxValue": 5}
    )
    validate("ScoreConfig", updated.json())

    store = langfuse_sandbox.store
    trace_id = store.add_trace(start_time=T0)
    obs_id = store.add_observation(trace_id=trace_id, start_time=T0)
    langfuse_client.api.scores.create(
        request=[
            config_score(
                trace_id, "trust", 0.5, observationId=obs_id, configId=configs["trust"].id
            ),
            config_score(trace_id, "verdict", "correct", configId=configs["verdict"].id),
        ]
    )
    scores = get("/v3/scores", fields="details,subject,annotation", traceId=trace_id)
    assert len(scores["data"]) == 2
    validate("GetScoresV3Response", scores)


# --------------------------------------------------------------------------- ingestion, metrics


def test_ingestion_metrics_and_projects_answers_match_the_spec(
    langfuse_sandbox: LangfuseSandbox, validate: Validate
) -> None:
    store = langfuse_sandbox.store
    trace_id = store.add_trace(tags=["a"], start_time=T0)
    event = {
        "id": "ev-1",
        "type": "score-create",
        "timestamp": "2025-03-01T12:00:00.000Z",
        "body": {"id": "s-1", "traceId": trace_id, "name": "trust", "value": 0.5},
    }
    validate("IngestionEvent", event)
    ingested = raw(langfuse_sandbox, "POST", "/api/public/ingestion", {"batch": [event, {}]})
    assert ingested.status_code == 207
    validate("IngestionResponse", ingested.json())
    assert ingested.json()["errors"][0]["id"] == "unknown"

    window = {"fromTimestamp": "2025-03-01T00:00:00Z", "toTimestamp": "2025-03-02T00:00:00Z"}
    count = [{"measure": "count", "aggregation": "count"}]
    for path, view, schema in (
        ("/api/public/v2/metrics", "scores-numeric", "MetricsV2Response"),
        ("/api/public/v2/metrics", "observations", "MetricsV2Response"),
        ("/api/public/metrics", "traces", "legacyMetricsResponse"),  # with _deprecation
    ):
        query = json.dumps({"view": view, "metrics": count, **window})
        body = _get(langfuse_sandbox, path, query=query)
        assert body["data"] == [{"count_count": 1}], (path, view)
        validate(schema, body)

    other = langfuse_sandbox.add_project("second")
    answer = httpx.get(
        f"{langfuse_sandbox.url}/api/public/projects", auth=(other.public_key, other.secret_key)
    )
    validate("Projects", answer.json())
    assert answer.json()["data"][0]["id"] == other.project_id
