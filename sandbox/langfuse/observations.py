"""GET /api/public/v2/observations: field groups, filters, keyset cursor, newest first."""

from __future__ import annotations

import base64
import itertools
import json
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.langfuse.common import (
    FIELD_GROUPS,
    HEAVY_FIELD_GROUPS,
    METADATA_TRUNCATE_AT,
    METADATA_TRUNCATION_SUFFIX,
    OBSERVATIONS_DEFAULT_LIMIT,
    OBSERVATIONS_MAX_LIMIT,
    OBSERVATIONS_V2_DISABLED,
    BadRequest,
    NotFound,
    RequestTimedOut,
    _bool_param,
    _csv,
    _decode_cursor,
    _encode_cursor,
    _int_param,
    _time_param,
    iso,
)
from sandbox.langfuse.deps import FaultsDep, StoreDep
from sandbox.langfuse.filters import (
    _FILTER_COLUMNS,
    _PARAM_COLUMNS,
    ObsPredicate,
    _column_test,
    _equals,
    parse_observation_filter,
)
from sandbox.langfuse.records import (
    ObservationRecord,
    TraceRecord,
)
from sandbox.langfuse.store import LangfuseStore

router = APIRouter()
_LOOPS = itertools.count(1)


@router.get("/api/public/v2/observations", name="observations")
async def list_observations(request: Request, store: StoreDep, faults: FaultsDep) -> Response:
    fault = faults.faults.get("observations")
    return _observations_page(
        store, request, fault.repeat_rows if fault else 0, bool(fault and fault.loop_pages)
    )


def _truncate_metadata(metadata: dict[str, Any] | None, expand: set[str]) -> Any:
    if not metadata:
        return metadata
    out: dict[str, Any] = {}
    for key, value in metadata.items():
        text = value if isinstance(value, str) else json.dumps(value)
        if key not in expand and len(text) > METADATA_TRUNCATE_AT:
            out[key] = text[:METADATA_TRUNCATE_AT] + METADATA_TRUNCATION_SUFFIX
        else:
            out[key] = value
    return out


def observation_json(
    obs: ObservationRecord,
    trace: TraceRecord | None,
    groups: set[str],
    expand: set[str],
    project_id: str,
    profile: str = "current",
) -> dict[str, Any]:
    """One ObservationV2, with the requested field groups (core always)."""
    row: dict[str, Any] = {
        "id": obs.id,
        "traceId": obs.trace_id,
        "startTime": iso(obs.start_ms),
        "endTime": iso(obs.end_ms),
        "projectId": project_id,
        "parentObservationId": obs.parent_observation_id,
        "type": obs.type,
        # required by the schema; null unless the model group asks (no prices here)
        "modelId": None,
        "inputPrice": None,
        "outputPrice": None,
        "totalPrice": None,
    }
    if "basic" in groups:
        row.update(
            name=obs.name,
            level=obs.level,
            statusMessage=obs.status_message,
            version=obs.version,
            environment=obs.environment,
            bookmarked=False,
            public=trace.public if trace else False,
            userId=obs.user_id,
            sessionId=obs.session_id,
            isRootObservation=obs.is_root,
        )
    if "time" in groups:
        row.update(
            completionStartTime=iso(obs.completion_start_ms),
            createdAt=iso(obs.created_ms),
            updatedAt=iso(obs.updated_ms),
        )
    if "io" in groups:
        row.update(input=obs.input, output=obs.output)
    if "metadata" in groups:
        row["metadata"] = _truncate_metadata(obs.metadata, expand) or {}
    if "model" in groups:
        row.update(model=obs.model, internalModelId=None, modelParameters=obs.model_parameters)
        if profile == "current":
            # spec v4.16.0 names it providedModelName; SDK 5 (newer servers) reads ``model``
            row["providedModelName"] = obs.model
        # v4.16.0 puts only ``model`` on the wire: convertObservationPartial maps
        # provided_model_name -> model (packages/shared/src/server/repositories/
        # observations_converters.ts); providedModelName is only in its zod/OpenAPI types
    if "usage" in groups:
        cost = obs.cost_details or {}
        row.update(
            usageDetails=obs.usage_details or {},
            costDetails=cost,
            totalCost=cost.get("total", sum(cost.values())) if cost else None,
            usagePricingTierName=None,
        )
    if "prompt" in groups:
        row.update(promptId=None, promptName=obs.prompt_name, promptVersion=obs.prompt_version)
    if "metrics" in groups:
        latency = (obs.end_ms - obs.start_ms) / 1000 if obs.end_ms is not None else None
        ttft = (
            (obs.completion_start_ms - obs.start_ms) / 1000
            if obs.completion_start_ms is not None
            else None
        )
        row.update(latency=latency, timeToFirstToken=ttft)
    if "trace_context" in groups:
        row.update(
            tags=list(obs.tags),  # e.tags, the event row's own (event-query-builder.ts)
            release=trace.release if trace else None,
            traceName=trace.name if trace else None,
        )
    return row


