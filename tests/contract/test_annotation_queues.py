"""Annotation queues and their items through the real Langfuse SDK (5.0.4) against the Langfuse
sandbox, over HTTP; the review endpoints' faults, rate limits, auth and paging checks.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from langfuse import Langfuse
from langfuse.api import (
    AnnotationQueue,
    AnnotationQueueItem,
    AnnotationQueueObjectType,
    AnnotationQueueStatus,
    DeleteAnnotationQueueItemResponse,
    Error,
    MethodNotAllowedError,
    NotFoundError,
    PaginatedAnnotationQueueItems,
    PaginatedAnnotationQueues,
)
from langfuse.api.core import ApiError

from sandbox.faults import Fault
from sandbox.langfuse import ANNOTATION_QUEUE_ENDPOINTS, GENERAL_API_ENDPOINTS, LangfuseSandbox
from tests.support.langfuse_api import NO_RETRY, make_configs, raw

# --------------------------------------------------------------------------- annotation queues


def test_annotation_queue_create_get_list(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    configs = make_configs(langfuse_client)
    api = langfuse_client.api.annotation_queues
    queue = api.create_queue(
        name="low trust review",
        description="traces TLM doubted",
        score_config_ids=[configs["verdict"].id, configs["note"].id],
    )
    assert isinstance(queue, AnnotationQueue)
    assert queue.name == "low trust review" and queue.description == "traces TLM doubted"
    assert queue.score_config_ids == [configs["verdict"].id, configs["note"].id]
    assert api.get_queue(queue.id) == queue

    second = api.create_queue(name="second", score_config_ids=[configs["trust"].id])
    assert second.description is None
    listed = api.list_queues()
    assert isinstance(listed, PaginatedAnnotationQueues)
    assert [q.id for q in listed.data] == [second.id, queue.id]  # newest first
    assert (listed.meta.total_items, listed.meta.total_pages, listed.meta.limit) == (2, 1, 50)
    one = api.list_queues(page=2, limit=1)
    assert [q.id for q in one.data] == [queue.id] and one.meta.total_pages == 2

    assert [q.name for q in langfuse_sandbox.store.annotation_queues()] == [
        "low trust review",
        "second",
    ]
    with pytest.raises(NotFoundError):
        api.get_queue("nope", request_options=NO_RETRY)
    for name in ("annotation_queues.create", "annotation_queues.list", "annotation_queues.get"):
        assert langfuse_sandbox.faults.count(name) >= 1


def test_annotation_queue_create_refusals(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    trust = make_configs(langfuse_client)["trust"]
    api = langfuse_client.api.annotation_queues
    api.create_queue(name="review", score_config_ids=[trust.id])

    # duplicate name: 400 InvalidRequestError (publicAnnotationQueueService.ts, Prisma P2002)
    with pytest.raises(ApiError) as caught:
        api.create_queue(name="review", score_config_ids=[trust.id], request_options=NO_RETRY)
    assert caught.value.status_code == 400
    assert caught.value.body == {
        "message": "A queue with this name already exists.",
        "error": "InvalidRequestError",
    }

    with pytest.raises(Error):  # unknown score config
        api.create_queue(name="other", score_config_ids=["nope"], request_options=NO_RETRY)
    with pytest.raises(Error):  # at least one score config
        api.create_queue(name="other", score_config_ids=[], request_options=NO_RETRY)
    strict = raw(
        langfuse_sandbox,
        "POST",
        "/api/public/annotation-queues",
        {"name": "other", "scoreConfigIds": [trust.id], "color": "red"},
    )
    assert strict.status_code == 400  # unknown keys are refused
    assert len(langfuse_sandbox.store.annotation_queues()) == 1


def test_hobby_plan_queue_limit_is_405(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    langfuse_sandbox.store.max_annotation_queues = 1
    trust = make_configs(langfuse_client)["trust"]
    api = langfuse_client.api.annotation_queues
    api.create_queue(name="one", score_config_ids=[trust.id])
    with pytest.raises(MethodNotAllowedError):
        api.create_queue(name="two", score_config_ids=[trust.id], request_options=NO_RETRY)


def test_annotation_queue_items(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    store = langfuse_sandbox.store
    verdict = make_configs(langfuse_client)["verdict"]
    api = langfuse_client.api.annotation_queues
    queue = api.create_queue(name="review", score_config_ids=[verdict.id])

    first = api.create_queue_item(
        queue.id, object_id="trace-1", object_type=AnnotationQueueObjectType.TRACE
    )
    assert isinstance(first, AnnotationQueueItem)
    assert (first.queue_id, first.object_id, first.object_type) == (queue.id, "trace-1", "TRACE")
    assert first.status == "PENDING" and first.completed_at is None
    again = api.create_queue_item(queue.id, object_id="trace-1", object_type="TRACE")
    assert again.id != first.id  # no de-duplication: the same object queued twice
    obs = api.create_queue_item(queue.id, object_id="gen-1", object_type="OBSERVATION")
    done = api.create_queue_item(
        queue.id,
        object_id="session-1",
        object_type=AnnotationQueueObjectType.SESSION,
        status=AnnotationQueueStatus.COMPLETED,
    )
    assert done.status == "COMPLETED" and done.completed_at is not None

    listed = api.list_queue_items(queue.id)
    assert isinstance(listed, PaginatedAnnotationQueueItems)
    assert [i.id for i in listed.data] == [done.id, obs.id, again.id, first.id]  # newest first
    assert (listed.meta.total_items, listed.meta.page) == (4, 1)
    pending = api.list_queue_items(queue.id, status=AnnotationQueueStatus.PENDING)
    assert [i.id for i in pending.data] == [obs.id, again.id, first.id]
    assert pending.meta.total_items == 3
    paged = api.list_queue_items(queue.id, status="PENDING", page=2, limit=2)
    assert [i.id for i in paged.data] == [first.id]
    assert (paged.meta.total_items, paged.meta.total_pages) == (3, 2)

    assert api.get_queue_item(queue.id, obs.id) == obs
    completed = api.update_queue_item(queue.id, obs.id, status=AnnotationQueueStatus.COMPLETED)
    assert completed.status == "COMPLETED" and completed.completed_at is not None
    assert completed.updated_at >= obs.updated_at
    reopened = api.update_queue_item(queue.id, obs.id, status="PENDING")
    assert reopened.status == "PENDING"
    assert reopened.completed_at == completed.completed_at  # Langfuse leaves completedAt

    deleted = api.delete_queue_item(queue.id, again.id)
    assert isinstance(deleted, DeleteAnnotationQueueItemResponse)
    assert deleted.success is True and deleted.message
    assert [i.id for i in store.queue_items(queue.id)] == [first.id, obs.id, done.id]
    assert store.queue_items("nope") == []

    missing: list[Callable[[], object]] = [
        lambda: api.get_queue_item(queue.id, again.id, request_options=NO_RETRY),
        lambda: api.delete_queue_item(queue.id, again.id, request_options=NO_RETRY),
        lambda: api.update_queue_item(queue.id, "nope", status="PENDING", request_options=NO_RETRY),
        lambda: api.list_queue_items("nope", request_options=NO_RETRY),
        lambda: api.create_queue_item(
            "nope", object_id="t", object_type="TRACE", request_options=NO_RETRY
        ),
        lambda: api.get_queue_item("nope", first.id, request_options=NO_RETRY),
    ]
    for call in missing:
        with pytest.raises(NotFoundError):
            call()

    bad = [
        ("POST", f"/api/public/annotation-queues/{queue.id}/items", {"objectId": "t"}),
        (
            "POST",
            f"/api/public/annotation-queues/{queue.id}/items",
            {"objectId": "t", "objectType": "DATASET"},
        ),
        (
            "POST",
            f"/api/public/annotation-queues/{queue.id}/items",
            {"objectId": "t", "objectType": "TRACE", "status": "DONE"},
        ),
        ("PATCH", f"/api/public/annotation-queues/{queue.id}/items/{first.id}", {"status": "X"}),
        (
            "PATCH",
            f"/api/public/annotation-queues/{queue.id}/items/{first.id}",
            {"objectId": "other"},
        ),
    ]
    for method, path, body in bad:
        assert raw(langfuse_sandbox, method, path, body).status_code == 400, (method, body)
    assert (
        raw(
            langfuse_sandbox, "GET", f"/api/public/annotation-queues/{queue.id}/items", status="X"
        ).status_code
        == 400
    )
    assert len(store.queue_items(queue.id)) == 3

    counts = {
        name: langfuse_sandbox.faults.count(f"annotation_queue_items.{name}")
        for name in ("create", "list", "get", "update", "delete")
    }
    assert all(counts.values()), counts


# --------------------------------------------------------------------------- faults, rate limit


def test_review_endpoints_take_faults_and_their_rate_limits(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    assert {
        "score_configs.create",
        "score_configs.list",
        "score_configs.get",
        "score_configs.update",
    } <= GENERAL_API_ENDPOINTS
    names = {
        "annotation_queues.create",
        "annotation_queues.list",
        "annotation_queues.get",
        "annotation_queue_items.create",
        "annotation_queue_items.list",
        "annotation_queue_items.get",
        "annotation_queue_items.update",
        "annotation_queue_items.delete",
    }
    assert names == ANNOTATION_QUEUE_ENDPOINTS  # their own bucket ("annotation-queues")
    assert not names & GENERAL_API_ENDPOINTS

    langfuse_sandbox.faults.set("annotation_queues.list", Fault(status=503, first=1))
    with pytest.raises(ApiError) as caught:
        langfuse_client.api.annotation_queues.list_queues(request_options=NO_RETRY)
    assert caught.value.status_code == 503
    assert langfuse_client.api.annotation_queues.list_queues().data == []

    limit = langfuse_sandbox.set_rate_limit(per_minute=3)  # the third point is refused
    api = langfuse_client.api.score_configs
    api.get()
    api.get()
    with pytest.raises(ApiError) as caught:
        api.get(request_options=NO_RETRY)
    assert caught.value.status_code == 429
    assert limit.endpoints is not None and "score_configs.get" in limit.endpoints
    assert "annotation_queue_items.create" not in limit.endpoints


def test_review_endpoints_need_auth(langfuse_sandbox: LangfuseSandbox) -> None:
    for path in ("/api/public/score-configs", "/api/public/annotation-queues"):
        assert httpx.get(f"{langfuse_sandbox.url}{path}").status_code == 401


def test_paging_params_are_checked(langfuse_sandbox: LangfuseSandbox) -> None:
    for params in ({"page": 0}, {"limit": 101}, {"limit": 0}, {"page": "x"}):
        for path in ("/api/public/score-configs", "/api/public/annotation-queues"):
            answer = raw(langfuse_sandbox, "GET", path, **params)
            assert answer.status_code == 400, (path, params)
    # the annotation-queue list queries are strict; the score-config one is not
    assert raw(langfuse_sandbox, "GET", "/api/public/annotation-queues", x=1).status_code == 400
    assert raw(langfuse_sandbox, "GET", "/api/public/score-configs", x=1).status_code == 200
