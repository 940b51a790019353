"""The ``filter`` parameter and the filtering query parameters of GET v2/observations."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sandbox.langfuse.common import BadRequest, parse_iso
from sandbox.langfuse.records import ObservationRecord, TraceRecord

ObsPredicate = Callable[[ObservationRecord, TraceRecord | None], bool]

# filter column -> (value getter, is an array column)
_FILTER_COLUMNS: dict[str, Callable[[ObservationRecord, TraceRecord | None], Any]] = {
    "id": lambda o, t: o.id,
    "type": lambda o, t: o.type,
    "name": lambda o, t: o.name,
    "traceId": lambda o, t: o.trace_id,
    "environment": lambda o, t: o.environment,
    "level": lambda o, t: o.level,
    "statusMessage": lambda o, t: o.status_message,
    "version": lambda o, t: o.version,
    "userId": lambda o, t: o.user_id,
    "sessionId": lambda o, t: o.session_id,
    "parentObservationId": lambda o, t: o.parent_observation_id,
    "isRootObservation": lambda o, t: o.is_root,
    "traceName": lambda o, t: t.name if t else None,
    # e."tags" for both tags and traceTags (mapEventsTable.ts): the observation's own tags
    "tags": lambda o, t: o.tags,
    "startTime": lambda o, t: o.start_ms,
    "endTime": lambda o, t: o.end_ms,
    "model": lambda o, t: o.model,
}
_COLUMN_ALIASES = {"traceTags": "tags", "providedModelName": "model"}

# query parameter -> filter column it stands for (a filter on that column overrides it)
_PARAM_COLUMNS = {
    "name": "name",
    "userId": "userId",
    "sessionId": "sessionId",
    "type": "type",
    "traceId": "traceId",
    "level": "level",
    "version": "version",
    "environment": "environment",
    "parentObservationId": "parentObservationId",
    "isRootObservation": "isRootObservation",
}


def _string_op(operator: str, value: Any) -> Callable[[Any], bool]:
    if not isinstance(value, str):
        raise BadRequest("string filter needs a string value")
    ops: dict[str, Callable[[Any], bool]] = {
        "=": lambda x: x == value,
        "contains": lambda x: isinstance(x, str) and value in x,
        "does not contain": lambda x: not (isinstance(x, str) and value in x),
        "starts with": lambda x: isinstance(x, str) and x.startswith(value),
        "ends with": lambda x: isinstance(x, str) and x.endswith(value),
    }
    if operator not in ops:
        raise BadRequest(f"Unsupported operator {operator!r} for string filter")
    return ops[operator]


def _options_op(operator: str, value: Any) -> Callable[[Any], bool]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest("stringOptions filter needs a list of strings")
    options = frozenset(value)
    if operator == "any of":
        return lambda x: x in options
    if operator == "none of":
        return lambda x: x not in options
    raise BadRequest(f"Unsupported operator {operator!r} for stringOptions filter")


def _array_op(operator: str, value: Any) -> Callable[[Any], bool]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest("arrayOptions filter needs a list of strings")
    wanted = frozenset(value)
    if operator == "any of":
        return lambda x: not wanted.isdisjoint(x)
    if operator == "all of":
        return lambda x: wanted.issubset(x)
    if operator == "none of":
        return lambda x: wanted.isdisjoint(x)
    raise BadRequest(f"Unsupported operator {operator!r} for arrayOptions filter")


def _datetime_op(operator: str, value: Any) -> Callable[[Any], bool]:
    if not isinstance(value, str):
        raise BadRequest("datetime filter needs an ISO 8601 string value")
    try:
        ms = parse_iso(value)
    except ValueError as e:
        raise BadRequest("datetime filter needs an ISO 8601 string value") from e
    ops: dict[str, Callable[[Any], bool]] = {
        ">": lambda x: x is not None and x > ms,
        "<": lambda x: x is not None and x < ms,
        ">=": lambda x: x is not None and x >= ms,
        "<=": lambda x: x is not None and x <= ms,
    }
    if operator not in ops:
        raise BadRequest(f"Unsupported operator {operator!r} for datetime filter")
    return ops[operator]


def _boolean_op(operator: str, value: Any) -> Callable[[Any], bool]:
    if not isinstance(value, bool):
        raise BadRequest("boolean filter needs a boolean value")
    if operator == "=":
        return lambda x: bool(x) == value
    if operator == "<>":
        return lambda x: bool(x) != value
    raise BadRequest(f"Unsupported operator {operator!r} for boolean filter")


def _null_op(operator: str, value: Any) -> Callable[[Any], bool]:
    if operator == "is null":
        return lambda x: x is None
    if operator == "is not null":
        return lambda x: x is not None
    raise BadRequest(f"Unsupported operator {operator!r} for null filter")


_FILTER_TYPES: dict[str, Callable[[str, Any], Callable[[Any], bool]]] = {
    "string": _string_op,
    "stringOptions": _options_op,
    "categoryOptions": _options_op,
    "arrayOptions": _array_op,
    "datetime": _datetime_op,
    "boolean": _boolean_op,
    "null": _null_op,
}


def _column_test(
    getter: Callable[[ObservationRecord, TraceRecord | None], Any], test: Callable[[Any], bool]
) -> ObsPredicate:
    return lambda o, t: bool(test(getter(o, t)))


def _equals(value: Any) -> Callable[[Any], bool]:
    return lambda x: bool(x == value)


def parse_observation_filter(raw: str) -> tuple[list[ObsPredicate], set[str]]:
    """Parse the ``filter`` JSON array. Returns predicates and the columns it names."""
    try:
        conditions = json.loads(raw)
    except ValueError as e:
        raise BadRequest("Invalid filter: not valid JSON") from e
    if not isinstance(conditions, list):
        raise BadRequest("Invalid filter: expected a JSON array")
    predicates: list[ObsPredicate] = []
    columns: set[str] = set()
    for cond in conditions:
        if not isinstance(cond, dict):
            raise BadRequest("Invalid filter: each condition must be an object")
        ftype, column, operator = cond.get("type"), cond.get("column"), cond.get("operator")
        if not isinstance(ftype, str) or not isinstance(column, str):
            raise BadRequest("Invalid filter: type and column are required")
        if not isinstance(operator, str):
            raise BadRequest("Invalid filter: operator is required")
        column = _COLUMN_ALIASES.get(column, column)
        getter = _FILTER_COLUMNS.get(column)
        if getter is None:
            raise BadRequest(f"Invalid filter: unsupported column {column!r}")
        make = _FILTER_TYPES.get(ftype)
        if make is None:
            raise BadRequest(f"Invalid filter: unsupported type {ftype!r}")
        if (ftype == "arrayOptions") != (column == "tags"):
            raise BadRequest(f"Invalid filter: type {ftype!r} does not fit column {column!r}")
        test = make(operator, cond.get("value"))
        predicates.append(_column_test(getter, test))
        columns.add(column)
    return predicates, columns
