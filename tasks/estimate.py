"""How many TLM items a run may send, cheaply: a count, not a dry run.

The v2 metrics API counts the tagged root observations of the window in one request
(``sandbox/langfuse/metrics.py`` has the query shape). A server without it (404: v4.16 without
the preview opt-in, or a legacy write mode) gets its roots paged with ``fields=core`` instead,
1000 per request. The count is an upper bound: traces already scored are not paid again, but
scores carry no tags to count them by (another tag set may share the score name).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from langfuse.api.core.api_error import ApiError

from tasks.langfuse_api import NO_RETRY, Calls, root_trace_ids

NO_METRICS = (400, 404, 422, 501)  # a server whose metrics cannot count this: page instead


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def metrics_count(
    calls: Calls, view: str, filters: list[dict[str, Any]], start: datetime, end: datetime
) -> int | None:
    """One v2 metrics count (both ends inclusive); None when the server cannot answer it."""
    query = json.dumps(
        {
            "view": view,
            "metrics": [{"measure": "count", "aggregation": "count"}],
            "filters": filters,
            "fromTimestamp": _iso(start),
            "toTimestamp": _iso(end),
        }
    )
    try:
        answer = calls(
            f"counting {view} (GET v2/metrics)",
            lambda: calls.api.metrics.metrics(query=query, request_options=NO_RETRY),
        )
    except ApiError as err:
        if err.status_code in NO_METRICS:
            return None
        raise
    rows = answer.data or [{}]
    return int(float(rows[0].get("count_count") or 0))


def page_roots(
    calls: Calls,
    start: datetime,
    end: datetime,
    tags: Sequence[str],
    environment: Sequence[str] | None,
) -> int:
    """The tagged roots of [start, end), counted by paging their ids (1000 a request)."""
    return len(root_trace_ids(calls, start, end, tags, environment, what="counting traces"))


def count_traces(
    calls: Calls,
    start: datetime,
    end: datetime,
    tags: Sequence[str],
    environment: Sequence[str] | None = None,
) -> int:
    """The traces carrying any of ``tags`` that started in [start, end)."""
    filters: list[dict[str, Any]] = [
        {"column": "isRootObservation", "operator": "=", "value": True, "type": "boolean"},
        {"column": "tags", "operator": "any of", "value": list(tags), "type": "arrayOptions"},
    ]
    if environment:
        filters.append(
            {"column": "environment", "operator": "any of", "value": list(environment),
             "type": "stringOptions"}
        )  # fmt: skip
    counted = metrics_count(calls, "observations", filters, start, end)
    return counted if counted is not None else page_roots(calls, start, end, tags, environment)
