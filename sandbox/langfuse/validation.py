"""Validation of score bodies and score-config bodies (the rules of Langfuse's schemas)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from sandbox.langfuse.common import (
    ANNOTATION_SCORE_REQUIRES_CONFIG_ID,
    BOOLEAN_CATEGORIES,
    ENVIRONMENT_RE,
    SCORE_CONFIG_NAME_RE,
    SCORE_DATA_TYPES,
    TEXT_SCORE_MAX,
    BadRequest,
    _now_ms,
    parse_iso,
)
from sandbox.langfuse.records import ScoreConfigRecord, ScoreRecord

# --------------------------------------------------------------------------- scores


def validate_score(item: Any, *, now_ms: int | None = None, ingestion: bool = False) -> ScoreRecord:
    """Check one score of a POST body; raise BadRequest with the reason. A missing timestamp
    is ``now_ms`` (default: wall-clock now).

    ``ingestion``: the body of a score-create event, already checked against the event schema
    (packages/shared/src/server/ingestion/types.ts): source may also be EVAL, and an ANNOTATION
    score without configId passes (the worker drops it, see ``LangfuseStore.ingest_score``)."""
    if not isinstance(item, dict):
        raise BadRequest("Each score must be a JSON object")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest("name is required")
    if "value" not in item or item["value"] is None:
        raise BadRequest("value is required")
    value = item["value"]
    trace_id, observation_id = item.get("traceId"), item.get("observationId")
    session_id, run_id = item.get("sessionId"), item.get("datasetRunId")
    for key, v in (
        ("traceId", trace_id),
        ("observationId", observation_id),
        ("sessionId", session_id),
        ("datasetRunId", run_id),
    ):
        if v is not None and (not isinstance(v, str) or not v):
            raise BadRequest(f"{key} must be a non-empty string")
    subjects = [s for s in (trace_id, session_id, run_id) if s]
    if len(subjects) != 1:
        raise BadRequest("Exactly one of traceId, sessionId or datasetRunId is required")
    if observation_id and not trace_id:
        raise BadRequest("observationId requires traceId")

    data_type = item.get("dataType")
    if data_type is None:
        if isinstance(value, bool):
            data_type = "BOOLEAN"
        elif isinstance(value, int | float):
            data_type = "NUMERIC"
        else:
            data_type = "CATEGORICAL"
    if data_type not in SCORE_DATA_TYPES:
        raise BadRequest(f"dataType must be one of {sorted(SCORE_DATA_TYPES)}")
    stored: float | str
    if data_type == "NUMERIC":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadRequest("NUMERIC scores need a numeric value")
        if not math.isfinite(value):
            raise BadRequest("NUMERIC scores need a finite value")
        stored = float(value)
    elif data_type == "BOOLEAN":
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, int | float) or value not in (0, 1):
            raise BadRequest("BOOLEAN scores need the value 1 or 0")
        stored = float(value)
    else:
        if not isinstance(value, str):
            raise BadRequest(f"{data_type} scores need a string value")
        if data_type == "TEXT" and not 1 <= len(value) <= TEXT_SCORE_MAX:
            raise BadRequest(f"TEXT score values must be 1 to {TEXT_SCORE_MAX} characters")
        stored = value

    environment = item.get("environment") or "default"
    if not isinstance(environment, str) or not ENVIRONMENT_RE.fullmatch(environment):
        raise BadRequest(
            "environment must be lowercase alphanumeric with hyphens or underscores, "
            "at most 40 characters, and must not start with 'langfuse'"
        )
    source = item.get("source") or "API"
    sources = ("API", "EVAL", "ANNOTATION") if ingestion else ("API", "ANNOTATION")
    if source not in sources:
        raise BadRequest(f"source must be one of {', '.join(sources)}")
    config_id = item.get("configId")
    if source == "ANNOTATION" and not config_id and data_type != "CORRECTION" and not ingestion:
        raise BadRequest(ANNOTATION_SCORE_REQUIRES_CONFIG_ID)
    comment = item.get("comment")
    if comment is not None and not isinstance(comment, str):
        raise BadRequest("comment must be a string")
    score_id = item.get("id")
    if score_id is not None and (not isinstance(score_id, str) or not score_id):
        raise BadRequest("id must be a non-empty string")
    raw_ts = item.get("timestamp")
    if raw_ts is None:
        timestamp_ms = now_ms if now_ms is not None else _now_ms()
    else:
        if not isinstance(raw_ts, str):
            raise BadRequest("timestamp must be an ISO 8601 datetime")
        try:
            timestamp_ms = parse_iso(raw_ts)
        except ValueError as e:
            raise BadRequest("timestamp must be an ISO 8601 datetime") from e
    return ScoreRecord(
        id=score_id or str(uuid.uuid4()),
        name=name,
        value=stored,
        data_type=data_type,
        timestamp_ms=timestamp_ms,
        trace_id=trace_id,
        observation_id=observation_id,
        session_id=session_id,
        dataset_run_id=run_id,
        comment=comment,
        metadata=item.get("metadata"),
        environment=environment,
        source=source,
        config_id=config_id if isinstance(config_id, str) else None,
        queue_id=item.get("queueId") if isinstance(item.get("queueId"), str) else None,
    )


# --------------------------------------------------------------------------- score configs


def _copy_config(config: ScoreConfigRecord) -> ScoreConfigRecord:
    cats = [dict(c) for c in config.categories] if config.categories is not None else None
    return replace(config, categories=cats)


def _js_num(value: float) -> str:
    """A number as JavaScript prints it in a template string (1, not 1.0)."""
    return str(int(value)) if value.is_integer() else repr(value)


def _config_name(raw: Any) -> str:
    if not isinstance(raw, str) or not SCORE_CONFIG_NAME_RE.fullmatch(raw):
        raise BadRequest(
            "name must be 1 to 35 characters: letters, numbers, underscores, spaces, "
            "periods, parentheses and hyphens"
        )
    return raw


def _opt_string(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"{key} must be a string")
    return value


def _opt_number(body: Mapping[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRequest(f"{key} must be a finite number")
    return float(value)


_CATEGORIES_SHAPE = (
    "Category must be an array of objects with label value pairs, where labels and values "
    "are unique."
)


def _checked_config_values(
    data_type: str, min_value: float | None, max_value: float | None, categories: Any
) -> tuple[float | None, float | None, list[dict[str, Any]] | None]:
    """The NUMERIC / CATEGORICAL / BOOLEAN rules of Langfuse's score config schema."""
    if data_type == "BOOLEAN":
        return None, None, [dict(c) for c in BOOLEAN_CATEGORIES]
    if data_type == "TEXT":
        return None, None, None
    if data_type == "NUMERIC":
        if categories is not None:
            raise BadRequest("categories are only allowed for CATEGORICAL score configs")
        if min_value is not None and max_value is not None and max_value <= min_value:
            raise BadRequest("Maximum value must be greater than Minimum value")
        return min_value, max_value, None
    # CATEGORICAL
    if min_value is not None or max_value is not None:
        raise BadRequest("minValue and maxValue are only allowed for NUMERIC score configs")
    if not isinstance(categories, list):
        raise BadRequest(
            f"categories are required for CATEGORICAL score configs. {_CATEGORIES_SHAPE}"
        )
    out: list[dict[str, Any]] = []
    labels: set[str] = set()
    values: set[float] = set()
    for cat in categories:
        label = cat.get("label") if isinstance(cat, dict) else None
        value = cat.get("value") if isinstance(cat, dict) else None
        if (
            not isinstance(label, str)
            or not label
            or isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise BadRequest(_CATEGORIES_SHAPE)
        if label in labels:
            raise BadRequest(f"Duplicate category label: {label}, category labels must be unique")
        if value in values:
            raise BadRequest(
                f"Duplicate category value: {_js_num(float(value))}, category values must be unique"
            )
        labels.add(label)
        values.add(value)
        out.append({"label": label, "value": value})
    return None, None, out
