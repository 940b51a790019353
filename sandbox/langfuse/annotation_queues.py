"""The annotation-queue routes (queues and their items)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.langfuse.common import (
    QUEUE_ITEM_STATUSES,
    QUEUE_OBJECT_TYPES,
    BadRequest,
    NotFound,
    _json_object,
    _paged,
    _strict_query,
    iso,
)
from sandbox.langfuse.deps import StoreDep
from sandbox.langfuse.records import (
    AnnotationQueueRecord,
    QueueItemRecord,
)
from sandbox.langfuse.store import LangfuseStore
from sandbox.langfuse.validation import (
    _opt_string,
)

router = APIRouter()


@router.post("/api/public/annotation-queues", name="annotation_queues.create")
async def create_queue(request: Request, store: StoreDep) -> Response:
    queue = _create_queue(store, await _json_object(request, _QUEUE_BODY_KEYS))
    return JSONResponse(queue_json(queue))


@router.get("/api/public/annotation-queues", name="annotation_queues.list")
async def list_queues(request: Request, store: StoreDep) -> Response:
    queues = sorted(store.annotation_queues(), key=lambda q: q.seq, reverse=True)
    _strict_query(request.query_params, frozenset({"page", "limit"}))
    return JSONResponse(_paged(queues, request.query_params, queue_json))


@router.get("/api/public/annotation-queues/{queue_id}", name="annotation_queues.get")
async def get_queue(store: StoreDep, queue_id: str) -> Response:
    queue = store.annotation_queue(queue_id)
    if queue is None:
        raise NotFound("Annotation queue not found")
    return JSONResponse(queue_json(queue))


@router.post("/api/public/annotation-queues/{queue_id}/items", name="annotation_queue_items.create")
async def create_queue_item(request: Request, store: StoreDep, queue_id: str) -> Response:
    body = await _json_object(request, _QUEUE_ITEM_BODY_KEYS)
    return JSONResponse(queue_item_json(_create_queue_item(store, queue_id, body)))


@router.get("/api/public/annotation-queues/{queue_id}/items", name="annotation_queue_items.list")
async def list_queue_items(request: Request, store: StoreDep, queue_id: str) -> Response:
    return JSONResponse(_queue_items_page(store, queue_id, request.query_params))


@router.get(
    "/api/public/annotation-queues/{queue_id}/items/{item_id}", name="annotation_queue_items.get"
)
async def get_queue_item(store: StoreDep, queue_id: str, item_id: str) -> Response:
    return JSONResponse(queue_item_json(store.queue_item(queue_id, item_id)))


@router.patch(
    "/api/public/annotation-queues/{queue_id}/items/{item_id}",
    name="annotation_queue_items.update",
)
async def update_queue_item(
    request: Request, store: StoreDep, queue_id: str, item_id: str
) -> Response:
    body = await _json_object(request, _QUEUE_ITEM_PATCH_KEYS)
    item = store.update_queue_item(queue_id, item_id, status=body.get("status"))
    return JSONResponse(queue_item_json(item))


@router.delete(
    "/api/public/annotation-queues/{queue_id}/items/{item_id}",
    name="annotation_queue_items.delete",
)
async def delete_queue_item(store: StoreDep, queue_id: str, item_id: str) -> Response:
    store.delete_queue_item(queue_id, item_id)
    return JSONResponse({"success": True, "message": "Annotation queue item deleted successfully"})


def queue_json(queue: AnnotationQueueRecord) -> dict[str, Any]:
    """One AnnotationQueue."""
    return {
        "id": queue.id,
        "name": queue.name,
        "description": queue.description,
        "scoreConfigIds": list(queue.score_config_ids),
        "createdAt": iso(queue.created_ms),
        "updatedAt": iso(queue.updated_ms),
    }


def queue_item_json(item: QueueItemRecord) -> dict[str, Any]:
    """One AnnotationQueueItem."""
    return {
        "id": item.id,
        "queueId": item.queue_id,
        "objectId": item.object_id,
        "objectType": item.object_type,
        "status": item.status,
        "completedAt": iso(item.completed_ms),
        "createdAt": iso(item.created_ms),
        "updatedAt": iso(item.updated_ms),
    }


_QUEUE_BODY_KEYS = frozenset({"name", "description", "scoreConfigIds"})
_QUEUE_ITEM_BODY_KEYS = frozenset({"objectId", "objectType", "status"})
_QUEUE_ITEM_PATCH_KEYS = frozenset({"status"})


def _create_queue(store: LangfuseStore, body: Mapping[str, Any]) -> AnnotationQueueRecord:
    name, config_ids = body.get("name"), body.get("scoreConfigIds")
    if not isinstance(name, str):
        raise BadRequest("name is required and must be a string")
    if not isinstance(config_ids, list) or not all(isinstance(c, str) for c in config_ids):
        raise BadRequest("scoreConfigIds is required and must be a list of strings")
    return store.create_annotation_queue(
        name=name, score_config_ids=config_ids, description=_opt_string(body, "description")
    )


def _create_queue_item(
    store: LangfuseStore, queue_id: str, body: Mapping[str, Any]
) -> QueueItemRecord:
    object_id, object_type = body.get("objectId"), body.get("objectType")
    if not isinstance(object_id, str):
        raise BadRequest("objectId is required and must be a string")
    if object_type not in QUEUE_OBJECT_TYPES:
        raise BadRequest(f"objectType must be one of {sorted(QUEUE_OBJECT_TYPES)}")
    status = body.get("status") or "PENDING"
    if status not in QUEUE_ITEM_STATUSES:
        raise BadRequest(f"status must be one of {sorted(QUEUE_ITEM_STATUSES)}")
    if store.annotation_queue(queue_id) is None:
        raise NotFound("Annotation queue not found")
    return store.add_queue_item(
        queue_id, object_id=object_id, object_type=object_type, status=status
    )


def _queue_items_page(store: LangfuseStore, queue_id: str, params: Mapping[str, str]) -> Any:
    _strict_query(params, frozenset({"page", "limit", "status"}))
    status = params.get("status") or None
    if status is not None and status not in QUEUE_ITEM_STATUSES:
        raise BadRequest(f"status must be one of {sorted(QUEUE_ITEM_STATUSES)}")
    if store.annotation_queue(queue_id) is None:
        raise NotFound("Annotation queue not found")
    items = [i for i in store.queue_items(queue_id) if status is None or i.status == status]
    items.sort(key=lambda i: i.seq, reverse=True)  # createdAt desc, id desc
    return _paged(items, params, queue_item_json)
