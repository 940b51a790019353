"""GET /api/public/metrics (v1) and GET /api/public/v2/metrics: the counting subset.

``?query=<JSON>``: ``{"view", "metrics":[{"measure","aggregation"}], "filters":[...],
"fromTimestamp", "toTimestamp", "dimensions"?, "timeDimension"?, "orderBy"?, "config"?}``
(web/src/features/public-api/types/metrics.ts, v4.16.0). The answer is ``{"data": [row]}``, a
row per group; without dimensions one row, ``{"count_count": <number>}`` for the measure
``count`` aggregated by ``count`` (the QueryBuilder names a metric ``<aggregation>_<measure>``;
ClickHouse 25.12 writes the UInt64 count as a JSON number). The view's time dimension is kept in
``[fromTimestamp, toTimestamp]``, BOTH ends inclusive (QueryBuilder.addStandardFilters: ``>=``
and ``<=``).

- v1 (web/src/pages/api/public/metrics/index.ts): views ``traces`` (the v3 ``traces`` table, its
  ``timestamp``: the trace's start), ``observations`` and the score views; 404 in
  ``events_only`` write mode (``rejectInEventsOnlyMode``, checked before auth); rate resource
  "public-api-metrics" (Hobby 100 a day); on Cloud ("current") the answer carries
  ``_deprecation``. It reads the legacy tables, so in ``legacy`` write mode it still counts the
  traces v2 observations cannot see. Modelled: the ``traces`` view.
- v2 (web/src/pages/api/public/v2/metrics.ts): views ``observations`` (the events table: each
  observation's own tags, ``isRootObservation`` the semantic root, time ``start_time``),
  ``scores-numeric`` (NUMERIC and BOOLEAN), ``scores-categorical``, ``scores-boolean`` (the
  ``scores`` table, time ``timestamp``); 404 "The metrics v2 API is only available in a Langfuse
  v4 write mode" without the preview opt-in or in ``legacy`` write mode (checked after the query
  schema); rate resource "public-api-v2-metrics" (Hobby 100 a day).

Modelled: the measure ``count`` with the aggregation ``count``, no dimensions, no time
dimension, and filters on the columns listed in ``VIEWS`` with the operators of
packages/shared/src/interfaces/filters.ts. The query schema's and QueryBuilder's refusals are
400s as Langfuse words them (unknown view, metric or filter column, a filter type the column
does not take); a valid query outside this subset is a 501 naming what is not modelled.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.langfuse.common import ApiError, BadRequest, NotFound, parse_iso
from sandbox.langfuse.deps import StoreDep, require_auth
from sandbox.langfuse.records import ObservationRecord, ScoreRecord, TraceRecord
from sandbox.langfuse.store import LangfuseStore

router = APIRouter()  # v2: behind the app's auth dependency
legacy_router = APIRouter()  # v1: its events_only 404 comes before auth

METRICS_V2_DISABLED = (
    "The metrics v2 API is only available in a Langfuse v4 write mode. "
    "Learn more at: https://langfuse.com/docs/v4"
)
EVENTS_ONLY_NOT_AVAILABLE = (
    "This endpoint is not available on deployments running in Langfuse v4 events_only mode. "
    "Learn more about Langfuse v4 at: https://langfuse.com/docs/v4"
)
# web/src/features/public-api/server/deprecations.ts: METRICS_DEPRECATION (Cloud only)
METRICS_DEPRECATION = {
    "message": "On Langfuse Cloud, Langfuse v3 is deprecated and this endpoint will be removed "
    "on November 16, 2026. Use GET /api/public/v2/metrics?query=<urlencoded json query> instead.",
    "replacement": "GET /api/public/v2/metrics?query=<urlencoded json query>",
    "docsUrl": "https://langfuse.com/docs/metrics/features/metrics-api",
    "sunsetAt": "2026-11-16",
}
AGGREGATIONS = (
    "sum",
    "avg",
    "count",
    "max",
    "min",
    "p50",
    "p75",
    "p90",
    "p95",
    "p99",
    "histogram",
    "uniq",
)
# filterOperators (packages/shared/src/interfaces/filters.ts)
OPERATORS: dict[str, tuple[str, ...]] = {
    "datetime": (">", "<", ">=", "<="),
    "string": ("=", "contains", "does not contain", "starts with", "ends with"),
    "stringOptions": ("any of", "none of"),
    "categoryOptions": ("any of", "none of"),
    "arrayOptions": ("any of", "none of", "all of"),
    "number": ("=", ">", "<", ">=", "<="),
    "stringObject": ("=", "contains", "does not contain", "starts with", "ends with"),
    "numberObject": ("=", ">", "<", ">=", "<="),
    "booleanObject": ("=", "<>"),
    "boolean": ("=", "<>"),
    "null": ("is null", "is not null"),
    "positionInTrace": ("=",),
}
# COMPATIBLE_FILTER_TYPES (filterTypeCompatibility.ts); array dimensions take arrayOptions only
COMPATIBLE: dict[str, tuple[str, ...]] = {
    "string": ("string", "stringOptions"),
    "string[]": ("arrayOptions",),
    "arrayString": ("arrayOptions",),
    "number": ("number",),
    "boolean": ("boolean",),
    "datetime": ("datetime",),
}
_ISO_DATETIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)$"
)


class NotModelled(ApiError):
    """A valid query the sandbox does not compute (not a Langfuse answer)."""

    status = 501

    def __init__(self, what: str) -> None:
        super().__init__(f"The Langfuse sandbox does not model {what}", error="NotImplemented")


class QueryInvalid(Exception):
    """A 400 of the query schema: ``{"message":"Invalid request data","error":[issues]}``."""

    def __init__(self, issues: list[dict[str, Any]]) -> None:
        super().__init__("Invalid request data")
        self.issues = issues


# --------------------------------------------------------------------------- views


Getter = Callable[[Any], Any]


@dataclass(frozen=True)
class Dimension:
    type: str  # "string", "string[]", "arrayString", "boolean", "number"
    get: Getter | None = None  # None: a real dimension the sandbox does not compute


@dataclass(frozen=True)
class View:
    time_dimension: str
    dimensions: dict[str, Dimension]
    measures: tuple[str, ...]
    rows: Callable[[LangfuseStore], Iterable[Any]]
    time: Getter


def _dims(names: str, kind: str = "string") -> dict[str, Dimension]:
    return {name: Dimension(kind) for name in names.split()}


def _trace_rows(store: LangfuseStore) -> Iterable[TraceRecord]:
    return [t for t in store.all_traces() if t.in_legacy]


def _event_rows(
    store: LangfuseStore,
) -> Iterable[tuple[ObservationRecord, TraceRecord | None]]:
    return [(o, store.trace(o.trace_id)) for o in store.all_observations() if o.in_events]


def _score_rows(*data_types: str) -> Callable[[LangfuseStore], Iterable[ScoreRecord]]:
    def rows(store: LangfuseStore) -> Iterable[ScoreRecord]:
        return [
            s for s in store.all_scores() if s.data_type in data_types and store.score_visible(s)
        ]

    return rows


# traceView (packages/shared/src/features/query/dataModel.ts, v4.16.0), the v3 traces table
TRACES_V1 = View(
    time_dimension="timestamp",
    dimensions={
        "id": Dimension("string", lambda t: t.id),
        "name": Dimension("string", lambda t: t.name),
        "tags": Dimension("string[]", lambda t: t.tags),
        "userId": Dimension("string", lambda t: t.user_id),
        "sessionId": Dimension("string", lambda t: t.session_id),
        "release": Dimension("string", lambda t: t.release),
        "version": Dimension("string"),
        "environment": Dimension("string", lambda t: t.environment),
        "timestampMonth": Dimension("string"),
    },
    measures=(
        "count",
        "observationsCount",
        "scoresCount",
        "uniqueUserIds",
        "uniqueSessionIds",
        "latency",
        "totalTokens",
        "totalCost",
    ),
    rows=_trace_rows,
    time=lambda t: t.start_ms,
)


def _obs(get: Callable[[ObservationRecord], Any]) -> Getter:
    return lambda row: get(row[0])


def _obs_trace(get: Callable[[TraceRecord], Any]) -> Getter:
    return lambda row: get(row[1]) if row[1] is not None else None


# eventsObservationsView: the events table, one row per observation
OBSERVATIONS_V2 = View(
    time_dimension="start_time",
    dimensions={
        "id": Dimension("string", _obs(lambda o: o.id)),
        "traceId": Dimension("string", _obs(lambda o: o.trace_id)),
        "environment": Dimension("string", _obs(lambda o: o.environment)),
        "parentObservationId": Dimension("string", _obs(lambda o: o.parent_observation_id)),
        "isRootObservation": Dimension("boolean", _obs(lambda o: o.is_root)),
        "type": Dimension("string", _obs(lambda o: o.type)),
        "name": Dimension("string", _obs(lambda o: o.name)),
        "level": Dimension("string", _obs(lambda o: o.level)),
        "version": Dimension("string", _obs(lambda o: o.version)),
        "userId": Dimension("string", _obs(lambda o: o.user_id)),
        "sessionId": Dimension("string", _obs(lambda o: o.session_id)),
        "tags": Dimension("string[]", _obs(lambda o: o.tags)),
        "release": Dimension("string", _obs_trace(lambda t: t.release)),
        "traceName": Dimension("string", _obs_trace(lambda t: t.name)),
        **_dims("traceRelease traceVersion"),
        "providedModelName": Dimension("string", _obs(lambda o: o.model)),
        "promptName": Dimension("string", _obs(lambda o: o.prompt_name)),
        **_dims("promptVersion startTimeMonth"),
        **_dims("toolNames calledToolNames", "arrayString"),
        **_dims("costType usageType experimentName experimentDatasetId experimentId"),
    },
    measures=(
        "count",
        "traceId",
        "uniqueUserIds",
        "uniqueSessionIds",
        "latency",
        "streamingLatency",
        "inputTokens",
        "outputTokens",
        "totalTokens",
        "outputTokensPerSecond",
        "tokensPerSecond",
        "inputCost",
        "outputCost",
        "totalCost",
        "timeToFirstToken",
        "countScores",
        "toolDefinitions",
        "toolCalls",
        "costByType",
        "usageByType",
    ),
    rows=_event_rows,
    time=lambda row: row[0].start_ms,
)


def _score_view(
    data_types: tuple[str, ...], value_dim: str, value: Dimension, measures: tuple[str, ...]
) -> View:
    """scoresV2BaseDimensions + createScoreSpecificDimensions + the view's value dimension."""
    return View(
        time_dimension="timestamp",
        dimensions={
            "sessionId": Dimension("string", lambda s: s.session_id),
            "datasetRunId": Dimension("string", lambda s: s.dataset_run_id),
            **_dims("traceName userId"),
            "tags": Dimension("string[]"),
            **_dims("traceRelease traceVersion observationName observationModelName"),
            **_dims("observationPromptName observationPromptVersion experimentName experimentId"),
            "id": Dimension("string", lambda s: s.id),
            "environment": Dimension("string", lambda s: s.environment),
            "name": Dimension("string", lambda s: s.name),
            "source": Dimension("string", lambda s: s.source),
            "dataType": Dimension("string", lambda s: s.data_type),
            "traceId": Dimension("string", lambda s: s.trace_id),
            "configId": Dimension("string", lambda s: s.config_id),
            **_dims("timestampMonth timestampDay"),
            "observationId": Dimension("string", lambda s: s.observation_id),
            value_dim: value,
        },
        measures=measures,
        rows=_score_rows(*data_types),
        time=lambda s: s.timestamp_ms,
    )


