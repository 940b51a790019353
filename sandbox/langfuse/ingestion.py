"""POST /api/public/ingestion: a batch of ingestion events, answered 207 with one result per event.

Modelled on the v4.16.0 source:

- ``web/src/pages/api/public/ingestion.ts``: body up to 4.5 MB (Next.js answers 413 ``Body
  exceeded 4.5mb limit`` in plain text above it, ``Invalid JSON`` for a broken body); auth; a
  suspended key is a 403 ``{"error":"ForbiddenError","message":"Ingestion suspended: ..."}``;
  its own rate-limit resource "ingestion" (Hobby 1000/min, shared with OTLP); the body must be
  ``{"batch": [...], "metadata"?}`` (else 400 ``{"message":"Invalid request data",
  "errors":[...]}``);
  in ``events_only`` write mode (v4.16's default) every event but score-create and sdk-log is
  refused per event (400 "Event type not accepted").
- ``packages/shared/src/server/ingestion/processEventBatch.ts``: each event is checked against
  the event schema (``types.ts``: envelope ``id``, ``timestamp`` (ISO with offset), ``type``,
  ``body``); a bad one is an error ``{"id": <event id or "unknown">, "status": 400, "message":
  "Invalid request data", "error": <zod's issues as JSON>}``; sdk-log events are dropped without
  a result; every other event is a success ``{"id": <EVENT id>, "status": 201}``, listed in
  event-timestamp order (update events last). Events are queued by ``body.id``: an event whose
  body has no id is answered 201 but never queued, so never stored.
- ``worker/src/services/IngestionService/index.ts``: a score's ``timestamp`` is its event's
  ``timestamp`` (the score body has none); events of one score id merge into one row
  (``LangfuseStore.upsert_score(merge_by_id=True)``); config problems drop the score silently.

The sandbox stores score-create events only; other valid events are answered as the server
does and kept in ``store.ignored_events``.

Fault knob (SANDBOX ONLY): ``Fault(reject_trace_ids=...)`` on ``"ingestion"`` answers each
score-create event whose body's ``traceId`` is in the set with a per-event error (status 400,
processEventBatch's shape) and stores nothing for it, as the server does for an event it
cannot take; the other events of the batch are handled as usual.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from sandbox.langfuse.common import (
    INGESTION_BODY_TOO_LARGE,
    INGESTION_MAX_BODY_BYTES,
    INGESTION_SUSPENDED,
    TEXT_SCORE_MAX,
    BadRequest,
    parse_iso,
)
from sandbox.langfuse.deps import FaultsDep, StoreDep
from sandbox.langfuse.store import LangfuseStore
from sandbox.langfuse.validation import validate_score

router = APIRouter()

EVENT_TYPES = (
    "trace-create",
    "score-create",
    "event-create",
    "span-create",
    "span-update",
    "generation-create",
    "generation-update",
    "agent-create",
    "tool-create",
    "chain-create",
    "retriever-create",
    "evaluator-create",
    "embedding-create",
    "guardrail-create",
    "sdk-log",
    "dataset-run-item-create",
    "observation-create",
    "observation-update",
)
UPDATE_EVENT_TYPES = frozenset({"generation-update", "span-update", "observation-update"})
SCORE_DATA_TYPES = ("NUMERIC", "CATEGORICAL", "BOOLEAN", "CORRECTION", "TEXT")
SCORE_SOURCES = ("API", "EVAL", "ANNOTATION")
EVENTS_ONLY_REMEDIATION = " ".join(
    (
        "Upgrade the client or integration to a v4-compatible SDK or OTLP ingestion path.",
        "As a temporary migration bridge, set LANGFUSE_MIGRATION_V4_WRITE_MODE=dual on both the "
        "web and worker services and redeploy.",
        "Docs: https://langfuse.com/self-hosting/upgrade/upgrade-guides/upgrade-v3-to-v4",
    )
)
SUBJECT_RULE = (
    "Provide exactly one of the following: traceId (with optional observationId), sessionId or "
    "datasetRunId. ObservationId requires traceId."
)
# z.iso.datetime({ offset: true })
_ISO_DATETIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)$"
)
_MISSING: Any = object()  # a key the object does not have (zod: "received undefined")
_OPTIONAL_STRINGS = (
    "traceId",
    "sessionId",
    "datasetRunId",
    "observationId",
    "comment",
    "executionTraceId",
    "queueId",
)


@router.post("/api/public/ingestion", name="ingestion")
async def ingestion(request: Request, store: StoreDep, faults: FaultsDep) -> Response:
    body = await request.body()
    if len(body) > INGESTION_MAX_BODY_BYTES:
        return PlainTextResponse(INGESTION_BODY_TOO_LARGE, status_code=413)
    payload: Any = body.decode(errors="replace")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in ("application/json", "application/ld+json"):
        try:
            payload = json.loads(body) if body.strip() else {}  # Next: an empty body is {}
        except ValueError:
            return PlainTextResponse("Invalid JSON", status_code=400)
    if store.ingestion_suspended:
        return JSONResponse(
            {"error": "ForbiddenError", "message": INGESTION_SUSPENDED}, status_code=403
        )
    problems = _batch_problems(payload)
    if problems:
        return JSONResponse(
            {"message": "Invalid request data", "errors": problems}, status_code=400
        )
    fault = faults.faults.get("ingestion")
    refused = fault.reject_trace_ids if fault else set()
    return JSONResponse(process_event_batch(store, payload["batch"], refused), status_code=207)


def process_event_batch(
    store: LangfuseStore, batch: list[Any], refused_traces: set[str] | None = None
) -> dict[str, Any]:
    """The 207 body for ``batch`` (ingestion.ts + processEventBatch), storing its scores;
    score events for ``refused_traces`` get a per-event error (a fault knob)."""
    rejected: list[dict[str, Any]] = []
    if store.write_mode == "events_only":
        batch, rejected = _events_only(batch)
    if refused_traces:
        batch, refused = _refused(batch, refused_traces)
        rejected += refused
    errors: list[dict[str, Any]] = []
    valid: list[dict[str, Any]] = []
    for event in batch:
        issues = event_issues(event)
        if issues:
            event_id = event.get("id") if isinstance(event, dict) else None
            errors.append(
                {
                    "id": event_id if isinstance(event_id, str) else "unknown",
                    "status": 400,
                    "message": "Invalid request data",
                    "error": json.dumps(issues, indent=2),  # ZodError.message
                }
            )
        elif event["type"] != "sdk-log":  # logged and left out, no result
            valid.append(event)
    ordered = sorted(  # sortBatch: by timestamp, update events last (stable, as JS's sort)
        valid,
        key=lambda e: (e["type"] in UPDATE_EVENT_TYPES, _event_ms(e)),
    )
    for event in ordered:
        if event["type"] == "score-create":
            _store_score_event(store, event)
        else:
            with store._lock:
                store.ignored_events.append(event)
    successes = [{"id": e["id"], "status": 201} for e in ordered]
    return {"successes": successes, "errors": errors + rejected}


# --------------------------------------------------------------------------- the score event


def _store_score_event(store: LangfuseStore, event: Mapping[str, Any]) -> None:
    body: dict[str, Any] = event["body"]
    if not body.get("id"):
        return  # processEventBatch queues by body.id: no id, nothing queued, nothing stored
    item = {
        key: body[key]
        for key in ("id", "name", "value", "dataType", "metadata", "source", "configId")
        if body.get(key) is not None
    }
    item.update({key: body[key] for key in _OPTIONAL_STRINGS if body.get(key)})
    item["environment"] = _public_environment(body.get("environment"))
    item["timestamp"] = event["timestamp"]  # the score's timestamp is the event's
    try:
        score = validate_score(item, now_ms=store.now_ms(), ingestion=True)
    except BadRequest as e:  # the event schema let it through; the worker would not store it
        with store._lock:
            store.ignored_events.append({**event, "sandbox_reason": str(e)})
        return
    store.ingest_score(item, score, merge_by_id=True)


def _public_environment(value: Any) -> str:
    """PublicEnvironmentName (types.ts): lower-cased, "langfuse" prefixes stripped, at most 40
    characters, else "default" (``.catch``: never an error)."""
    if not isinstance(value, str):
        return "default"
    stripped = re.sub(r"^(?:langfuse[-_]?)+", "", value.lower())[:40]
    return stripped if stripped and re.fullmatch(r"[a-z0-9_-]+", stripped) else "default"


def _event_ms(event: Mapping[str, Any]) -> int:
    try:
        return parse_iso(str(event["timestamp"]))
    except ValueError:
        return 0


# --------------------------------------------------------------------------- request checks


def _batch_problems(payload: Any) -> list[str]:
    """``z.object({batch: z.array(z.unknown()), metadata: jsonSchema.nullish()})``: the issue
    messages (ingestion.ts answers their ``message`` list as ``errors``)."""
    if not isinstance(payload, dict):
        return [f"Invalid input: expected object, received {_received(payload)}"]
    batch = payload.get("batch", _MISSING)
    if not isinstance(batch, list):
        return [f"Invalid input: expected array, received {_received(batch)}"]
    return []


def _events_only(batch: list[Any]) -> tuple[list[Any], list[dict[str, Any]]]:
    """filterBatchForEventsOnly (ingestion.ts): only score-create and sdk-log pass."""
    kept: list[Any] = []
    rejected: list[dict[str, Any]] = []
    for event in batch:
        obj = event if isinstance(event, dict) else {}
        kind = obj.get("type") if isinstance(obj.get("type"), str) else None
        event_id = obj.get("id") if isinstance(obj.get("id"), str) else "unknown"
        if kind in ("score-create", "sdk-log"):
            kept.append(event)
            continue
        rejected.append(
            {
                "id": event_id,
                "status": 400,
                "message": "Event type not accepted",
                "error": f'Event type "{kind or "unknown"}" is not accepted by '
                "/api/public/ingestion when LANGFUSE_MIGRATION_V4_WRITE_MODE is events_only. "
                f"This endpoint only accepts score and log events. {EVENTS_ONLY_REMEDIATION}",
            }
        )
    return kept, rejected


def _refused(batch: list[Any], traces: set[str]) -> tuple[list[Any], list[dict[str, Any]]]:
    """The fault knob: score-create events for ``traces`` answered with a per-event error."""
    kept: list[Any] = []
    refused: list[dict[str, Any]] = []
    for event in batch:
        body = event.get("body") if isinstance(event, dict) else None
        trace = body.get("traceId") if isinstance(body, dict) else None
        if event.get("type") == "score-create" and trace in traces and not event_issues(event):
            refused.append(
                {
                    "id": event["id"],
                    "status": 400,
                    "message": "Invalid request data",
                    "error": f"Score rejected: trace {trace} is not accepting scores",
                }
            )
        else:
            kept.append(event)
    return kept, refused


def event_issues(event: Any) -> list[dict[str, Any]]:
    """zod's issues for one event against the public ingestion event schema (types.ts); the
    body is checked in full for score-create, as an object for the other types."""
    if not isinstance(event, dict):
        return [_type_issue([], "object", event)]
    kind = event.get("type")
    if kind not in EVENT_TYPES:
        return [
            {
                "code": "invalid_union",
                "errors": [],
                "note": "No matching discriminator",
                "discriminator": "type",
                "path": ["type"],
                "message": "Invalid input",
            }
        ]
    issues = _id_issues(event.get("id", _MISSING), ["id"], required=True)
    timestamp = event.get("timestamp", _MISSING)
    if not isinstance(timestamp, str):
        issues.append(_type_issue(["timestamp"], "string", timestamp))
    elif not _ISO_DATETIME.fullmatch(timestamp):
        issues.append(
            {
                "origin": "string",
                "code": "invalid_format",
                "format": "datetime",
                "path": ["timestamp"],
                "message": "Invalid ISO datetime",
            }
        )
    body = event.get("body", _MISSING)
    if not isinstance(body, dict):
        issues.append(_type_issue(["body"], "object", body))
    elif kind == "score-create":
        issues += _score_body_issues(body)
    elif kind == "dataset-run-item-create":
        issues.append(
            {
                "code": "custom",
                "path": [],
                "message": "Dataset run item creation is only allowed for internal usage",
            }
        )
    return issues


def _score_body_issues(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """ScoreBody: a discriminated union on dataType with the subject refine."""
    data_type = body.get("dataType")
    if data_type is not None and data_type not in SCORE_DATA_TYPES:
        return [
            {
                "code": "invalid_union",
                "errors": [],
                "note": "No matching discriminator",
                "discriminator": "dataType",
                "path": ["body", "dataType"],
                "message": "Invalid input",
            }
        ]
    issues = _id_issues(body.get("id"), ["body", "id"], required=False)
    name = body.get("name", _MISSING)
    if not isinstance(name, str):
        issues.append(_type_issue(["body", "name"], "string", name))
    elif not name:
        issues.append(_too_small(["body", "name"], 1))
    for key in _OPTIONAL_STRINGS:
        value = body.get(key)
        if value is not None and not isinstance(value, str):
            issues.append(_type_issue(["body", key], "string", value))
    config_id = body.get("configId")
    if data_type == "CORRECTION" and config_id is not None:
        issues.append(_type_issue(["body", "configId"], "undefined", config_id))
    elif config_id is not None and not isinstance(config_id, str):
        issues.append(_type_issue(["body", "configId"], "string", config_id))
    source = body.get("source")
    if source is not None and source not in SCORE_SOURCES:
        issues.append(
            {
                "code": "invalid_value",
                "values": list(SCORE_SOURCES),
                "path": ["body", "source"],
                "message": 'Invalid option: expected one of "API"|"EVAL"|"ANNOTATION"',
            }
        )
    issues += _value_issues(data_type, body.get("value", _MISSING))
    if issues:
        return issues
    trace, session, run = body.get("traceId"), body.get("sessionId"), body.get("datasetRunId")
    observation = body.get("observationId")
    if not (
        (trace and not session and not run)
        or (session and not trace and not run and not observation)
        or (run and not trace and not session and not observation)
    ):
        issues.append(
            {
                "code": "custom",
                "path": ["body", "traceId", "sessionId", "datasetRunId", "observationId"],
                "message": SUBJECT_RULE,
            }
        )
    return issues


def _value_issues(data_type: Any, value: Any) -> list[dict[str, Any]]:
    path = ["body", "value"]
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if data_type in ("NUMERIC", "BOOLEAN"):
        if not is_number:
            return [_type_issue(path, "number", value)]
        if data_type == "BOOLEAN" and value not in (0, 1):
            return [
                {
                    "code": "custom",
                    "path": path,
                    "message": "Value must be a number equal to either 0 or 1 for data type "
                    "BOOLEAN",
                }
            ]
        return []
    if data_type in ("CATEGORICAL", "CORRECTION", "TEXT"):
        if not isinstance(value, str):
            return [_type_issue(path, "string", value)]
        if data_type == "TEXT" and not value:
            return [_too_small(path, 1)]
        if data_type == "TEXT" and len(value) > TEXT_SCORE_MAX:
            return [
                {
                    "origin": "string",
                    "code": "too_big",
                    "maximum": TEXT_SCORE_MAX,
                    "inclusive": True,
                    "path": path,
                    "message": f"Too big: expected string to have <={TEXT_SCORE_MAX} characters",
                }
            ]
        return []
    if not is_number and not isinstance(value, str):  # no dataType: string | number
        return [
            {
                "code": "invalid_union",
                "errors": [
                    [_type_issue([], "string", value)],
                    [_type_issue([], "number", value)],
                ],
                "path": path,
                "message": "Invalid input",
            }
        ]
    return []


def _id_issues(value: Any, path: list[str], *, required: bool) -> list[dict[str, Any]]:
    """idSchema: a string of 1 to 800 characters without a carriage return."""
    if (value is None or value is _MISSING) and not required:
        return []
    if not isinstance(value, str):
        return [_type_issue(path, "string", value)]
    if not value:
        return [_too_small(path, 1)]
    if len(value) > 800:
        return [
            {
                "origin": "string",
                "code": "too_big",
                "maximum": 800,
                "inclusive": True,
                "path": path,
                "message": "Too big: expected string to have <=800 characters",
            }
        ]
    if "\r" in value:
        return [
            {
                "code": "custom",
                "path": path,
                "message": "ID cannot contain carriage return characters",
            }
        ]
    return []


def _type_issue(path: list[str], expected: str, value: Any) -> dict[str, Any]:
    return {
        "expected": expected,
        "code": "invalid_type",
        "path": path,
        "message": f"Invalid input: expected {expected}, received {_received(value)}",
    }


def _too_small(path: list[str], minimum: int) -> dict[str, Any]:
    return {
        "origin": "string",
        "code": "too_small",
        "minimum": minimum,
        "inclusive": True,
        "path": path,
        "message": f"Too small: expected string to have >={minimum} characters",
    }


def _received(value: Any) -> str:
    """zod 4's name of a value's type in "received ..." messages."""
    if value is _MISSING:
        return "undefined"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
