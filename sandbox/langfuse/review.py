"""SANDBOX-ONLY route (no Langfuse server has it): play the reviewer of an annotation queue.

``POST /sandbox/annotation-queues/{queueId}/items/{itemId}/score`` with the project's key pair
and ``{"value": ..., "name"?, "dataType"?, "configId"?, "comment"?, "authorUserId"?,
"environment"?}`` writes what Langfuse's annotation UI writes for a reviewer's verdict (an
ANNOTATION-source score on the item's object, see ``LangfuseStore.annotate``) and marks the item
COMPLETED. Answer 200 ``{"score": <ScoreV3, every field group>, "item": <AnnotationQueueItem>}``;
404 for an unknown queue, item, config or object; 400 for a verdict the config refuses. Its
fault endpoint name is ``sandbox.annotate``; it is in no rate-limit bucket.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.langfuse.annotation_queues import queue_item_json
from sandbox.langfuse.common import SCORE_FIELD_GROUPS, BadRequest, _json_object
from sandbox.langfuse.deps import StoreDep
from sandbox.langfuse.scores import score_json
from sandbox.langfuse.store_review import DEFAULT_REVIEWER

router = APIRouter()

SANDBOX_PREFIX = "/sandbox"
_BODY_KEYS = frozenset(
    {"value", "name", "dataType", "configId", "comment", "authorUserId", "environment"}
)


@router.post(
    f"{SANDBOX_PREFIX}/annotation-queues/{{queue_id}}/items/{{item_id}}/score",
    name="sandbox.annotate",
)
async def annotate(request: Request, store: StoreDep, queue_id: str, item_id: str) -> Response:
    body = await _json_object(request, _BODY_KEYS)
    if "value" not in body:
        raise BadRequest("value is required")
    for key in ("name", "dataType", "configId", "comment", "authorUserId", "environment"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise BadRequest(f"{key} must be a string")
    score = store.annotate(
        queue_id,
        item_id,
        value=body["value"],
        name=body.get("name"),
        data_type=body.get("dataType"),
        config_id=body.get("configId"),
        comment=body.get("comment"),
        author_user_id=body.get("authorUserId") or DEFAULT_REVIEWER,
        environment=body.get("environment") or "default",
    )
    return JSONResponse(
        {
            "score": score_json(score, set(SCORE_FIELD_GROUPS), store.project_id),
            "item": queue_item_json(store.queue_item(queue_id, item_id)),
        }
    )