SCORES_NUMERIC = _score_view(
    ("NUMERIC", "BOOLEAN"), "value", Dimension("number", lambda s: s.value), ("count", "value")
)
SCORES_CATEGORICAL = _score_view(
    ("CATEGORICAL",), "stringValue", Dimension("string", lambda s: s.value), ("count",)
)
SCORES_BOOLEAN = _score_view(
    ("BOOLEAN",), "booleanValue", Dimension("boolean", lambda s: s.value == 1), ("count", "value")
)

V1_VIEWS = ("traces", "observations", "scores-numeric", "scores-categorical", "scores-boolean")
V2_VIEWS = ("observations", "scores-numeric", "scores-categorical", "scores-boolean")
MODELLED: dict[str, dict[str, View]] = {
    "v1": {"traces": TRACES_V1},
    "v2": {
        "observations": OBSERVATIONS_V2,
        "scores-numeric": SCORES_NUMERIC,
        "scores-categorical": SCORES_CATEGORICAL,
        "scores-boolean": SCORES_BOOLEAN,
    },
}


# --------------------------------------------------------------------------- routes


@legacy_router.get("/api/public/metrics", name="metrics.v1")
async def metrics_v1(request: Request, store: StoreDep) -> Response:
    if store.write_mode == "events_only":  # rejectInEventsOnlyMode: before auth
        return JSONResponse({"message": EVENTS_ONLY_NOT_AVAILABLE}, status_code=404)
    await require_auth(request)
    try:
        query = parse_metrics_query(request.query_params, V1_VIEWS)
    except QueryInvalid as e:
        return _invalid(e)
    body: dict[str, Any] = {"data": execute(store, query, "v1")}
    if store.profile == "current":  # attachDeprecation: Cloud only
        body["_deprecation"] = dict(METRICS_DEPRECATION)
    return JSONResponse(body)


