"""Constants, time helpers, errors and HTTP helpers shared by the Langfuse sandbox."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

# Server profiles: "current" is Langfuse Cloud / self-hosted v4.59+ (the SDK 5 contract);
# "v4.16" is self-hosted v4.16.0 as its source shows.
PROFILES = ("current", "v4.16")
PROFILE_VERSIONS = {"current": "4.59.0", "v4.16": "4.16.0"}
SERVER_VERSION = PROFILE_VERSIONS["current"]
# LANGFUSE_MIGRATION_V4_WRITE_MODE (web/src/env.mjs, worker/src/env.ts at v4.16.0): "legacy"
# writes only the v3 tables (traces, observations), "events_only" only the v4 events tables,
# "dual" both. v4.16.0 defaults to events_only; Cloud still serves the legacy-table reads (the
# v1 metrics API, deprecated there until 2026-11-16) next to the events ones: "dual".
WRITE_MODES = ("legacy", "dual", "events_only")
WRITE_MODE_DEFAULTS = {"current": "dual", "v4.16": "events_only"}
MAX_BODY_BYTES = 1024 * 1024  # Next.js "1mb" body limit of POST /api/public/scores
OBSERVATIONS_DEFAULT_LIMIT = 50
OBSERVATIONS_MAX_LIMIT = 1000
SCORES_DEFAULT_LIMIT = 50
SCORES_MAX_LIMIT = 100
METADATA_TRUNCATE_AT = 200
# How a metadata value over 200 characters comes back without ``expandMetadata``: its first
# 200 characters plus this marker. (The spec only says "truncated to 200 chars".)
METADATA_TRUNCATION_SUFFIX = "..."
TEXT_SCORE_MAX = 500

# Langfuse Cloud's rate-limit buckets (createAuthedProjectAPIRoute's rateLimitResource, default
# "public-api"; Hobby: 30/min). The annotation-queue routes name "annotation-queues" (Hobby:
# 100/min, web/src/features/public-api/server/RateLimitService.ts); score configs are public-api.
GENERAL_API_ENDPOINTS = frozenset(
    {"observations", "scores.create", "scores.list", "projects"}
    | {"score_configs.create", "score_configs.list", "score_configs.get", "score_configs.update"}
)
ANNOTATION_QUEUE_ENDPOINTS = frozenset(
    {"annotation_queues.create", "annotation_queues.list", "annotation_queues.get"}
    | {
        "annotation_queue_items.create",
        "annotation_queue_items.list",
        "annotation_queue_items.get",
        "annotation_queue_items.update",
        "annotation_queue_items.delete",
    }
)
# POST /api/public/ingestion and the OTLP route both take the "ingestion" resource
# (web/src/pages/api/public/ingestion.ts, .../otel/v1/traces/index.ts; Hobby 1000/min)
INGESTION_ENDPOINTS = frozenset({"ingestion", "otel"})
RATE_LIMIT_BUCKETS: dict[str, frozenset[str]] = {
    "public-api": GENERAL_API_ENDPOINTS,
    "annotation-queues": ANNOTATION_QUEUE_ENDPOINTS,
    "ingestion": INGESTION_ENDPOINTS,
    # GET /api/public/metrics and /api/public/v2/metrics (Hobby: 100 a day each)
    "public-api-metrics": frozenset({"metrics.v1"}),
    "public-api-v2-metrics": frozenset({"metrics.v2"}),
}
# POST /api/public/ingestion: Next.js bodyParser sizeLimit "4.5mb" (bytes.parse: 4.5 * 2**20);
# over it Next answers 413 with this text (plain text, from apiResolver's sendError)
INGESTION_MAX_BODY_BYTES = int(4.5 * 1024 * 1024)
INGESTION_BODY_TOO_LARGE = "Body exceeded 4.5mb limit"
# the key's isIngestionSuspended (web/src/pages/api/public/scores/index.ts, ingestion.ts,
# otel/v1/traces/index.ts at v4.16.0): ForbiddenError -> 403 {"message", "error"}
INGESTION_SUSPENDED = "Ingestion suspended: Usage threshold exceeded. Please upgrade your plan."
# withMiddlewares (web/src/features/public-api/server/withMiddlewares.ts, v4.16.0) answers a
# ClickHouseResourceError (a ClickHouse timeout, memory limit or overcommit) with 422
# {"message": this, "error": "Request timed out"} (RESOURCE_LIMIT_ERROR_MESSAGE +
# DEFAULT_CLICKHOUSE_RESOURCE_ERROR_MESSAGE's docs line)
CLICKHOUSE_RESOURCE_ERROR = (
    "Your query could not be completed. Please narrow your request by adding more specific "
    "filters (e.g., a shorter date range).\n"
    "See https://langfuse.com/docs/api-and-data-platform/features/public-api for more details."
)
# the v2 observations field groups whose columns make a page heavy (input/output, metadata)
HEAVY_FIELD_GROUPS = frozenset({"io", "metadata"})
# packages/shared/src/domain/scores.ts (v4.16.0): a 400 on the REST routes, a silent drop in the
# ingestion worker (validateAndInflateScore)
ANNOTATION_SCORE_REQUIRES_CONFIG_ID = (
    "configId is required when source is ANNOTATION (except for CORRECTION scores)."
)
# v2 observations without LANGFUSE_MIGRATION_V4_ALLOW_PREVIEW_OPT_IN=true (v4.16.0,
# web/src/pages/api/public/v2/observations/index.ts: LangfuseNotFoundError)
OBSERVATIONS_V2_DISABLED = (
    "The observations v2 API is only available in a Langfuse v4 write mode. "
    "Learn more at: https://langfuse.com/docs/v4"
)
# page/limit paging of the score-config and annotation-queue lists (publicApiPaginationZod)
PAGE_DEFAULT_LIMIT = 50
PAGE_MAX_LIMIT = 100
SCORE_CONFIG_DATA_TYPES = frozenset({"NUMERIC", "CATEGORICAL", "BOOLEAN", "TEXT"})
# "Max 35 characters. Only letters, numbers, underscores, spaces, periods, parentheses, and
# hyphens are allowed." (spec, CreateScoreConfigRequest.name)
SCORE_CONFIG_NAME_RE = re.compile(r"^[\w .()\-]{1,35}$")
BOOLEAN_CATEGORIES: tuple[dict[str, Any], ...] = (
    {"label": "True", "value": 1},
    {"label": "False", "value": 0},
)
QUEUE_ITEM_STATUSES = frozenset({"PENDING", "COMPLETED"})
QUEUE_OBJECT_TYPES = frozenset({"TRACE", "OBSERVATION", "SESSION"})

OBSERVATION_TYPES = frozenset(
    {
        "SPAN",
        "GENERATION",
        "EVENT",
        "AGENT",
        "TOOL",
        "CHAIN",
        "RETRIEVER",
        "EVALUATOR",
        "EMBEDDING",
        "GUARDRAIL",
    }
)
LEVELS = frozenset({"DEBUG", "DEFAULT", "WARNING", "ERROR"})
FIELD_GROUPS = frozenset(
    {"core", "basic", "time", "io", "metadata", "model", "usage", "prompt", "metrics"}
    | {"trace_context"}
)
SCORE_DATA_TYPES = frozenset({"NUMERIC", "BOOLEAN", "CATEGORICAL", "TEXT", "CORRECTION"})
# v3 scores: unknown groups are a 400 here, unlike v2 observations (SCORE_FIELD_GROUPS_V3 in
# packages/shared/src/features/scores/interfaces/api/v3/endpoints.ts)
SCORE_FIELD_GROUPS = frozenset({"core", "details", "subject", "annotation"})
ENVIRONMENT_RE = re.compile(r"^(?!langfuse)[a-z0-9_-]{1,40}$")

# --------------------------------------------------------------------------- time helpers

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_ms(value: datetime) -> int:
    """Milliseconds since the epoch (Langfuse keeps DateTime64(3)); naive means UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // timedelta(milliseconds=1)