def _observations_page(
    store: LangfuseStore, request: Request, fault_repeat: int, fault_loop: bool = False
) -> Response:
    params = request.query_params
    fields = _csv(params.get("fields"))
    # unknown groups are dropped silently (commaSeparatedEnumArray(..., {unknownValues:
    # "filter"}) in web/src/features/public-api/types/observations.ts); only unknown ones
    # leave core alone ([] is not null: no core,basic default)
    groups = {"core", "basic"} if fields is None else {f for f in fields if f in FIELD_GROUPS}
    expand = set(_csv(params.get("expandMetadata")) or [])
    limit = _int_param(params, "limit", OBSERVATIONS_DEFAULT_LIMIT, OBSERVATIONS_MAX_LIMIT)
    if _bool_param(params.get("parseIoAsJson"), "parseIoAsJson"):
        raise BadRequest(
            "parseIoAsJson is no longer supported: input/output are returned as raw strings"
        )

    predicates: list[ObsPredicate] = []
    filter_columns: set[str] = set()
    if params.get("filter"):
        predicates, filter_columns = parse_observation_filter(params["filter"])

    for param, column in _PARAM_COLUMNS.items():
        if column in filter_columns:
            continue
        if param == "environment":
            envs = params.getlist("environment")
            if envs:
                wanted = frozenset(envs)
                predicates.append(_column_test(_FILTER_COLUMNS["environment"], wanted.__contains__))
            continue
        raw = params.get(param)
        if raw is None:
            continue
        if param == "isRootObservation":
            flag = _bool_param(raw, param)
            if flag is not None:
                predicates.append(_column_test(_FILTER_COLUMNS[column], _equals(flag)))
        elif param == "parentObservationId":
            parent = raw or None  # empty: only observations without a physical parent
            predicates.append(_column_test(_FILTER_COLUMNS[column], _equals(parent)))
        elif raw != "":
            predicates.append(_column_test(_FILTER_COLUMNS[column], _equals(raw)))

    from_ms = to_ms_ = None
    if "startTime" not in filter_columns:
        from_ms = _time_param(params.get("fromStartTime"), "fromStartTime")
        to_ms_ = _time_param(params.get("toStartTime"), "toStartTime")
    before: tuple[int, str] | None = None
    if params.get("cursor"):
        ms, oid = _decode_cursor(params["cursor"])
        if not isinstance(ms, int) or not isinstance(oid, str):
            raise BadRequest("Invalid cursor")
        before = (ms, oid)

    if store.profile == "v4.16" and not store.preview_opt_in:
        # checked inside the handler, after auth and the query schema
        raise NotFound(OBSERVATIONS_V2_DISABLED, error="LangfuseNotFoundError")
    heavy = store.heavy_read_rows
    if heavy is not None and groups & HEAVY_FIELD_GROUPS and limit > heavy:
        # the events query of a large page with input/output or metadata hits ClickHouse's
        # timeout or memory limit; a smaller page passes
        raise RequestTimedOut()

    def predicate(o: ObservationRecord, t: TraceRecord | None) -> bool:
        # v2 reads the events tables only: a trace ingested in legacy write mode is not there
        return o.in_events and all(p(o, t) for p in predicates)

    rows, more = store.query_observations(
        predicate=predicate, from_ms=from_ms, to_ms=to_ms_, before=before, limit=limit
    )
    meta: dict[str, Any] = {}
    if fault_loop and rows:
        # fault: a store that hands out a new cursor over the same rows, for ever (the same
        # position, written with more spaces each time)
        ms, oid = before if before is not None else (2**62, "\uffff")
        text = f"[{json.dumps(ms)},{' ' * next(_LOOPS)}{json.dumps(oid)}]"
        meta["cursor"] = base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
    elif more and rows:
        # fault: the next page starts with the last N rows of this one (an unmerged store)
        last = rows[-1 - min(fault_repeat, len(rows) - 1)][0]
        meta["cursor"] = _encode_cursor([last.start_ms, last.id])
    data = [
        observation_json(o, t, groups, expand, store.project_id, store.profile) for o, t in rows
    ]
    return JSONResponse({"data": data, "meta": meta})
