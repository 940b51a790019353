"""POST /api/public/scores (both profiles) and GET /api/public/v3/scores."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.langfuse.common import (
    INGESTION_SUSPENDED,
    MAX_BODY_BYTES,
    SCORE_FIELD_GROUPS,
    SCORES_DEFAULT_LIMIT,
    SCORES_MAX_LIMIT,
    BadRequest,
    Forbidden,
    _csv,
    _decode_cursor,
    _encode_cursor,
    _error,
    _int_param,
    _time_param,
    iso,
)
from sandbox.langfuse.deps import FaultsDep, StoreDep
from sandbox.langfuse.records import (
    ScoreRecord,
)
from sandbox.langfuse.store import LangfuseStore
from sandbox.langfuse.validation import (
    validate_score,
)

router = APIRouter()


@router.post("/api/public/scores", name="scores.create")
async def create_scores(request: Request, store: StoreDep, faults: FaultsDep) -> Response:
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        return _error(413, "Body exceeded 1mb limit")
    try:
        payload = json.loads(body)
    except ValueError:
        return _error(400, "Invalid JSON body")
    fault = faults.faults.get("scores.create")
    rejected_traces = fault.reject_trace_ids if fault else set()
    if store.profile == "v4.16":
        return _create_score_v416(store, payload, rejected_traces)
    if store.ingestion_suspended:
        raise Forbidden(INGESTION_SUSPENDED)
    if isinstance(payload, dict):  # the older single-score form
        score = validate_score(payload, now_ms=store.now_ms())
        if score.trace_id in rejected_traces:
            return _error(400, f"Score for trace {score.trace_id} was rejected")
        store.ingest_score(payload, score)
        return JSONResponse({"id": score.id})
    if not isinstance(payload, list) or not payload:
        return _error(400, "Body must be a non-empty JSON list of scores")
    # schema problems are refused per item (207); configId problems are not seen here:
    # ingestion drops those scores after this answer (LangfuseStore.ingest_score)
    accepted: list[tuple[dict[str, Any], ScoreRecord]] = []
    errors: list[dict[str, str]] = []
    for item in payload:
        try:
            score = validate_score(item, now_ms=store.now_ms())
            if score.trace_id in rejected_traces:
                raise BadRequest("Score rejected: the trace is not accepting scores")
        except BadRequest as e:
            errors.append({"message": str(e)})
            continue
        accepted.append((item, score))
    for item, score in accepted:
        store.ingest_score(item, score)
    if errors:
        return JSONResponse(
            {"accepted": len(accepted), "rejected": len(errors), "errors": errors},
            status_code=207,
        )
    return JSONResponse({"message": "Accepted"}, status_code=202)


@router.get("/api/public/v3/scores", name="scores.list")
async def list_scores(request: Request, store: StoreDep) -> Response:
    return _scores_page(store, request)


def score_json(score: ScoreRecord, groups: set[str], project_id: str) -> dict[str, Any]:
    """One ScoreV3 with the requested field groups."""
    value: Any = score.value
    if score.data_type == "BOOLEAN":
        value = bool(score.value)
    row: dict[str, Any] = {
        "id": score.id,
        "projectId": project_id,
        "name": score.name,
        "value": value,
        "dataType": score.data_type,
        "source": score.source,
        "timestamp": iso(score.timestamp_ms),
        "environment": score.environment,
        "createdAt": iso(score.created_ms),
        "updatedAt": iso(score.updated_ms),
    }
    if "details" in groups:
        row.update(comment=score.comment, configId=score.config_id, metadata=score.metadata)
    if "annotation" in groups:
        row.update(authorUserId=score.author_user_id, queueId=score.queue_id)
    if "subject" in groups:
        subject: dict[str, Any]
        if score.observation_id:
            subject = {"kind": "observation", "id": score.observation_id}
            subject["traceId"] = score.trace_id
        elif score.trace_id:
            subject = {"kind": "trace", "id": score.trace_id}
        elif score.session_id:
            subject = {"kind": "session", "id": score.session_id}
        else:
            subject = {"kind": "experiment", "id": score.dataset_run_id}
        row["subject"] = subject
    return row


# GetScoresQueryV3 (packages/shared/src/features/scores/interfaces/api/v3/endpoints.ts) is zod
# .strict(), plus the route's cursor
V3_QUERY_KEYS = frozenset(
    {"limit", "fields", "id", "name", "source", "dataType", "environment", "configId"}
    | {"queueId", "authorUserId", "value", "valueMin", "valueMax", "traceId", "sessionId"}
    | {"observationId", "experimentId", "fromTimestamp", "toTimestamp", "userId", "traceTags"}
    | {"cursor"}
)
SCORE_SOURCES = ("API", "EVAL", "ANNOTATION")  # ScoreSourceArray
SCORE_DATA_TYPE_VALUES = ("NUMERIC", "CATEGORICAL", "BOOLEAN", "CORRECTION", "TEXT")


def _v3_query_issues(params: Mapping[str, str]) -> list[dict[str, Any]]:
    """The zod issues of GetScoresV3Query the sandbox checks: unknown keys, the source and
    dataType values (csvEnumParam, case-insensitive), the v2-only filters."""
    issues: list[dict[str, Any]] = []
    unknown = sorted(set(params) - V3_QUERY_KEYS)
    if unknown:
        keys = ", ".join(f'"{k}"' for k in unknown)
        issues.append(
            {
                "code": "unrecognized_keys",
                "keys": unknown,
                "path": [],
                "message": f"Unrecognized key{'s' if len(unknown) > 1 else ''}: {keys}",
            }
        )
    for key, label, allowed in (
        ("source", "source", SCORE_SOURCES),
        ("dataType", "dataType", SCORE_DATA_TYPE_VALUES),
    ):
        for value in _csv(params.get(key)) or []:
            if value.upper() not in allowed:
                issues.append(
                    {
                        "code": "custom",
                        "path": [key],
                        "message": f'Invalid {label} value: "{value.upper()}". '
                        f"Allowed: {', '.join(allowed)}",
                    }
                )
    for key in ("userId", "traceTags"):
        if params.get(key):
            issues.append(
                {
                    "code": "custom",
                    "path": [],
                    "message": f"{key} filter requires a trace JOIN and is not supported in v3 "
                    "— use v2 or omit this filter",
                }
            )
    return issues


def _scores_page(store: LangfuseStore, request: Request) -> Response:
    params = request.query_params
    issues = _v3_query_issues(params)
    if issues:
        raise BadRequest("Invalid request data", error=issues)
    groups = set(_csv(params.get("fields")) or [])
    unknown = groups - SCORE_FIELD_GROUPS
    if unknown:
        raise BadRequest(f"Invalid fields: unknown field group(s) {sorted(unknown)}")
    limit = _int_param(params, "limit", SCORES_DEFAULT_LIMIT, SCORES_MAX_LIMIT)

    ids = _csv(params.get("id"))
    names = _csv(params.get("name"))
    sources = _csv(params.get("source"))
    data_types = _csv(params.get("dataType"))
    environments = _csv(params.get("environment"))
    config_ids = _csv(params.get("configId"))
    queue_ids = _csv(params.get("queueId"))
    trace_ids = _csv(params.get("traceId"))
    session_ids = _csv(params.get("sessionId"))
    observation_ids = _csv(params.get("observationId"))
    run_ids = _csv(params.get("experimentId"))
    if observation_ids and not trace_ids:
        raise BadRequest("observationId requires traceId")
    if session_ids and (trace_ids or observation_ids or run_ids):
        raise BadRequest("sessionId cannot be combined with traceId, observationId, experimentId")
    if run_ids and (trace_ids or observation_ids):
        raise BadRequest("experimentId cannot be combined with traceId or observationId")

    checks: list[Callable[[ScoreRecord], bool]] = []

    def one_of(values: list[str] | None, get: Callable[[ScoreRecord], Any], upper: bool) -> None:
        if values:
            wanted = frozenset(v.upper() for v in values) if upper else frozenset(values)
            checks.append(lambda s: get(s) in wanted)

    one_of(ids, lambda s: s.id, False)
    one_of(names, lambda s: s.name, False)
    one_of(sources, lambda s: s.source, True)
    one_of(data_types, lambda s: s.data_type, True)
    one_of(environments, lambda s: s.environment, False)
    one_of(config_ids, lambda s: s.config_id, False)
    one_of(queue_ids, lambda s: s.queue_id, False)
    one_of(trace_ids, lambda s: s.trace_id, False)
    one_of(session_ids, lambda s: s.session_id, False)
    one_of(observation_ids, lambda s: s.observation_id, False)
    one_of(run_ids, lambda s: s.dataset_run_id, False)
    one_of(_csv(params.get("authorUserId")), lambda s: s.author_user_id, False)
    _value_checks(params, data_types, checks)

    from_ms = _time_param(params.get("fromTimestamp"), "fromTimestamp")
    to_ms_ = _time_param(params.get("toTimestamp"), "toTimestamp")
    before: tuple[int, int] | None = None
    if params.get("cursor"):
        ms, seq = _decode_cursor(params["cursor"])
        if not isinstance(ms, int) or not isinstance(seq, int):
            raise BadRequest("Invalid cursor")
        before = (ms, seq)
    checks.append(store.score_visible)  # the read lag
    rows, more = store.query_scores(
        predicate=lambda s: all(c(s) for c in checks),
        from_ms=from_ms,
        to_ms=to_ms_,
        before=before,
        limit=limit,
        one_per_id=store.profile == "v4.16",
    )
    meta: dict[str, Any] = {"limit": limit}
    if more and rows:
        meta["cursor"] = _encode_cursor([rows[-1].timestamp_ms, rows[-1].seq])
    data = [score_json(s, groups, store.project_id) for s in rows]
    return JSONResponse({"data": data, "meta": meta})


def _value_checks(
    params: Mapping[str, str],
    data_types: list[str] | None,
    checks: list[Callable[[ScoreRecord], bool]],
) -> None:
    """``value`` / ``valueMin`` / ``valueMax`` with the spec's dataType rules."""
    values, vmin, vmax = _csv(params.get("value")), params.get("valueMin"), params.get("valueMax")
    if not values and not vmin and not vmax:
        return
    if not data_types or len(data_types) != 1:
        raise BadRequest("value filters need exactly one dataType")
    dtype = data_types[0].upper()
    try:
        if vmin or vmax:
            if dtype != "NUMERIC":
                raise BadRequest("valueMin/valueMax need dataType NUMERIC")
            if vmin:
                lo = float(vmin)
                checks.append(lambda s: isinstance(s.value, float) and s.value >= lo)
            if vmax:
                hi = float(vmax)
                checks.append(lambda s: isinstance(s.value, float) and s.value <= hi)
        if values:
            wanted: frozenset[Any]
            if dtype == "NUMERIC":
                wanted = frozenset(float(v) for v in values)
            elif dtype == "BOOLEAN":
                if any(v not in ("true", "false") for v in values):
                    raise BadRequest("BOOLEAN values must be true or false")
                wanted = frozenset(1.0 if v == "true" else 0.0 for v in values)
            elif dtype == "CATEGORICAL":
                wanted = frozenset(values)
            else:
                raise BadRequest("value needs dataType NUMERIC, BOOLEAN or CATEGORICAL")
            checks.append(lambda s: s.value in wanted)
    except ValueError as e:
        raise BadRequest("value filters must be finite numbers") from e