def ms_to_datetime(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def iso(ms: int | None) -> str | None:
    """``2024-05-01T12:00:00.123Z``, as Langfuse answers."""
    if ms is None:
        return None
    return ms_to_datetime(ms).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_iso(text: str) -> int:
    """Parse an ISO 8601 datetime (``Z`` or offset; naive means UTC) to epoch ms."""
    return to_ms(datetime.fromisoformat(text.strip().replace(" ", "+")))


def _now_ms() -> int:
    return to_ms(datetime.now(UTC))


def _io_text(value: Any) -> str | None:
    """Input/output as the SDK exports them: strings as they are, anything else as JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, default=str)


class BadRequest(Exception):
    """A 400 answer with ``message``; ``error`` overrides the body's ``error`` field."""

    def __init__(self, message: str, error: Any = None) -> None:
        super().__init__(message)
        self.error = error


class ApiError(Exception):
    """An error answer other than 400: ``status`` and the message (``error`` as above)."""

    status = 500

    def __init__(self, message: str, error: Any = None) -> None:
        super().__init__(message)
        self.error = error


class NotFound(ApiError):
    status = 404


class NotAllowed(ApiError):
    status = 405


class RequestTimedOut(ApiError):
    """A ClickHouse resource error as withMiddlewares answers it: 422 "Request timed out"."""

    status = 422

    def __init__(self) -> None:
        super().__init__(CLICKHOUSE_RESOURCE_ERROR, error="Request timed out")


class Forbidden(ApiError):
    """withMiddlewares' answer to a ForbiddenError: 403 with ``error`` "ForbiddenError"."""

    status = 403

    def __init__(self, message: str) -> None:
        super().__init__(message, error="ForbiddenError")


# --------------------------------------------------------------------------- HTTP helpers


def error_body(status: int, message: str | None = None) -> dict[str, Any]:
    """Langfuse's public API error shape: ``{"message": ..., "error": ...}``."""
    reasons = {
        400: "Bad Request",
        401: "Unauthorized",
        403: "Forbidden",
        404: "Not Found",
        405: "Method Not Allowed",
        409: "Conflict",
        413: "Payload Too Large",
        422: "Unprocessable Entity",
        429: "Too Many Requests",
        500: "Internal Server Error",
        501: "Not Implemented",
        502: "Bad Gateway",
        503: "Service Unavailable",
        504: "Gateway Timeout",
    }
    reason = reasons.get(status, "Error")
    default = "Rate limit exceeded" if status == 429 else reason
    return {"message": message or default, "error": reason}


def _error(status: int, message: str, error: Any = None) -> JSONResponse:
    body = error_body(status, message)
    if error is not None:
        body["error"] = error
    return JSONResponse(body, status_code=status)


def _encode_cursor(payload: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
    except (ValueError, binascii.Error) as e:
        raise BadRequest("Invalid cursor") from e
    if not isinstance(payload, list) or len(payload) != 2:
        raise BadRequest("Invalid cursor")
    return payload


def _int_param(params: Mapping[str, str], name: str, default: int, maximum: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as e:
        raise BadRequest(f"Invalid {name}: expected an integer") from e
    if value < 1:
        raise BadRequest(f"Invalid {name}: must be at least 1")
    if value > maximum:
        raise BadRequest(f"Invalid {name}: must be at most {maximum}")
    return value


def _bool_param(raw: str | None, name: str) -> bool | None:
    if raw is None or raw == "":
        return None
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise BadRequest(f"Invalid {name}: expected true or false")


def _time_param(raw: str | None, name: str) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        return parse_iso(raw)
    except ValueError as e:
        raise BadRequest(f"Invalid {name}: expected an ISO 8601 datetime") from e


def _csv(raw: str | None) -> list[str] | None:
    if raw is None or raw == "":
        return None
    return [part.strip() for part in raw.split(",") if part.strip()]


def _paged(
    rows: list[Any], params: Mapping[str, str], render: Callable[[Any], dict[str, Any]]
) -> dict[str, Any]:
    """``page`` (from 1) / ``limit`` (default 50, at most 100) paging with utilsMetaResponse."""
    page = _int_param(params, "page", 1, 2**31 - 1)
    limit = _int_param(params, "limit", PAGE_DEFAULT_LIMIT, PAGE_MAX_LIMIT)
    total = len(rows)
    window = rows[(page - 1) * limit : page * limit]
    return {
        "data": [render(r) for r in window],
        "meta": {
            "page": page,
            "limit": limit,
            "totalItems": total,
            "totalPages": math.ceil(total / limit),
        },
    }


async def _json_object(request: Request, allowed: frozenset[str] | None = None) -> dict[str, Any]:
    """The JSON object body; with ``allowed``, unknown keys are a 400 (zod ``.strict()``)."""
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest("Body exceeded 1mb limit")
    try:
        payload = json.loads(body)
    except ValueError as e:
        raise BadRequest("Invalid JSON body") from e
    if not isinstance(payload, dict):
        raise BadRequest("Body must be a JSON object")
    if allowed is not None:
        unknown = sorted(set(payload) - allowed)
        if unknown:
            raise BadRequest(f"Unrecognized key(s) in object: {', '.join(map(repr, unknown))}")
    return payload


def _api_error(e: Exception) -> Response:
    status = e.status if isinstance(e, ApiError) else 400
    error = e.error if isinstance(e, ApiError | BadRequest) else None
    return _error(status, str(e), error)


def _strict_query(params: Mapping[str, str], allowed: frozenset[str]) -> None:
    """The annotation-queue list queries are zod ``.strict()``: unknown parameters are a 400."""
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise BadRequest(f"Unrecognized key(s) in object: {', '.join(map(repr, unknown))}")
