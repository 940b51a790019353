"""POST /api/public/ingestion with score-create events on the Langfuse sandbox, over HTTP (SDK 5
has no client for this route), against what the v4.16.0 source does
(web/src/pages/api/public/ingestion.ts, packages/shared/src/server/ingestion/processEventBatch.ts
and types.ts, worker/src/services/IngestionService/index.ts).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
from langfuse import Langfuse

from sandbox.faults import Fault
from sandbox.langfuse import (
    INGESTION_ENDPOINTS,
    INGESTION_MAX_BODY_BYTES,
    INGESTION_SUSPENDED,
    RATE_LIMIT_BUCKETS,
    LangfuseSandbox,
    iso,
    to_ms,
)
from tests.support.langfuse_api import NO_RETRY, T0, raw
from tests.support.openapi import Validate

BOTH = pytest.mark.parametrize("profile", ["current", "v4.16"])
PATH = "/api/public/ingestion"


def at(minutes: float) -> str:
    """An event timestamp ``minutes`` after T0."""
    return iso(to_ms(T0 + timedelta(minutes=minutes))) or ""


def score_event(event_id: str, minutes: float, **body: Any) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "score-create",
        "timestamp": at(minutes),
        "body": {"traceId": "t1", "name": "trust", "value": 0.5, **body},
    }


def post(sandbox: LangfuseSandbox, batch: list[Any]) -> httpx.Response:
    return raw(sandbox, "POST", PATH, {"batch": batch})


@BOTH
def test_score_events_answer_207_one_result_per_event(
    langfuse_sandbox: LangfuseSandbox,
    langfuse_client: Langfuse,
    validate: Validate,
    profile: str,
) -> None:
    langfuse_sandbox.profile = profile
    batch = [
        score_event("ev-late", 2, id="s-late", value=0.9, comment="late"),
        score_event("ev-early", 1, id="s-early", dataType="NUMERIC"),
        score_event("ev-bad", 3, id="s-bad", name=""),  # NonEmptyString
        score_event("ev-no-id", 0),  # no body.id: 201, but never queued
        {"id": "ev-log", "type": "sdk-log", "timestamp": at(4), "body": {"log": "hi"}},
        {"id": "ev-what", "type": "score-delete", "timestamp": at(5), "body": {}},
    ]
    for event in batch[:5]:
        validate("IngestionEvent", event)
    answer = post(langfuse_sandbox, batch)
    assert answer.status_code == 207
    body = answer.json()
    validate("IngestionResponse", body)
    # the EVENT ids, in event-timestamp order; sdk-log gets no result at all
    assert body["successes"] == [
        {"id": "ev-no-id", "status": 201},
        {"id": "ev-early", "status": 201},
        {"id": "ev-late", "status": 201},
    ]
    errors = {e["id"]: e for e in body["errors"]}
    assert set(errors) == {"ev-bad", "ev-what"}
    assert all(e["status"] == 400 for e in errors.values())
    if profile == "v4.16":  # events_only, v4.16's default write mode: refused before the schema
        assert errors["ev-what"]["message"] == "Event type not accepted"
    else:
        assert errors["ev-what"]["message"] == "Invalid request data"
    assert errors["ev-bad"]["message"] == "Invalid request data"
    issues = json.loads(errors["ev-bad"]["error"])  # zod's issues, as ZodError.message
    assert issues[0]["path"] == ["body", "name"] and issues[0]["code"] == "too_small"

    # stored: the two with a body id, timestamped by their events, source API
    rows = langfuse_client.api.scores.get_many(fields="details").data
    assert [(r.id, r.timestamp, r.source) for r in rows] == [
        ("s-late", T0 + timedelta(minutes=2), "API"),
        ("s-early", T0 + timedelta(minutes=1), "API"),
    ]
    assert rows[0].comment == "late" and rows[0].value == pytest.approx(0.9)
    assert len(langfuse_sandbox.store.all_scores()) == 2


@BOTH
def test_events_of_one_score_id_keep_one_row_and_the_first_timestamp(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse, profile: str
) -> None:
    langfuse_sandbox.profile = profile
    api = langfuse_client.api.scores
    # two events of one id in one batch: merged in event-timestamp order
    post(
        langfuse_sandbox,
        [
            score_event("e2", 5, id="s", value=0.2, metadata={"b": 2}),
            score_event("e1", 1, id="s", value=0.1, metadata={"a": 1}),
        ],
    )
    (row,) = api.get_many(id="s", fields="details").data
    assert row.timestamp == T0 + timedelta(minutes=1)
    assert row.value == pytest.approx(0.2) and row.metadata == {"a": 1, "b": 2}
    # a day later, again: still one row, the first timestamp, the newest value
    post(langfuse_sandbox, [score_event("e3", 24 * 60, id="s", value=0.7, traceId="t1")])
    (row,) = api.get_many(id="s").data
    assert row.timestamp == T0 + timedelta(minutes=1) and row.value == pytest.approx(0.7)
    assert len(langfuse_sandbox.store.all_scores()) == 1


def test_v416_post_scores_and_ingestion_share_one_row_per_id(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    langfuse_sandbox.profile = "v4.16"
    single = raw(
        langfuse_sandbox, "POST", "/api/public/scores", {"id": "s", "traceId": "t", "name": "n"}
    )
    assert single.status_code == 400  # no value
    single = raw(
        langfuse_sandbox,
        "POST",
        "/api/public/scores",
        {"id": "s", "traceId": "t", "name": "n", "value": 1},
    )
    assert single.status_code == 200
    (first,) = langfuse_sandbox.store.all_scores()
    later = iso(to_ms(langfuse_sandbox.store.now() + timedelta(days=2))) or ""
    event = score_event("e", 0, id="s", traceId="t", name="n", value=0)
    event["timestamp"] = later
    assert post(langfuse_sandbox, [event]).status_code == 207
    (row,) = langfuse_client.api.scores.get_many(id="s").data
    assert row.timestamp == first.timestamp and row.value == 0


def test_config_problems_and_annotation_without_config_are_dropped_after_the_201(
    langfuse_sandbox: LangfuseSandbox,
) -> None:
    config = langfuse_sandbox.store.add_score_config(name="trust", min_value=0, max_value=1)
    answer = post(
        langfuse_sandbox,
        [
            score_event("ok", 0, id="ok", configId=config.id, value=0.5),
            score_event("range", 1, id="range", configId=config.id, value=3),
            score_event("ann", 2, id="ann", source="ANNOTATION"),
            score_event("eval", 3, id="eval", source="EVAL"),
        ],
    ).json()
    assert [s["id"] for s in answer["successes"]] == ["ok", "range", "ann", "eval"]
    assert answer["errors"] == []
    assert {s.id: s.source for s in langfuse_sandbox.store.all_scores()} == {
        "ok": "API",
        "eval": "EVAL",
    }
    reasons = {d.score.id: d.reason for d in langfuse_sandbox.dropped_scores}
    assert "exceeds maximum value" in reasons["range"]
    assert "configId is required when source is ANNOTATION" in reasons["ann"]


def test_schema_errors_are_per_event(langfuse_sandbox: LangfuseSandbox) -> None:
    bad: dict[str, Any] = {
        "no-ts": {"id": "no-ts", "type": "score-create", "body": {"traceId": "t", "name": "n"}},
        "naive-ts": score_event("naive-ts", 0) | {"timestamp": "2025-03-01T12:00:00"},
        "bool": score_event("bool", 0, dataType="BOOLEAN", value=0.5),
        "type": score_event("type", 0, dataType="NUMERIC", value="high"),
        "subject": score_event("subject", 0, sessionId="s1"),  # traceId and sessionId
        "dtype": score_event("dtype", 0, dataType="PERCENT"),
    }
    answer = post(langfuse_sandbox, [*bad.values(), "not an event"]).json()
    assert answer["successes"] == []
    ids = [e["id"] for e in answer["errors"]]
    assert ids == [*bad, "unknown"]
    paths = {e["id"]: json.loads(e["error"])[0]["path"] for e in answer["errors"]}
    assert paths["no-ts"] == ["timestamp"] and paths["naive-ts"] == ["timestamp"]
    assert paths["bool"] == paths["type"] == ["body", "value"]
    assert paths["subject"][:2] == ["body", "traceId"]
    assert paths["dtype"] == ["body", "dataType"]
    assert langfuse_sandbox.store.all_scores() == []


def test_body_limit_and_batch_shape(langfuse_sandbox: LangfuseSandbox) -> None:
    url = f"{langfuse_sandbox.url}{PATH}"
    auth = (langfuse_sandbox.public_key, langfuse_sandbox.secret_key)
    headers = {"content-type": "application/json"}
    # Next.js's bodyParser sizeLimit "4.5mb": 413, its text (not JSON)
    comment = "x" * INGESTION_MAX_BODY_BYTES
    big = json.dumps({"batch": [score_event("big", 0, id="big", comment=comment)]}).encode()
    assert len(big) > INGESTION_MAX_BODY_BYTES
    too_large = httpx.post(url, content=big, headers=headers, auth=auth)
    assert too_large.status_code == 413 and too_large.text == "Body exceeded 4.5mb limit"
    just_under = json.dumps(
        {"batch": [score_event("big", 0, id="big", comment=comment[:-1000])]}
    ).encode()
    assert 4 * 2**20 < len(just_under) <= INGESTION_MAX_BODY_BYTES  # over the scores' 1 MB
    assert httpx.post(url, content=just_under, headers=headers, auth=auth).status_code == 207
    broken = httpx.post(url, content=b"{nope", headers=headers, auth=auth)
    assert broken.status_code == 400 and broken.text == "Invalid JSON"
    for payload, problem in (
        ({"events": []}, "Invalid input: expected array, received undefined"),
        ([], "Invalid input: expected object, received array"),
    ):
        answer = httpx.post(url, json=payload, auth=auth)
        assert answer.status_code == 400
        assert answer.json() == {"message": "Invalid request data", "errors": [problem]}
    empty = httpx.post(url, json={"batch": []}, auth=auth)
    assert empty.status_code == 207 and empty.json() == {"successes": [], "errors": []}
    assert httpx.post(url, json={"batch": []}).status_code == 401


@BOTH
def test_other_event_types_need_a_write_mode_that_takes_them(
    langfuse_sandbox: LangfuseSandbox, profile: str
) -> None:
    langfuse_sandbox.profile = profile
    trace = {"id": "ev-t", "type": "trace-create", "timestamp": at(0), "body": {"id": "t9"}}
    answer = post(langfuse_sandbox, [trace, score_event("ev-s", 1, id="s")]).json()
    if profile == "v4.16":  # events_only by default
        assert answer["successes"] == [{"id": "ev-s", "status": 201}]
        (refused,) = answer["errors"]
        assert refused["id"] == "ev-t" and refused["message"] == "Event type not accepted"
        assert "LANGFUSE_MIGRATION_V4_WRITE_MODE is events_only" in refused["error"]
        langfuse_sandbox.write_mode = "dual"
        answer = post(langfuse_sandbox, [trace]).json()
    assert answer["errors"] == []
    assert {"id": "ev-t", "status": 201} in answer["successes"]
    # acknowledged as the server does; the sandbox stores score events only
    assert [e["id"] for e in langfuse_sandbox.store.ignored_events] == ["ev-t"]


def test_ingestion_has_its_own_rate_limit_bucket_and_fault_name(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    assert RATE_LIMIT_BUCKETS["ingestion"] == INGESTION_ENDPOINTS == {"ingestion", "otel"}
    langfuse_sandbox.set_rate_limit(per_minute=2)  # the general API: 1 call a window
    langfuse_sandbox.set_rate_limit(per_minute=3, bucket="ingestion")  # 2 calls a window
    assert [post(langfuse_sandbox, []).status_code for _ in range(3)] == [207, 207, 429]
    langfuse_client.api.scores.get_many(request_options=NO_RETRY)  # its own bucket: not spent

    langfuse_sandbox.faults.clear()
    langfuse_sandbox.faults.set("ingestion", Fault(status=503, first=1))
    assert [post(langfuse_sandbox, []).status_code for _ in range(2)] == [503, 207]
    assert langfuse_sandbox.faults.count("ingestion", status=503) == 1


@BOTH
def test_suspended_ingestion_is_403_on_every_write_route(
    langfuse_sandbox: LangfuseSandbox, profile: str
) -> None:
    langfuse_sandbox.profile = profile
    other = langfuse_sandbox.add_project("not suspended")
    langfuse_sandbox.set_ingestion_suspended()
    refused = post(langfuse_sandbox, [score_event("e", 0, id="s")])
    assert refused.status_code == 403
    assert refused.json() == {"error": "ForbiddenError", "message": INGESTION_SUSPENDED}
    assert INGESTION_SUSPENDED.startswith("Ingestion suspended: Usage threshold exceeded")
    score = {"id": "s", "traceId": "t", "name": "n", "value": 1}
    scores = raw(
        langfuse_sandbox, "POST", "/api/public/scores", score if profile == "v4.16" else [score]
    )
    assert scores.status_code == 403
    assert scores.json() == {"message": INGESTION_SUSPENDED, "error": "ForbiddenError"}
    otel = raw(langfuse_sandbox, "POST", "/api/public/otel/v1/traces", {"resourceSpans": []})
    assert otel.status_code == 403
    assert langfuse_sandbox.store.all_scores() == []
    if profile == "v4.16":  # the body schema is checked before the handler's 403
        bad = raw(langfuse_sandbox, "POST", "/api/public/scores", {"traceId": "t", "name": "n"})
        assert bad.status_code == 400
    # another project's key is not suspended
    answer = httpx.post(
        f"{langfuse_sandbox.url}{PATH}",
        json={"batch": [score_event("e", 0, id="s")]},
        auth=(other.public_key, other.secret_key),
    )
    assert answer.status_code == 207 and [s.id for s in other.store.all_scores()] == ["s"]
    langfuse_sandbox.set_ingestion_suspended(False)
    assert post(langfuse_sandbox, [score_event("e", 0, id="s")]).status_code == 207
