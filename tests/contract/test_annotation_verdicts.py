"""Reviewers' verdicts on annotation queue items (the sandbox-only route and store method that
play Langfuse's annotation UI) and reading them back through GET /api/public/v3/scores with the
real SDK (5.0.4): source=ANNOTATION, traceId lists, name, authorUserId.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from langfuse import Langfuse
from langfuse.api.core import ApiError

from sandbox.langfuse import LangfuseSandbox
from tests.support.langfuse_api import NO_RETRY, T0, make_configs, raw
from tests.support.openapi import Validate


def verdict(sandbox: LangfuseSandbox, queue_id: str, item_id: str, **body: Any) -> httpx.Response:
    path = f"/sandbox/annotation-queues/{queue_id}/items/{item_id}/score"
    return raw(sandbox, "POST", path, body)


@pytest.fixture
def review(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> tuple[LangfuseSandbox, Langfuse, dict[str, Any], Any, list[str]]:
    """Two traces with a generation each, their score configs and one queue holding them."""
    store = langfuse_sandbox.store
    traces = [
        store.add_trace(start_time=T0 + timedelta(minutes=i), session_id=f"session-{i}")
        for i in range(2)
    ]
    for trace_id in traces:
        store.add_observation(
            trace_id=trace_id, observation_id=f"gen-{trace_id[:6]}", start_time=T0
        )
    configs = make_configs(langfuse_client)
    queue = langfuse_client.api.annotation_queues.create_queue(
        name="review", score_config_ids=[configs["verdict"].id, configs["trust"].id]
    )
    return langfuse_sandbox, langfuse_client, configs, queue, traces


def test_a_verdict_writes_an_annotation_score_and_completes_the_item(
    review: tuple[LangfuseSandbox, Langfuse, dict[str, Any], Any, list[str]],
    validate: Validate,
) -> None:
    lf, client, configs, queue, traces = review
    queues = client.api.annotation_queues
    # the queue keeps its scoreConfigIds (POST answer and GET)
    assert queue.score_config_ids == [configs["verdict"].id, configs["trust"].id]
    assert queues.get_queue(queue.id).score_config_ids == queue.score_config_ids
    item = queues.create_queue_item(queue.id, object_id=traces[0], object_type="TRACE")
    other = queues.create_queue_item(queue.id, object_id=traces[1], object_type="TRACE")

    answer = verdict(lf, queue.id, item.id, configId=configs["verdict"].id, value="correct")
    assert answer.status_code == 200, answer.text
    score = answer.json()["score"]
    validate("ScoreV3", score)
    assert (score["name"], score["value"], score["dataType"]) == (
        "verdict",
        "correct",
        "CATEGORICAL",
    )
    assert (score["source"], score["queueId"], score["authorUserId"]) == (
        "ANNOTATION",
        queue.id,
        "sandbox-reviewer",
    )
    assert score["subject"] == {"kind": "trace", "id": traces[0]}
    assert answer.json()["item"]["status"] == "COMPLETED"
    done = queues.get_queue_item(queue.id, item.id)
    assert done.status == "COMPLETED" and done.completed_at is not None
    assert queues.get_queue_item(queue.id, other.id).status == "PENDING"

    # the store method, the same verdict form: a NUMERIC one on the other trace
    lf.store.annotate(
        queue.id, other.id, config_id=configs["trust"].id, value=0.25, author_user_id="ann"
    )
    client.api.scores.create(request=[{"traceId": traces[0], "name": "trust", "value": 0.9}])

    api = client.api.scores
    annotated = api.get_many(source="ANNOTATION", fields="annotation").data
    assert sorted((s.name, s.queue_id) for s in annotated) == [
        ("trust", queue.id),
        ("verdict", queue.id),
    ]
    assert [s.source for s in api.get_many(source="API").data] == ["API"]
    assert len(api.get_many(source="annotation").data) == 2  # case-insensitive, as csvEnumParam
    both = api.get_many(trace_id=",".join(traces), name="trust").data
    assert sorted(s.source for s in both) == ["ANNOTATION", "API"]
    (mine,) = api.get_many(author_user_id="ann", fields="annotation").data
    assert mine.author_user_id == "ann" and mine.value == pytest.approx(0.25)
    body = raw(lf, "GET", "/api/public/v3/scores", source="ANNOTATION", fields="annotation")
    validate("GetScoresV3Response", body.json())


def test_verdicts_on_observations_and_sessions_and_a_second_verdict_updates(
    review: tuple[LangfuseSandbox, Langfuse, dict[str, Any], Any, list[str]],
) -> None:
    lf, client, configs, queue, traces = review
    queues = client.api.annotation_queues
    gen = f"gen-{traces[1][:6]}"
    on_obs = queues.create_queue_item(queue.id, object_id=gen, object_type="OBSERVATION")
    on_session = queues.create_queue_item(queue.id, object_id="session-0", object_type="SESSION")

    first = lf.store.annotate(
        queue.id, on_obs.id, name="helpful", data_type="BOOLEAN", value="True"
    )
    assert (first.trace_id, first.observation_id, first.value) == (traces[1], gen, 1.0)
    lf.advance_clock(60)
    again = lf.store.annotate(queue.id, on_obs.id, name="helpful", data_type="BOOLEAN", value=False)
    assert again.id == first.id and again.value == 0.0  # updated, not added
    assert again.timestamp > first.timestamp
    session_score = lf.store.annotate(
        queue.id, on_session.id, config_id=configs["flag"].id, value=True
    )
    assert (session_score.session_id, session_score.trace_id) == ("session-0", None)

    rows = client.api.scores.get_many(source="ANNOTATION", fields="subject").data
    assert len(rows) == 2
    subjects = {r.name: r.subject for r in rows}
    assert subjects["helpful"] is not None and subjects["helpful"].kind == "observation"
    assert subjects["flag"] is not None and subjects["flag"].kind == "session"


def test_verdicts_the_config_refuses_are_400_and_leave_the_item_pending(
    review: tuple[LangfuseSandbox, Langfuse, dict[str, Any], Any, list[str]],
) -> None:
    lf, client, configs, queue, traces = review
    item = client.api.annotation_queues.create_queue_item(
        queue.id, object_id=traces[0], object_type="TRACE"
    )
    trust, verdict_config = configs["trust"].id, configs["verdict"].id
    refusals: list[tuple[dict[str, Any], str]] = [
        ({"configId": trust, "value": 1.5}, "Value exceeds maximum value of 1 defined in config"),
        ({"configId": verdict_config, "value": "maybe"}, "does not map to a valid category"),
        ({"configId": trust, "value": 1, "dataType": "BOOLEAN"}, "Data type mismatch"),
        ({"configId": trust, "value": "high"}, "NUMERIC verdicts need a finite number"),
        ({"value": 1}, "name is required without a configId"),
        ({"name": "x", "value": 1, "dataType": "PERCENT"}, "dataType must be one of"),
    ]
    for body, reason in refusals:
        answer = verdict(lf, queue.id, item.id, **body)
        assert answer.status_code == 400, body
        assert reason in answer.json()["message"], (body, answer.json())
    client.api.score_configs.update(trust, is_archived=True)
    archived = verdict(lf, queue.id, item.id, configId=trust, value=0.5)
    assert archived.status_code == 400 and "archived" in archived.json()["message"]
    assert (
        verdict(lf, queue.id, "no-such-item", configId=verdict_config, value="correct").status_code
        == 404
    )
    ghost = client.api.annotation_queues.create_queue_item(
        queue.id, object_id="no-trace", object_type="TRACE"
    )
    assert (
        verdict(lf, queue.id, ghost.id, configId=verdict_config, value="correct").status_code == 404
    )
    assert verdict(lf, queue.id, item.id, value=1, name="n", bogus=1).status_code == 400  # strict
    assert lf.store.queue_item(queue.id, item.id).status == "PENDING"
    assert client.api.scores.get_many(source="ANNOTATION").data == []
    assert lf.faults.count("sandbox.annotate", status=400) == 8
    no_auth = httpx.post(
        f"{lf.url}/sandbox/annotation-queues/{queue.id}/items/{item.id}/score", json={"value": 1}
    )
    assert no_auth.status_code == 401


def test_v3_scores_query_is_strict_like_the_real_route(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    path = "/api/public/v3/scores"
    unknown = raw(langfuse_sandbox, "GET", path, traceIds="t1")  # the wire name is traceId
    assert unknown.status_code == 400
    assert unknown.json() == {
        "message": "Invalid request data",
        "error": [
            {
                "code": "unrecognized_keys",
                "keys": ["traceIds"],
                "path": [],
                "message": 'Unrecognized key: "traceIds"',
            }
        ],
    }
    bad_source = raw(langfuse_sandbox, "GET", path, source="HUMAN")
    assert bad_source.status_code == 400
    assert bad_source.json()["error"][0]["message"] == (
        'Invalid source value: "HUMAN". Allowed: API, EVAL, ANNOTATION'
    )
    assert raw(langfuse_sandbox, "GET", path, userId="u1").status_code == 400
    with pytest.raises(ApiError) as caught:
        langfuse_client.api.scores.get_many(data_type="PERCENT", request_options=NO_RETRY)
    assert caught.value.status_code == 400
    assert raw(langfuse_sandbox, "GET", path, source="EVAL", cursor="").status_code == 200