@router.get("/api/public/v2/metrics", name="metrics.v2")
async def metrics_v2(request: Request, store: StoreDep) -> Response:
    try:
        query = parse_metrics_query(request.query_params, V2_VIEWS)
    except QueryInvalid as e:
        return _invalid(e)
    opted_in = store.profile != "v4.16" or store.preview_opt_in
    if not opted_in or store.write_mode == "legacy":  # isMetricsV2Available, in the handler
        raise NotFound(METRICS_V2_DISABLED, error="LangfuseNotFoundError")
    return JSONResponse({"data": execute(store, query, "v2")})


def _invalid(e: QueryInvalid) -> Response:
    return JSONResponse({"message": "Invalid request data", "error": e.issues}, status_code=400)


# --------------------------------------------------------------------------- the query schema


def parse_metrics_query(params: Mapping[str, str], views: tuple[str, ...]) -> dict[str, Any]:
    """GetMetricsV1Query / GetMetricsV2Query: ``query`` as JSON, then MetricsQueryObject."""
    raw = params.get("query")
    if raw is None:
        raise QueryInvalid([_type_issue(["query"], "string", _MISSING)])
    try:
        query = json.loads(raw)
    except ValueError as e:  # thrown in the zod transform: withMiddlewares' BaseError answer
        raise BadRequest("Invalid JSON in query parameter", error="InvalidRequestError") from e
    if not isinstance(query, dict):
        raise QueryInvalid([_type_issue(["query"], "object", query)])
    issues: list[dict[str, Any]] = []
    view = query.get("view", _MISSING)
    if view not in views:
        options = "|".join(f'"{v}"' for v in views)
        issues.append(
            {
                "code": "invalid_value",
                "values": list(views),
                "path": ["query", "view"],
                "message": f"Invalid option: expected one of {options}",
            }
        )
    metrics = query.get("metrics", _MISSING)
    if not isinstance(metrics, list):
        issues.append(_type_issue(["query", "metrics"], "array", metrics))
    else:
        for i, metric in enumerate(metrics):
            path: list[Any] = ["query", "metrics", i]
            if not isinstance(metric, dict):
                issues.append(_type_issue(path, "object", metric))
                continue
            if not isinstance(metric.get("measure"), str):
                issues.append(_type_issue([*path, "measure"], "string", metric.get("measure")))
            if metric.get("aggregation") not in AGGREGATIONS:
                issues.append(
                    {
                        "code": "invalid_value",
                        "values": list(AGGREGATIONS),
                        "path": [*path, "aggregation"],
                        "message": "Invalid option: expected one of "
                        + "|".join(f'"{a}"' for a in AGGREGATIONS),
                    }
                )
    for key in ("dimensions", "filters"):
        if not isinstance(query.get(key, []), list):
            issues.append(_type_issue(["query", key], "array", query.get(key)))
    if isinstance(query.get("filters", []), list):
        for i, item in enumerate(query.get("filters", [])):
            issues += _filter_issues(item, ["query", "filters", i])
    times: list[int] = []
    for key in ("fromTimestamp", "toTimestamp"):
        value = query.get(key, _MISSING)
        if not isinstance(value, str):
            issues.append(_type_issue(["query", key], "string", value))
        elif not _ISO_DATETIME.fullmatch(value):
            issues.append(
                {
                    "origin": "string",
                    "code": "invalid_format",
                    "format": "datetime",
                    "path": ["query", key],
                    "message": "Invalid ISO datetime",
                }
            )
        else:
            times.append(parse_iso(value))
    if issues:
        raise QueryInvalid(issues)
    if len(times) == 2 and times[0] >= times[1]:
        raise QueryInvalid([{"code": "custom", "path": ["query"], "message": _FROM_BEFORE_TO}])
    query["dimensions"] = query.get("dimensions") or []
    query["filters"] = query.get("filters") or []
    query["_from_ms"], query["_to_ms"] = times
    return query