# --------------------------------------------------------------------------- v4.16 score POST

# zod's issues for a JSON list given to PostScoresBody (an object intersected with a
# discriminated union, zod 4.3): one invalid_type issue from each side
_LIST_BODY_ISSUES: tuple[dict[str, Any], ...] = (
    {
        "expected": "object",
        "code": "invalid_type",
        "path": [],
        "message": "Invalid input: expected object, received array",
    },
    {
        "code": "invalid_type",
        "expected": "object",
        "path": [],
        "message": "Invalid input: expected object, received array",
    },
)


def _invalid_request_data(issues: list[dict[str, Any]]) -> JSONResponse:
    """withMiddlewares' answer to a ZodError (web/src/features/public-api/server/)."""
    return JSONResponse({"message": "Invalid request data", "error": issues}, status_code=400)


def _create_score_v416(store: LangfuseStore, payload: Any, rejected: set[str]) -> Response:
    """POST /api/public/scores of v4.16.0 (web/src/pages/api/public/scores/index.ts): one
    score object (PostScoresBodyV1) in, 200 ``{"id"}`` out. The body has no ``timestamp``
    (zod strips it): the ingestion event is stamped on arrival and the worker takes that as the
    score's timestamp (worker/src/services/IngestionService, processScoreEventList)."""
    if not isinstance(payload, dict):
        if isinstance(payload, list):
            return _invalid_request_data([dict(i) for i in _LIST_BODY_ISSUES])
        return _invalid_request_data(
            [{"code": "invalid_type", "expected": "object", "path": [], "message": "Invalid input"}]
        )
    item = {k: v for k, v in payload.items() if k != "timestamp"}
    item["id"] = item.get("id") or str(uuid.uuid4())  # body.id || randomUUID()
    try:
        score = validate_score(item, now_ms=store.now_ms())
    except BadRequest as e:
        # the sandbox's reason in zod's shape (the issue itself is not zod's own)
        return _invalid_request_data([{"code": "custom", "path": [], "message": str(e)}])
    if store.ingestion_suspended:  # in the handler, after the body schema
        raise Forbidden(INGESTION_SUSPENDED)
    if score.trace_id in rejected:
        return _error(400, f"Score for trace {score.trace_id} was rejected")
    store.ingest_score(item, score)
    return JSONResponse({"id": score.id})