_FROM_BEFORE_TO = "fromTimestamp must be before toTimestamp"
_MISSING: Any = object()


def _filter_issues(item: Any, path: list[Any]) -> list[dict[str, Any]]:
    """singleFilter: a discriminated union on ``type``; each type its operators and value."""
    if not isinstance(item, dict):
        return [_type_issue(path, "object", item)]
    kind = item.get("type")
    if kind not in OPERATORS:
        return [
            {
                "code": "invalid_union",
                "errors": [],
                "note": "No matching discriminator",
                "discriminator": "type",
                "path": [*path, "type"],
                "message": "Invalid input",
            }
        ]
    issues: list[dict[str, Any]] = []
    if not isinstance(item.get("column"), str):
        issues.append(_type_issue([*path, "column"], "string", item.get("column", _MISSING)))
    if item.get("operator") not in OPERATORS[kind]:
        issues.append(
            {
                "code": "invalid_value",
                "values": list(OPERATORS[kind]),
                "path": [*path, "operator"],
                "message": "Invalid option: expected one of "
                + "|".join(f'"{o}"' for o in OPERATORS[kind]),
            }
        )
    value = item.get("value", _MISSING)
    expected = {
        "string": "string",
        "stringObject": "string",
        "number": "number",
        "numberObject": "number",
        "boolean": "boolean",
        "booleanObject": "boolean",
    }.get(kind)
    if expected is not None and _received(value) != expected:
        issues.append(_type_issue([*path, "value"], expected, value))
    elif kind in ("stringOptions", "arrayOptions", "categoryOptions"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            issues.append(_type_issue([*path, "value"], "array", value))
        elif not value and (
            kind == "stringOptions" or (kind == "arrayOptions" and item.get("operator") == "any of")
        ):
            issues.append({"code": "custom", "path": [*path, "value"], "message": "Invalid input"})
    elif kind == "datetime" and not (isinstance(value, str) and _parses(value)):
        issues.append(
            {
                "expected": "date",
                "code": "invalid_type",
                "received": "Invalid Date",
                "path": [*path, "value"],
                "message": "Invalid input: expected date, received Date",
            }
        )
    elif kind == "null" and value != "":
        issues.append(
            {
                "code": "invalid_value",
                "values": [""],
                "path": [*path, "value"],
                "message": 'Invalid input: expected ""',
            }
        )
    return issues


def _parses(value: str) -> bool:
    try:
        parse_iso(value)
    except ValueError:
        return False
    return True


def _type_issue(path: list[Any], expected: str, value: Any) -> dict[str, Any]:
    return {
        "expected": expected,
        "code": "invalid_type",
        "path": path,
        "message": f"Invalid input: expected {expected}, received {_received(value)}",
    }


def _received(value: Any) -> str:
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


# --------------------------------------------------------------------------- the query builder


def execute(store: LangfuseStore, query: Mapping[str, Any], version: str) -> list[dict[str, Any]]:
    """The QueryBuilder's checks (in its order: dimensions, metrics, filters) and the count."""
    view = MODELLED[version].get(query["view"])
    if view is None:
        raise NotModelled(
            f"the {version} {query['view']!r} view (modelled: the count of "
            f"{', '.join(MODELLED[version])})"
        )
    for dimension in query["dimensions"]:
        field = dimension.get("field") if isinstance(dimension, dict) else None
        if field not in view.dimensions:
            raise BadRequest(
                f"Invalid dimension {field}. Must be one of {','.join(view.dimensions)}",
                error="InvalidRequestError",
            )
    for metric in query["metrics"]:
        if metric["measure"] not in view.measures:
            raise BadRequest(
                f"Invalid metric {metric['measure']}. Must be one of {','.join(view.measures)}",
                error="InvalidRequestError",
            )
    tests = [_filter_test(view, f) for f in query["filters"]]
    if query["dimensions"] or query.get("timeDimension"):
        raise NotModelled("dimensions or a timeDimension (modelled: one row, no grouping)")
    if any((m["measure"], m["aggregation"]) != ("count", "count") for m in query["metrics"]):
        raise NotModelled("metrics other than the measure count aggregated by count")
    from_ms, to_ms = query["_from_ms"], query["_to_ms"]
    count = sum(
        1
        for row in view.rows(store)
        if from_ms <= view.time(row) <= to_ms and all(test(row) for test in tests)
    )
    if not query["metrics"]:  # buildOuterMetricsPart without metrics: "count(*) as count"
        return [{"count": count}]
    return [{"count_count": count}]


def _resolve(view: View, column: str) -> Dimension | None:
    """QueryBuilder.resolveDimension: the column, or "name" for a column ending in "Name"."""
    if column in view.dimensions:
        return view.dimensions[column]
    if column.endswith("Name") and "name" in view.dimensions:
        return view.dimensions["name"]
    return None


def _filter_test(view: View, item: Mapping[str, Any]) -> Callable[[Any], bool]:
    column, kind = item["column"], item["type"]
    dimension = _resolve(view, column)
    if dimension is not None:
        compatible = COMPATIBLE[dimension.type]
        if kind != "null" and kind not in compatible:
            listed = [f"'{t}'" for t in compatible]
            expected = listed[0] if len(listed) == 1 else " or ".join(listed)
            raise BadRequest(
                f"Invalid filter for field '{column}': Filter type '{kind}' is not supported for "
                f"dimension type '{dimension.type}'. Expected {expected}.",
                error="InvalidRequestError",
            )
        if dimension.get is None:
            raise NotModelled(f"filters on the {column!r} column")
        return _operator_test(kind, item["operator"], item["value"], dimension.get)
    if column == view.time_dimension:
        if kind != "datetime":
            raise BadRequest(
                f"Invalid filter for field '{column}': Filter type '{kind}' is not supported for "
                f"time dimension '{view.time_dimension}'. Expected 'datetime'.",
                error="InvalidRequestError",
            )
        return _operator_test(kind, item["operator"], item["value"], view.time)
    if column == "metadata":
        raise NotModelled("metadata filters")
    raise BadRequest(
        f"Invalid filter column {column}. Must be one of {','.join(view.dimensions)} "
        f"or {view.time_dimension}",
        error="InvalidRequestError",
    )


def _operator_test(kind: str, op: str, value: Any, get: Getter) -> Callable[[Any], bool]:
    """One filter, with ClickHouse's NULL semantics (a NULL column matches no comparison)."""
    if kind == "null":
        return lambda row: (get(row) in (None, "")) == (op == "is null")
    if kind == "arrayOptions":
        wanted = set(value)
        if op == "any of":
            return lambda row: bool(wanted & set(get(row) or ()))
        if op == "all of":
            return lambda row: wanted <= set(get(row) or ())
        return lambda row: not wanted & set(get(row) or ())
    if kind == "stringOptions":
        options = set(value)
        inside = op == "any of"
        return lambda row: get(row) is not None and (get(row) in options) == inside
    if kind == "boolean":
        return lambda row: get(row) is not None and (bool(get(row)) == value) == (op == "=")
    if kind == "datetime":
        return _compare(op, parse_iso(value), get)
    if kind == "number":
        return _compare(op, float(value), get)
    if kind == "string":
        text: str = value
        checks: dict[str, Callable[[str], bool]] = {
            "=": lambda v: v == text,
            "contains": lambda v: text in v,
            "does not contain": lambda v: text not in v,
            "starts with": lambda v: v.startswith(text),
            "ends with": lambda v: v.endswith(text),
        }
        check = checks[op]
        return lambda row: isinstance(get(row), str) and check(get(row))
    raise NotModelled(f"{kind} filters")


def _compare(op: str, bound: float, get: Getter) -> Callable[[Any], bool]:
    ops: dict[str, Callable[[float, float], bool]] = {
        "=": lambda a, b: a == b,
        ">": lambda a, b: a > b,
        "<": lambda a, b: a < b,
        ">=": lambda a, b: a >= b,
        "<=": lambda a, b: a <= b,
    }
    compare = ops[op]

    def test(row: Any) -> bool:
        value = get(row)
        return isinstance(value, int | float) and compare(value, bound)

    return test
