"""A local, Langfuse-compatible HTTP server for the offline demo, the tests and the benchmarks.

It speaks the parts of the Langfuse public API the project uses (wire facts in
``../shared/docs/PROTOCOLS.md``, shapes from Langfuse's OpenAPI spec v4.16.0):

- ``GET  /api/public/health``            no auth, ``{"status":"OK","version":...}``
- ``GET  /api/public/projects``          the project of the key pair (``auth_check()``)
- ``POST /api/public/otel/v1/traces``    OTLP protobuf (gzip or not) or OTLP JSON, from the SDK
- ``GET  /api/public/v2/observations``   field groups, filters, keyset cursor, newest first
- ``POST /api/public/scores``            a JSON list of scores -> 202 / 207, upsert by id+timestamp
                                          (v4.16: one object -> 200 ``{"id"}``)
- ``GET  /api/public/v3/scores``         filters, field groups, base64url cursor
- ``POST/GET /api/public/score-configs``, ``GET/PATCH /api/public/score-configs/{configId}``
- ``GET/POST /api/public/annotation-queues``, ``GET /api/public/annotation-queues/{queueId}``
- ``GET/POST /api/public/annotation-queues/{queueId}/items``,
  ``GET/PATCH/DELETE /api/public/annotation-queues/{queueId}/items/{itemId}``
  (page/limit paging with ``meta`` = page, limit, totalItems, totalPages)

Server profiles (``LangfuseStore(profile=...)``, ``LangfuseSandbox(profile=...)``):

- ``current`` (default): Langfuse Cloud / self-hosted v4.59+, the contract SDK 5 is built for.
- ``v4.16``: self-hosted v4.16.0 as its source shows: ``POST /api/public/scores`` takes one object
  (a list is a 400), stamped on arrival; score rows keyed by (day, name, id) and the v3 list shows
  one row per id; v2 observations answer 404 without the preview opt-in (``preview_opt_in``);
  the model name comes back only as ``model``.

On both: scores with a ``configId`` are checked the way Langfuse's ingestion worker does, AFTER
the answer said OK (unknown or archived config, dataType mismatch, value out of range or not a
category label: silently dropped, kept in ``store.dropped_scores``; the score takes the config's
name); tags are each observation's own (its span's attributes); unknown ``fields`` groups are
dropped; a duplicate annotation queue name is a 400; the annotation-queue endpoints have their own
rate-limit bucket. ``advance_clock`` moves the server's "now"; ``set_score_read_lag`` hides scores
from reads for a while after they are written.

Every call but health needs HTTP Basic auth with the store's key pair. Data lives in a
:class:`LangfuseStore` (thread-safe, in memory), which tests and benchmarks can also seed directly
(``add_trace`` / ``add_observation`` / ``add_score``) without going through HTTP.

Faults (:mod:`sandbox.faults`) apply per endpoint name: ``health``, ``projects``, ``otel``,
``observations``, ``scores.create``, ``scores.list``, ``score_configs.{create,list,get,update}``,
``annotation_queues.{create,list,get}``,
``annotation_queue_items.{create,list,get,update,delete}``.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import gzip
import json
import math
import re
import secrets
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Self

from fastapi import FastAPI
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.faults import FaultState, RateLimit, install
from sandbox.runner import ServerThread

# Server profiles: "current" is Langfuse Cloud / self-hosted v4.59+ (the SDK 5 contract);
# "v4.16" is self-hosted v4.16.0 as its source shows.
PROFILES = ("current", "v4.16")
PROFILE_VERSIONS = {"current": "4.59.0", "v4.16": "4.16.0"}
SERVER_VERSION = PROFILE_VERSIONS["current"]
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
RATE_LIMIT_BUCKETS: dict[str, frozenset[str]] = {
    "public-api": GENERAL_API_ENDPOINTS,
    "annotation-queues": ANNOTATION_QUEUE_ENDPOINTS,
}
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

# OTel span attributes written by the Langfuse SDK (langfuse/_client/attributes.py)
A_TRACE_NAME = "langfuse.trace.name"
A_TRACE_TAGS = "langfuse.trace.tags"
A_TRACE_PUBLIC = "langfuse.trace.public"
A_TRACE_METADATA = "langfuse.trace.metadata"
A_USER_ID = "user.id"
A_SESSION_ID = "session.id"
A_TYPE = "langfuse.observation.type"
A_OBS_METADATA = "langfuse.observation.metadata"
A_LEVEL = "langfuse.observation.level"
A_STATUS_MESSAGE = "langfuse.observation.status_message"
A_INPUT = "langfuse.observation.input"
A_OUTPUT = "langfuse.observation.output"
A_COMPLETION_START = "langfuse.observation.completion_start_time"
A_MODEL = "langfuse.observation.model.name"
A_MODEL_PARAMETERS = "langfuse.observation.model.parameters"
A_USAGE = "langfuse.observation.usage_details"
A_COST = "langfuse.observation.cost_details"
A_PROMPT_NAME = "langfuse.observation.prompt.name"
A_PROMPT_VERSION = "langfuse.observation.prompt.version"
A_ENVIRONMENT = "langfuse.environment"
A_RELEASE = "langfuse.release"
A_VERSION = "langfuse.version"
A_IS_APP_ROOT = "langfuse.internal.is_app_root"


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


# --------------------------------------------------------------------------- records


@dataclass(slots=True)
class TraceRecord:
    id: str
    start_ms: int
    name: str | None = None
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    release: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    environment: str = "default"
    public: bool = False


@dataclass(slots=True)
class ObservationRecord:
    id: str
    trace_id: str
    type: str
    start_ms: int
    name: str | None = None
    end_ms: int | None = None
    parent_observation_id: str | None = None
    is_root: bool = False
    level: str = "DEFAULT"
    status_message: str | None = None
    version: str | None = None
    environment: str = "default"
    user_id: str | None = None
    session_id: str | None = None
    input: str | None = None
    output: str | None = None
    metadata: dict[str, Any] | None = None
    model: str | None = None
    model_parameters: Any = None
    usage_details: dict[str, int] | None = None
    cost_details: dict[str, float] | None = None
    completion_start_ms: int | None = None
    prompt_name: str | None = None
    prompt_version: int | None = None
    # the observation's OWN tags (v4 events rows: OTel span attributes, not the trace's union)
    tags: tuple[str, ...] = ()
    created_ms: int = 0
    updated_ms: int = 0


@dataclass(slots=True)
class ScoreRecord:
    """One stored score row. Duplicate ids can exist (a resend with another timestamp)."""

    id: str
    name: str
    value: float | str
    data_type: str
    timestamp_ms: int
    trace_id: str | None = None
    observation_id: str | None = None
    session_id: str | None = None
    dataset_run_id: str | None = None
    comment: str | None = None
    metadata: Any = None
    environment: str = "default"
    source: str = "API"
    config_id: str | None = None
    queue_id: str | None = None
    created_ms: int = 0
    updated_ms: int = 0
    seq: int = 0  # insertion order, the tie-breaker of the v3 cursor

    @property
    def timestamp(self) -> datetime:
        return ms_to_datetime(self.timestamp_ms)


@dataclass(slots=True)
class ScoreConfigRecord:
    """A score config (ScoreConfig). ``categories`` is set for CATEGORICAL and BOOLEAN."""

    id: str
    name: str
    data_type: str
    created_ms: int
    updated_ms: int
    is_archived: bool = False
    min_value: float | None = None
    max_value: float | None = None
    categories: list[dict[str, Any]] | None = None
    description: str | None = None
    seq: int = 0


@dataclass(slots=True)
class AnnotationQueueRecord:
    id: str
    name: str
    score_config_ids: list[str]
    created_ms: int
    updated_ms: int
    description: str | None = None
    seq: int = 0


@dataclass(slots=True)
class QueueItemRecord:
    """One item of an annotation queue. The same object may be queued more than once."""

    id: str
    queue_id: str
    object_id: str
    object_type: str
    status: str
    created_ms: int
    updated_ms: int
    completed_ms: int | None = None
    seq: int = 0


# --------------------------------------------------------------------------- the store


@dataclass(slots=True)
class DroppedScore:
    """A score the HTTP answer accepted that ingestion then dropped (a configId problem)."""

    score: ScoreRecord
    reason: str
    dropped_ms: int


class ScoreDropped(Exception):
    """Raised by the config checks of ingestion: the score is dropped, not refused."""


def _check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ValueError(f"unknown Langfuse profile {profile!r}; one of {PROFILES}")
    return profile


class LangfuseStore:
    """One in-memory Langfuse project: traces, observations, scores. Thread-safe.

    Every store gets fresh random API keys (the SDK keeps one client per public key per
    process, so a new sandbox must not reuse an old key).

    ``profile`` picks the server modelled ("current" or "v4.16", see ``PROFILES``). The store
    also holds the server's settings (``preview_opt_in``, ``version``), its clock
    (``advance_clock``) and the score read lag (``set_score_read_lag``).
    """

    def __init__(
        self,
        *,
        project_id: str | None = None,
        project_name: str = "sandbox",
        profile: str = "current",
    ) -> None:
        self._profile = _check_profile(profile)
        # LANGFUSE_MIGRATION_V4_ALLOW_PREVIEW_OPT_IN (v4.16 only: v2 observations need it)
        self.preview_opt_in = True
        self.version: str | None = None  # None: the profile's version
        self._clock_offset_ms = 0
        self._score_read_lag_ms = 0
        self._dropped: list[DroppedScore] = []
        self.project_id = project_id or f"sandbox-project-{secrets.token_hex(4)}"
        self.project_name = project_name
        self.organization_id = "sandbox-org"
        self.public_key = f"pk-lf-sandbox-{secrets.token_hex(8)}"
        self.secret_key = f"sk-lf-sandbox-{secrets.token_hex(16)}"
        self._lock = threading.RLock()
        self._traces: dict[str, TraceRecord] = {}
        self._observations: dict[str, ObservationRecord] = {}
        self._obs_order: list[tuple[int, str]] = []  # (start_ms, id), sorted lazily
        self._obs_sorted = True
        self._scores: dict[int, ScoreRecord] = {}  # seq -> row
        self._score_ids: dict[str, list[int]] = {}  # id -> seqs
        self._score_order: list[tuple[int, int]] = []  # (timestamp_ms, seq), sorted lazily
        self._scores_sorted = True
        self._seq = 0
        self._score_configs: dict[str, ScoreConfigRecord] = {}
        self._queues: dict[str, AnnotationQueueRecord] = {}
        self._queue_items: dict[str, dict[str, QueueItemRecord]] = {}  # queue id -> id -> item
        # Langfuse Cloud Hobby allows one annotation queue (405 beyond); None: no limit
        self.max_annotation_queues: int | None = None

    # ----------------------------------------------------------- profile, clock, read lag

    @property
    def profile(self) -> str:
        return self._profile

    @profile.setter
    def profile(self, value: str) -> None:
        self._profile = _check_profile(value)

    @property
    def server_version(self) -> str:
        """What GET /api/public/health reports."""
        return self.version or PROFILE_VERSIONS[self._profile]

    def now_ms(self) -> int:
        """The sandbox clock: wall-clock time plus every ``advance_clock``."""
        return _now_ms() + self._clock_offset_ms

    def now(self) -> datetime:
        return ms_to_datetime(self.now_ms())

    def advance_clock(self, seconds: float) -> None:
        """Shift the server's "now" (arrival timestamps, read lag, day keys) by ``seconds``."""
        with self._lock:
            self._clock_offset_ms += round(seconds * 1000)

    def set_score_read_lag(self, seconds: float) -> None:
        """Score reads (GET v3/scores) show a score only ``seconds`` after it was written."""
        if seconds < 0:
            raise ValueError("the read lag cannot be negative")
        self._score_read_lag_ms = round(seconds * 1000)

    @property
    def score_read_lag(self) -> float:
        return self._score_read_lag_ms / 1000

    def score_visible(self, score: ScoreRecord) -> bool:
        return score.created_ms + self._score_read_lag_ms <= self.now_ms()

    @property
    def dropped_scores(self) -> list[DroppedScore]:
        """Scores accepted over HTTP and then dropped by ingestion, oldest first (copies)."""
        with self._lock:
            return [replace(d, score=replace(d.score)) for d in self._dropped]

    # ----------------------------------------------------------- seeding: traces

    def add_trace(
        self,
        *,
        trace_id: str | None = None,
        name: str | None = None,
        tags: Iterable[str] = (),
        metadata: Mapping[str, Any] | None = None,
        input: Any = None,
        output: Any = None,
        start_time: datetime,
        end_time: datetime | None = None,
        environment: str = "default",
        user_id: str | None = None,
        session_id: str | None = None,
        release: str | None = None,
        root_observation_id: str | None = None,
    ) -> str:
        """Create a trace and its root observation (type SPAN, ``isRootObservation`` true).

        ``tags`` land on the trace and its root observation; children seeded later inherit them
        unless ``add_observation(tags=())`` says otherwise (see there).

        ``input``/``output`` are stored the way the SDK exports them: a ``str`` as it is,
        anything else as its JSON text. ``metadata`` lands on the trace and its root span.
        Returns the trace id.
        """
        trace_id = trace_id or secrets.token_hex(16)
        start_ms = to_ms(start_time)
        meta = dict(metadata or {})
        with self._lock:
            self._traces[trace_id] = TraceRecord(
                id=trace_id,
                start_ms=start_ms,
                name=name,
                tags=tuple(dict.fromkeys(tags)),
                metadata=meta,
                release=release,
                user_id=user_id,
                session_id=session_id,
                environment=environment,
            )
            self._put_observation(
                ObservationRecord(
                    id=root_observation_id or secrets.token_hex(8),
                    trace_id=trace_id,
                    type="SPAN",
                    name=name,
                    start_ms=start_ms,
                    end_ms=to_ms(end_time) if end_time is not None else None,
                    is_root=True,
                    environment=environment,
                    user_id=user_id,
                    session_id=session_id,
                    input=_io_text(input),
                    output=_io_text(output),
                    metadata=dict(meta) if meta else None,
                    tags=tuple(dict.fromkeys(tags)),
                    created_ms=start_ms,
                    updated_ms=start_ms,
                )
            )
        return trace_id

    def add_observation(
        self,
        *,
        trace_id: str,
        type: str = "GENERATION",
        name: str | None = None,
        input: Any = None,
        output: Any = None,
        parent_observation_id: str | None = None,
        start_time: datetime,
        end_time: datetime | None = None,
        model: str | None = None,
        model_parameters: Any = None,
        metadata: Mapping[str, Any] | None = None,
        level: str = "DEFAULT",
        status_message: str | None = None,
        usage_details: Mapping[str, int] | None = None,
        cost_details: Mapping[str, float] | None = None,
        observation_id: str | None = None,
        environment: str | None = None,
        tags: Iterable[str] | None = None,
    ) -> str:
        """Add a (non-root) observation to an existing trace. Returns the observation id.

        ``tags`` are the observation's own (what the v2 tag filter looks at). None: the trace's
        tags, the shape SDK 5's ``propagate_attributes(tags=...)`` gives every span; ``()``:
        none, as when only the root span carries ``langfuse.trace.tags``."""
        kind = type.upper()
        if kind not in OBSERVATION_TYPES:
            raise ValueError(f"unknown observation type {type!r}")
        start_ms = to_ms(start_time)
        with self._lock:
            trace = self._traces.get(trace_id)
            if trace is None:
                raise KeyError(f"no trace {trace_id!r}")
            obs = ObservationRecord(
                id=observation_id or secrets.token_hex(8),
                trace_id=trace_id,
                type=kind,
                name=name,
                start_ms=start_ms,
                end_ms=to_ms(end_time) if end_time is not None else None,
                parent_observation_id=parent_observation_id,
                is_root=False,
                level=level,
                status_message=status_message,
                environment=environment or trace.environment,
                user_id=trace.user_id,
                session_id=trace.session_id,
                input=_io_text(input),
                output=_io_text(output),
                metadata=dict(metadata) if metadata else None,
                model=model,
                model_parameters=model_parameters,
                usage_details=dict(usage_details) if usage_details else None,
                cost_details=dict(cost_details) if cost_details else None,
                tags=trace.tags if tags is None else tuple(dict.fromkeys(tags)),
                created_ms=start_ms,
                updated_ms=start_ms,
            )
            self._put_observation(obs)
        return obs.id

    def _put_observation(self, obs: ObservationRecord) -> None:
        """Insert or replace (same id) an observation; the caller holds the lock."""
        old = self._observations.get(obs.id)
        if old is not None and old.start_ms != obs.start_ms:
            self._obs_order.remove((old.start_ms, old.id))
            old = None
        self._observations[obs.id] = obs
        if old is None:
            key = (obs.start_ms, obs.id)
            if self._obs_order and key < self._obs_order[-1]:
                self._obs_sorted = False
            self._obs_order.append(key)

    # ----------------------------------------------------------- accessors

    def trace(self, trace_id: str) -> TraceRecord | None:
        with self._lock:
            return self._traces.get(trace_id)

    def trace_count(self) -> int:
        with self._lock:
            return len(self._traces)

    def all_observations(self) -> list[ObservationRecord]:
        with self._lock:
            return list(self._observations.values())

    def observations_for(self, trace_id: str) -> list[ObservationRecord]:
        with self._lock:
            rows = [o for o in self._observations.values() if o.trace_id == trace_id]
        return sorted(rows, key=lambda o: (o.start_ms, o.id))

    def all_scores(self) -> list[ScoreRecord]:
        """Every stored score row, oldest timestamp first (copies)."""
        with self._lock:
            return [replace(s) for s in sorted(self._scores.values(), key=_score_key)]

    def scores_for(self, trace_id: str, name: str | None = None) -> list[ScoreRecord]:
        return [
            s
            for s in self.all_scores()
            if s.trace_id == trace_id and (name is None or s.name == name)
        ]

    # ----------------------------------------------------------- OTel ingestion

    def ingest_otlp(self, request: ExportTraceServiceRequest) -> int:
        """Turn the spans of an OTLP export into traces and observations. Returns span count."""
        count = 0
        now = self.now_ms()
        with self._lock:
            for resource_spans in request.resource_spans:
                resource = _attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self._ingest_span(span, resource, now)
                        count += 1
        return count

    def _ingest_span(self, span: Span, resource: dict[str, Any], now: int) -> None:
        attrs = _attributes(span.attributes)
        trace_id = span.trace_id.hex()
        span_id = span.span_id.hex()
        parent_id = span.parent_span_id.hex() if span.parent_span_id else None
        start_ms = span.start_time_unix_nano // 1_000_000
        end_ms = span.end_time_unix_nano // 1_000_000 if span.end_time_unix_nano else None

        environment = str(attrs.get(A_ENVIRONMENT) or resource.get(A_ENVIRONMENT) or "default")
        release = attrs.get(A_RELEASE) or resource.get(A_RELEASE)
        user_id = _opt_str(attrs.get(A_USER_ID))
        session_id = _opt_str(attrs.get(A_SESSION_ID))
        trace_meta = _prefixed_metadata(attrs, A_TRACE_METADATA)
        obs_meta = _prefixed_metadata(attrs, A_OBS_METADATA)
        # OtelIngestionProcessor.extractTags (packages/shared/src/server/otel/): each span's
        # event row takes the tags of its OWN attributes
        tags = _as_str_list(
            attrs.get(A_TRACE_TAGS)
            or attrs.get("langfuse.tags")
            or attrs.get(f"{A_OBS_METADATA}.langfuse_tags")
            or attrs.get(f"{A_TRACE_METADATA}.langfuse_tags")
        )
        is_root = parent_id is None or attrs.get(A_IS_APP_ROOT) is True

        # the trace: created by its first span, enriched by every later one
        trace = self._traces.get(trace_id)
        if trace is None:
            trace = TraceRecord(id=trace_id, start_ms=start_ms, environment=environment)
            self._traces[trace_id] = trace
        trace.start_ms = min(trace.start_ms, start_ms)
        if attrs.get(A_TRACE_NAME):
            trace.name = str(attrs[A_TRACE_NAME])
        elif trace.name is None and parent_id is None:
            trace.name = span.name
        if tags:
            trace.tags = tuple(dict.fromkeys((*trace.tags, *tags)))
        trace.metadata.update(trace_meta)
        trace.release = _opt_str(release) or trace.release
        trace.user_id = user_id or trace.user_id
        trace.session_id = session_id or trace.session_id
        if attrs.get(A_TRACE_PUBLIC) is True:
            trace.public = True
        if parent_id is None:
            trace.environment = environment

        kind = str(attrs.get(A_TYPE) or "").upper()
        if kind not in OBSERVATION_TYPES:
            kind = "GENERATION" if attrs.get("gen_ai.request.model") else "SPAN"
        level = str(attrs.get(A_LEVEL) or "DEFAULT").upper()
        status_message = _opt_str(attrs.get(A_STATUS_MESSAGE))
        if span.status.code == Status.STATUS_CODE_ERROR:
            level = "ERROR"
            status_message = status_message or span.status.message or None
        if level not in LEVELS:
            level = "DEFAULT"
        metadata = {**trace_meta, **obs_meta}
        prompt_version = attrs.get(A_PROMPT_VERSION)
        old = self._observations.get(span_id)
        self._put_observation(
            ObservationRecord(
                id=span_id,
                trace_id=trace_id,
                type=kind,
                name=span.name,
                start_ms=start_ms,
                end_ms=end_ms,
                parent_observation_id=parent_id,
                is_root=is_root,
                level=level,
                status_message=status_message,
                version=_opt_str(attrs.get(A_VERSION)),
                environment=environment,
                user_id=user_id,
                session_id=session_id,
                input=_opt_str(attrs.get(A_INPUT)),
                output=_opt_str(attrs.get(A_OUTPUT)),
                metadata=metadata or None,
                model=_opt_str(
                    attrs.get(A_MODEL)
                    or attrs.get("gen_ai.response.model")
                    or attrs.get("gen_ai.request.model")
                ),
                model_parameters=_json_or_none(attrs.get(A_MODEL_PARAMETERS)),
                usage_details=_json_dict(attrs.get(A_USAGE), int),
                cost_details=_json_dict(attrs.get(A_COST), float),
                completion_start_ms=_iso_attr_ms(attrs.get(A_COMPLETION_START)),
                prompt_name=_opt_str(attrs.get(A_PROMPT_NAME)),
                prompt_version=int(prompt_version) if isinstance(prompt_version, int) else None,
                tags=tuple(dict.fromkeys(tags)),
                created_ms=old.created_ms if old is not None else now,
                updated_ms=now,
            )
        )

    # ----------------------------------------------------------- observations query

    def query_observations(
        self,
        *,
        predicate: Callable[[ObservationRecord, TraceRecord | None], bool],
        from_ms: int | None,
        to_ms: int | None,
        before: tuple[int, str] | None,
        limit: int,
    ) -> tuple[list[tuple[ObservationRecord, TraceRecord | None]], bool]:
        """Newest first (start time, then id, descending), at most ``limit`` rows.

        ``from_ms`` inclusive, ``to_ms`` exclusive, ``before`` an exclusive keyset cursor.
        Returns the rows (with their traces) and whether more rows follow.
        """
        rows: list[tuple[ObservationRecord, TraceRecord | None]] = []
        with self._lock:
            if not self._obs_sorted:
                self._obs_order.sort()
                self._obs_sorted = True
            order = self._obs_order
            hi = len(order)
            if to_ms is not None:
                hi = bisect.bisect_left(order, (to_ms, ""))
            if before is not None:
                hi = min(hi, bisect.bisect_left(order, before))
            lo = bisect.bisect_left(order, (from_ms, "")) if from_ms is not None else 0
            observations, traces = self._observations, self._traces
            for i in range(hi - 1, lo - 1, -1):
                obs = observations[order[i][1]]
                trace = traces.get(obs.trace_id)
                if predicate(obs, trace):
                    rows.append((obs, trace))
                    if len(rows) > limit:
                        return rows[:limit], True
        return rows, False

    # ----------------------------------------------------------- scores

    def upsert_score(self, score: ScoreRecord) -> ScoreRecord:
        """Store a score row.

        current: a stored row with the same id, timestamp and name is updated in place;
        otherwise a row is added (a resend with another timestamp duplicates).
        v4.16: rows are keyed (project, day of timestamp, name, id), the ClickHouse ORDER BY of
        ``scores`` (packages/shared/clickhouse/migrations/clustered/0003_scores.up.sql): the same
        key replaces the row, timestamp included; another day adds a row.
        """
        now = self.now_ms()
        by_day = self._profile == "v4.16"
        with self._lock:
            for seq in self._score_ids.get(score.id, []):
                row = self._scores[seq]
                if row.name != score.name:
                    continue
                if by_day and _day(row.timestamp_ms) == _day(score.timestamp_ms):
                    updated = replace(score, seq=seq, created_ms=now, updated_ms=now)
                    if row.timestamp_ms != score.timestamp_ms:
                        self._score_order.remove((row.timestamp_ms, seq))
                        self._add_score_order(updated)
                    self._scores[seq] = updated
                    return replace(updated)
                if not by_day and row.timestamp_ms == score.timestamp_ms:
                    updated = replace(score, seq=seq, created_ms=row.created_ms, updated_ms=now)
                    self._scores[seq] = updated
                    return replace(updated)
            self._seq += 1
            stored = replace(score, seq=self._seq, created_ms=now, updated_ms=now)
            self._scores[stored.seq] = stored
            self._score_ids.setdefault(stored.id, []).append(stored.seq)
            self._add_score_order(stored)
            return replace(stored)

    def _add_score_order(self, score: ScoreRecord) -> None:
        key = (score.timestamp_ms, score.seq)
        if self._score_order and key < self._score_order[-1]:
            self._scores_sorted = False
        self._score_order.append(key)

    def ingest_score(self, item: Mapping[str, Any], score: ScoreRecord) -> ScoreRecord | None:
        """What ingestion does with a score the HTTP answer already accepted: apply its config
        (:meth:`inflate_with_config`) and store it, or drop it silently (kept in
        ``dropped_scores``) and return None."""
        try:
            final = self.inflate_with_config(item, score)
        except ScoreDropped as e:
            with self._lock:
                self._dropped.append(DroppedScore(replace(score), str(e), self.now_ms()))
            return None
        return self.upsert_score(final)

    def add_score(
        self,
        *,
        name: str,
        value: float | str,
        trace_id: str | None = None,
        observation_id: str | None = None,
        session_id: str | None = None,
        data_type: str = "NUMERIC",
        score_id: str | None = None,
        timestamp: datetime | None = None,
        comment: str | None = None,
        metadata: Any = None,
        environment: str = "default",
        source: str = "API",
    ) -> ScoreRecord:
        """Seed a score directly (same upsert rules as the HTTP endpoint)."""
        return self.upsert_score(
            ScoreRecord(
                id=score_id or str(uuid.uuid4()),
                name=name,
                value=value,
                data_type=data_type,
                timestamp_ms=to_ms(timestamp) if timestamp is not None else self.now_ms(),
                trace_id=trace_id,
                observation_id=observation_id,
                session_id=session_id,
                comment=comment,
                metadata=metadata,
                environment=environment,
                source=source,
            )
        )

    def query_scores(
        self,
        *,
        predicate: Callable[[ScoreRecord], bool],
        from_ms: int | None,
        to_ms: int | None,
        before: tuple[int, int] | None,
        limit: int,
        one_per_id: bool = False,
    ) -> tuple[list[ScoreRecord], bool]:
        """Newest timestamp first; same keyset rules as :meth:`query_observations`.

        ``one_per_id``: only the newest matching row of an id, as v4.16's v3 list query does
        (``ORDER BY s.timestamp DESC, s.id DESC, s.event_ts DESC LIMIT 1 BY s.id, s.project_id``
        in packages/shared/src/server/repositories/scores.ts): per query, after the filters and
        the cursor, so an older row of an id on one page can still show on a later page.
        """
        rows: list[ScoreRecord] = []
        seen: set[str] = set()
        with self._lock:
            if not self._scores_sorted:
                self._score_order.sort()
                self._scores_sorted = True
            order = self._score_order
            hi = len(order)
            if to_ms is not None:
                hi = bisect.bisect_left(order, (to_ms, -1))
            if before is not None:
                hi = min(hi, bisect.bisect_left(order, before))
            lo = bisect.bisect_left(order, (from_ms, -1)) if from_ms is not None else 0
            for i in range(hi - 1, lo - 1, -1):
                score = self._scores[order[i][1]]
                if predicate(score):
                    if one_per_id:
                        if score.id in seen:
                            continue
                        seen.add(score.id)
                    rows.append(score)
                    if len(rows) > limit:
                        return rows[:limit], True
        return rows, False

    # ----------------------------------------------------------- score configs

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def create_score_config(self, body: Mapping[str, Any]) -> ScoreConfigRecord:
        """Validate a CreateScoreConfigRequest body and store the config (BadRequest if bad)."""
        name = _config_name(body.get("name"))
        data_type = body.get("dataType")
        if data_type not in SCORE_CONFIG_DATA_TYPES:
            raise BadRequest(f"dataType must be one of {sorted(SCORE_CONFIG_DATA_TYPES)}")
        description = _opt_string(body, "description")
        min_value, max_value = _opt_number(body, "minValue"), _opt_number(body, "maxValue")
        categories = body.get("categories")
        if data_type == "BOOLEAN":
            if categories is not None:
                raise BadRequest(
                    "Categories are autogenerated for boolean configs and cannot be passed"
                )
            min_value = max_value = None  # not part of the BOOLEAN body: dropped
        elif data_type == "TEXT":
            if categories is not None:
                raise BadRequest("categories are only allowed for CATEGORICAL score configs")
            min_value = max_value = None
        min_value, max_value, cats = _checked_config_values(
            data_type, min_value, max_value, categories
        )
        now = self.now_ms()
        with self._lock:
            config = ScoreConfigRecord(
                id=str(uuid.uuid4()),
                name=name,
                data_type=data_type,
                created_ms=now,
                updated_ms=now,
                min_value=min_value,
                max_value=max_value,
                categories=cats,
                description=description,
                seq=self._next_seq(),
            )
            self._score_configs[config.id] = config
            return _copy_config(config)

    def add_score_config(
        self,
        *,
        name: str,
        data_type: str = "NUMERIC",
        min_value: float | None = None,
        max_value: float | None = None,
        categories: Iterable[Mapping[str, Any]] | None = None,
        description: str | None = None,
    ) -> ScoreConfigRecord:
        """Seed a score config directly (same validation as the HTTP endpoint)."""
        body: dict[str, Any] = {"name": name, "dataType": data_type}
        if min_value is not None:
            body["minValue"] = min_value
        if max_value is not None:
            body["maxValue"] = max_value
        if categories is not None:
            body["categories"] = [dict(c) for c in categories]
        if description is not None:
            body["description"] = description
        return self.create_score_config(body)

    def update_score_config(self, config_id: str, body: Mapping[str, Any]) -> ScoreConfigRecord:
        """PATCH: merge ``body`` into the config and re-validate the whole (NotFound,
        BadRequest)."""
        with self._lock:
            old = self._score_configs.get(config_id)
            if old is None:
                raise NotFound("Score config not found within authorized project")
            name = _config_name(body["name"]) if body.get("name") is not None else old.name
            archived = body.get("isArchived")
            if archived is not None and not isinstance(archived, bool):
                raise BadRequest("isArchived must be a boolean")
            description = (
                _opt_string(body, "description") if "description" in body else old.description
            )
            min_value = _opt_number(body, "minValue") if "minValue" in body else old.min_value
            max_value = _opt_number(body, "maxValue") if "maxValue" in body else old.max_value
            categories: Any = body.get("categories", old.categories)
            if old.data_type == "BOOLEAN":
                if categories != [dict(c) for c in BOOLEAN_CATEGORIES]:
                    raise BadRequest("Boolean data type must have exactly 2 categories.")
                if min_value is not None or max_value is not None:
                    raise BadRequest("minValue and maxValue are only allowed for NUMERIC configs")
                cats: list[dict[str, Any]] | None = [dict(c) for c in BOOLEAN_CATEGORIES]
            elif old.data_type == "TEXT":
                if categories is not None:
                    raise BadRequest("categories are only allowed for CATEGORICAL score configs")
                if min_value is not None or max_value is not None:
                    raise BadRequest("minValue and maxValue are only allowed for NUMERIC configs")
                cats = None
            else:
                min_value, max_value, cats = _checked_config_values(
                    old.data_type, min_value, max_value, categories
                )
            new = replace(
                old,
                name=name,
                is_archived=old.is_archived if archived is None else archived,
                description=description,
                min_value=min_value,
                max_value=max_value,
                categories=cats,
                updated_ms=self.now_ms(),
            )
            self._score_configs[config_id] = new
            return _copy_config(new)

    def score_config(self, config_id: str) -> ScoreConfigRecord | None:
        with self._lock:
            config = self._score_configs.get(config_id)
            return _copy_config(config) if config is not None else None

    def score_configs(self) -> list[ScoreConfigRecord]:
        """Every score config, oldest first (copies)."""
        with self._lock:
            return [_copy_config(c) for c in self._score_configs.values()]

    def inflate_with_config(self, item: Mapping[str, Any], score: ScoreRecord) -> ScoreRecord:
        """The configId checks of Langfuse's ingestion worker, run after the HTTP answer
        (packages/shared/src/server/ingestion/validateAndInflateScore.ts; the worker's
        processScoreEventList catches the error and "rejects silently"): the config must exist,
        not be archived and agree on dataType; the value must fit its range or categories; the
        score takes the config's name and dataType. Raises ScoreDropped."""
        config_id = item.get("configId")
        if not config_id:
            return score
        config = self.score_config(config_id) if isinstance(config_id, str) else None
        if config is None:
            raise ScoreDropped(
                "The configId you provided does not match a valid config in this project"
            )
        data_type = item.get("dataType")
        if data_type and data_type != config.data_type:
            raise ScoreDropped(
                f"Data type mismatch based on config: expected {config.data_type}, got {data_type}"
            )
        if config.is_archived:
            raise ScoreDropped(
                "Config is archived and cannot be used to create new scores. "
                "Please restore the config first."
            )
        try:
            inflated = validate_score(
                {**item, "name": config.name, "dataType": config.data_type},
                now_ms=score.timestamp_ms,
            )
        except BadRequest as e:
            raise ScoreDropped(f"Ingested score body not valid against provided config: {e}") from e
        inflated = replace(inflated, id=score.id, timestamp_ms=score.timestamp_ms)
        problem: str | None = None
        if config.data_type == "NUMERIC" and isinstance(inflated.value, float):
            if config.max_value is not None and inflated.value > config.max_value:
                problem = f"Value exceeds maximum value of {_js_num(config.max_value)}"
            elif config.min_value is not None and inflated.value < config.min_value:
                problem = f"Value is below minimum value of {_js_num(config.min_value)}"
            if problem:
                problem += " defined in config"
        elif config.data_type == "CATEGORICAL":
            labels = [c["label"] for c in config.categories or []]
            if inflated.value not in labels:
                problem = (
                    f"Value {inflated.value} does not map to a valid category. "
                    "Pass a valid category value."
                )
        if problem:
            raise ScoreDropped(f"Ingested score body not valid against provided config: {problem}")
        return inflated

    # ----------------------------------------------------------- annotation queues

    def create_annotation_queue(
        self, *, name: str, score_config_ids: Iterable[str], description: str | None = None
    ) -> AnnotationQueueRecord:
        """A new queue. BadRequest if the project has a queue of that name or a score config id
        is unknown; NotAllowed beyond ``max_annotation_queues``."""
        config_ids = list(score_config_ids)
        if not config_ids:
            raise BadRequest("scoreConfigIds must hold at least one score config id")
        with self._lock:
            if (
                self.max_annotation_queues is not None
                and len(self._queues) >= self.max_annotation_queues
            ):
                raise NotAllowed("Maximum number of annotation queues reached on Hobby plan.")
            if any(cid not in self._score_configs for cid in config_ids):
                raise BadRequest(
                    "At least one of the score config IDs cannot be found for the given project.",
                    error="InvalidRequestError",
                )
            if any(q.name == name for q in self._queues.values()):
                # Prisma P2002 -> InvalidRequestError (v4.16.0, web/src/features/
                # annotation-queues/server/publicAnnotationQueueService.ts)
                raise BadRequest(
                    "A queue with this name already exists.", error="InvalidRequestError"
                )
            now = self.now_ms()
            queue = AnnotationQueueRecord(
                id=str(uuid.uuid4()),
                name=name,
                score_config_ids=config_ids,
                created_ms=now,
                updated_ms=now,
                description=description,
                seq=self._next_seq(),
            )
            self._queues[queue.id] = queue
            self._queue_items[queue.id] = {}
            return replace(queue, score_config_ids=list(config_ids))

    def annotation_queue(self, queue_id: str) -> AnnotationQueueRecord | None:
        with self._lock:
            queue = self._queues.get(queue_id)
            if queue is None:
                return None
            return replace(queue, score_config_ids=list(queue.score_config_ids))

    def annotation_queues(self) -> list[AnnotationQueueRecord]:
        """Every annotation queue, oldest first (copies)."""
        with self._lock:
            return [
                replace(q, score_config_ids=list(q.score_config_ids)) for q in self._queues.values()
            ]

    def _items_of(self, queue_id: str) -> dict[str, QueueItemRecord]:
        items = self._queue_items.get(queue_id)
        if items is None:
            raise NotFound("Annotation queue not found")
        return items

    def add_queue_item(
        self, queue_id: str, *, object_id: str, object_type: str = "TRACE", status: str = "PENDING"
    ) -> QueueItemRecord:
        """Queue an object (no de-duplication: queueing it again adds another item)."""
        if object_type not in QUEUE_OBJECT_TYPES:
            raise BadRequest(f"objectType must be one of {sorted(QUEUE_OBJECT_TYPES)}")
        if status not in QUEUE_ITEM_STATUSES:
            raise BadRequest(f"status must be one of {sorted(QUEUE_ITEM_STATUSES)}")
        with self._lock:
            items = self._items_of(queue_id)
            now = self.now_ms()
            item = QueueItemRecord(
                id=str(uuid.uuid4()),
                queue_id=queue_id,
                object_id=object_id,
                object_type=object_type,
                status=status,
                created_ms=now,
                updated_ms=now,
                completed_ms=now if status == "COMPLETED" else None,
                seq=self._next_seq(),
            )
            items[item.id] = item
            return replace(item)

    def queue_items(self, queue_id: str) -> list[QueueItemRecord]:
        """The items of a queue, oldest first (copies); [] for an unknown queue."""
        with self._lock:
            return [replace(i) for i in self._queue_items.get(queue_id, {}).values()]

    def queue_item(self, queue_id: str, item_id: str) -> QueueItemRecord:
        """One item (NotFound for an unknown queue or item)."""
        with self._lock:
            item = self._items_of(queue_id).get(item_id)
            if item is None:
                raise NotFound("Annotation queue item not found")
            return replace(item)

    def update_queue_item(
        self, queue_id: str, item_id: str, *, status: str | None = None
    ) -> QueueItemRecord:
        """Set the status; COMPLETED stamps ``completedAt`` (PENDING leaves it, as Langfuse)."""
        if status is not None and status not in QUEUE_ITEM_STATUSES:
            raise BadRequest(f"status must be one of {sorted(QUEUE_ITEM_STATUSES)}")
        with self._lock:
            items = self._items_of(queue_id)
            item = items.get(item_id)
            if item is None:
                raise NotFound("Annotation queue item not found")
            now = self.now_ms()
            new = replace(
                item,
                status=status or item.status,
                completed_ms=now if status == "COMPLETED" else item.completed_ms,
                updated_ms=now,
            )
            items[item_id] = new
            return replace(new)

    def delete_queue_item(self, queue_id: str, item_id: str) -> None:
        with self._lock:
            items = self._items_of(queue_id)
            if items.pop(item_id, None) is None:
                raise NotFound("Annotation queue item not found")


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


def _score_key(s: ScoreRecord) -> tuple[int, int]:
    return (s.timestamp_ms, s.seq)


def _day(ms: int) -> int:
    return ms // 86_400_000


# --------------------------------------------------------------------------- OTLP decoding


def _any_value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        return v.double_value
    if kind == "array_value":
        return [_any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return None


def _attributes(kvs: Iterable[KeyValue]) -> dict[str, Any]:
    return {kv.key: _any_value(kv.value) for kv in kvs}


def _opt_str(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _as_str_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return [value]
        if isinstance(parsed, list):
            return [str(v) for v in parsed]
        if "," in value:
            return [part.strip() for part in value.split(",")]
        return [value]
    return [str(value)]


def _decode_metadata_value(value: Any) -> Any:
    """SDK 5 JSON-encodes every metadata value (strings too); the server decodes them."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _prefixed_metadata(attrs: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    whole = attrs.get(prefix)
    if whole is not None:
        decoded = _decode_metadata_value(whole)
        if isinstance(decoded, dict):
            out.update(decoded)
        else:
            out["metadata"] = decoded
    dotted = prefix + "."
    for key, value in attrs.items():
        if key.startswith(dotted):
            out[key[len(dotted) :]] = _decode_metadata_value(value)
    return out


def _json_or_none(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _json_dict(value: Any, cast: Callable[[Any], Any]) -> dict[str, Any] | None:
    parsed = _json_or_none(value)
    if not isinstance(parsed, dict):
        return None
    out: dict[str, Any] = {}
    for k, v in parsed.items():
        if isinstance(v, int | float) and not isinstance(v, bool):
            out[str(k)] = cast(v)
    return out


def _iso_attr_ms(value: Any) -> int | None:
    text = _json_or_none(value)
    if not isinstance(text, str):
        return None
    try:
        return parse_iso(text)
    except ValueError:
        return None


def _hex_ids_to_base64(obj: Any) -> Any:
    """OTLP JSON carries trace/span ids as hex; protobuf's JSON mapping wants base64."""
    if isinstance(obj, list):
        return [_hex_ids_to_base64(x) for x in obj]
    if not isinstance(obj, dict):
        return obj
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if key in ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"):
            if isinstance(value, str) and value and re.fullmatch(r"[0-9a-fA-F]+", value):
                value = base64.b64encode(bytes.fromhex(value)).decode("ascii")
            out[key] = value
        else:
            out[key] = _hex_ids_to_base64(value)
    return out


def decode_otlp(body: bytes, content_type: str, content_encoding: str) -> tuple[Any, bool]:
    """Decode an OTLP/HTTP trace export body. Returns (request, is_json)."""
    if "gzip" in content_encoding.lower():
        body = gzip.decompress(body)
    request = ExportTraceServiceRequest()
    if "json" in content_type.lower():
        json_format.ParseDict(
            _hex_ids_to_base64(json.loads(body)), request, ignore_unknown_fields=True
        )
        return request, True
    request.ParseFromString(body)
    return request, False


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
        429: "Too Many Requests",
        500: "Internal Server Error",
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


# --------------------------------------------------------------------------- v2 observations

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


def _observations_page(store: LangfuseStore, request: Request, fault_repeat: int) -> Response:
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

    def predicate(o: ObservationRecord, t: TraceRecord | None) -> bool:
        return all(p(o, t) for p in predicates)

    rows, more = store.query_observations(
        predicate=predicate, from_ms=from_ms, to_ms=to_ms_, before=before, limit=limit
    )
    meta: dict[str, Any] = {}
    if more and rows:
        # fault: the next page starts with the last N rows of this one (an unmerged store)
        last = rows[-1 - min(fault_repeat, len(rows) - 1)][0]
        meta["cursor"] = _encode_cursor([last.start_ms, last.id])
    data = [
        observation_json(o, t, groups, expand, store.project_id, store.profile) for o, t in rows
    ]
    return JSONResponse({"data": data, "meta": meta})


# --------------------------------------------------------------------------- scores


def validate_score(item: Any, *, now_ms: int | None = None) -> ScoreRecord:
    """Check one score of a POST body; raise BadRequest with the reason. A missing timestamp
    is ``now_ms`` (default: wall-clock now)."""
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
    if source not in ("API", "ANNOTATION"):
        raise BadRequest("source must be API or ANNOTATION")
    config_id = item.get("configId")
    if source == "ANNOTATION" and not config_id and data_type != "CORRECTION":
        raise BadRequest("ANNOTATION scores need a configId")
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
        row.update(authorUserId=None, queueId=score.queue_id)
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


def _scores_page(store: LangfuseStore, request: Request) -> Response:
    params = request.query_params
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
    if params.get("authorUserId"):
        checks.append(lambda s: False)  # API scores have no author
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


# --------------------------------------------------------------------------- score configs, queues


def score_config_json(config: ScoreConfigRecord, project_id: str) -> dict[str, Any]:
    """One ScoreConfig."""
    return {
        "id": config.id,
        "name": config.name,
        "createdAt": iso(config.created_ms),
        "updatedAt": iso(config.updated_ms),
        "projectId": project_id,
        "dataType": config.data_type,
        "isArchived": config.is_archived,
        "minValue": config.min_value,
        "maxValue": config.max_value,
        "categories": config.categories,
        "description": config.description,
    }


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


def _strict_query(params: Mapping[str, str], allowed: frozenset[str]) -> None:
    """The annotation-queue list queries are zod ``.strict()``: unknown parameters are a 400."""
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise BadRequest(f"Unrecognized key(s) in object: {', '.join(map(repr, unknown))}")


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
    if score.trace_id in rejected:
        return _error(400, f"Score for trace {score.trace_id} was rejected")
    store.ingest_score(item, score)
    return JSONResponse({"id": score.id})


# --------------------------------------------------------------------------- the app

_ROUTES: dict[tuple[str, str], str] = {
    ("GET", "/api/public/health"): "health",
    ("GET", "/api/public/projects"): "projects",
    ("POST", "/api/public/otel/v1/traces"): "otel",
    ("GET", "/api/public/v2/observations"): "observations",
    ("POST", "/api/public/scores"): "scores.create",
    ("GET", "/api/public/v3/scores"): "scores.list",
}


_ID = r"[^/]+"
_PATTERN_ROUTES: tuple[tuple[str, re.Pattern[str], str], ...] = tuple(
    (method, re.compile(pattern), name)
    for method, pattern, name in (
        ("POST", r"/api/public/score-configs", "score_configs.create"),
        ("GET", r"/api/public/score-configs", "score_configs.list"),
        ("GET", rf"/api/public/score-configs/{_ID}", "score_configs.get"),
        ("PATCH", rf"/api/public/score-configs/{_ID}", "score_configs.update"),
        ("POST", r"/api/public/annotation-queues", "annotation_queues.create"),
        ("GET", r"/api/public/annotation-queues", "annotation_queues.list"),
        ("GET", rf"/api/public/annotation-queues/{_ID}", "annotation_queues.get"),
        ("POST", rf"/api/public/annotation-queues/{_ID}/items", "annotation_queue_items.create"),
        ("GET", rf"/api/public/annotation-queues/{_ID}/items", "annotation_queue_items.list"),
        ("GET", rf"/api/public/annotation-queues/{_ID}/items/{_ID}", "annotation_queue_items.get"),
        (
            "PATCH",
            rf"/api/public/annotation-queues/{_ID}/items/{_ID}",
            "annotation_queue_items.update",
        ),
        (
            "DELETE",
            rf"/api/public/annotation-queues/{_ID}/items/{_ID}",
            "annotation_queue_items.delete",
        ),
    )
)


def endpoint_of(request: Request) -> str | None:
    method, path = request.method, request.url.path.rstrip("/")
    name = _ROUTES.get((method, path))
    if name is None:
        for route_method, pattern, route_name in _PATTERN_ROUTES:
            if route_method == method and pattern.fullmatch(path):
                return route_name
    return name


def create_langfuse_app(store: LangfuseStore) -> FastAPI:
    """The ASGI app serving ``store``; ``app.state.faults`` is its FaultState."""
    app = FastAPI(title="Langfuse sandbox", docs_url=None, redoc_url=None, openapi_url=None)
    faults = install(app, endpoint_of, error_body)
    expected_auth = "Basic " + base64.b64encode(
        f"{store.public_key}:{store.secret_key}".encode()
    ).decode("ascii")

    def unauthorized(request: Request) -> JSONResponse | None:
        header = request.headers.get("authorization")
        if header is None:
            return _error(401, "Unauthorized: no authorization header")
        if not secrets.compare_digest(header.strip().encode(), expected_auth.encode()):
            return _error(401, "Invalid credentials. Confirm that you've configured the keys.")
        return None

    @app.get("/api/public/health")
    async def health() -> Response:
        return JSONResponse({"status": "OK", "version": store.server_version})

    @app.get("/api/public/projects")
    async def projects(request: Request) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        project = {
            "id": store.project_id,
            "name": store.project_name,
            "organization": {"id": store.organization_id, "name": "Sandbox Org"},
            "metadata": {},
        }
        return JSONResponse({"data": [project]})

    @app.post("/api/public/otel/v1/traces")
    async def otel_traces(request: Request) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        body = await request.body()
        try:
            decoded, is_json = decode_otlp(
                body,
                request.headers.get("content-type", ""),
                request.headers.get("content-encoding", ""),
            )
        except (OSError, EOFError, ValueError, DecodeError, json_format.ParseError) as e:
            return _error(400, f"Invalid OTLP request: {e}")
        store.ingest_otlp(decoded)
        if is_json:
            return JSONResponse({})
        return Response(
            ExportTraceServiceResponse().SerializeToString(),
            media_type="application/x-protobuf",
        )

    @app.get("/api/public/v2/observations")
    async def observations(request: Request) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        fault = faults.faults.get("observations")
        try:
            return _observations_page(store, request, fault.repeat_rows if fault else 0)
        except (BadRequest, ApiError) as e:
            return _api_error(e)

    @app.post("/api/public/scores")
    async def create_scores(request: Request) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
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
        if isinstance(payload, dict):  # the older single-score form
            try:
                score = validate_score(payload, now_ms=store.now_ms())
            except BadRequest as e:
                return _api_error(e)
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

    @app.get("/api/public/v3/scores")
    async def list_scores(request: Request) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        try:
            return _scores_page(store, request)
        except BadRequest as e:
            return _error(400, str(e))

    # ------------------------------------------------------------- score configs

    @app.post("/api/public/score-configs")
    async def create_score_config(request: Request) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        try:
            config = store.create_score_config(await _json_object(request))
        except (BadRequest, ApiError) as e:
            return _api_error(e)
        return JSONResponse(score_config_json(config, store.project_id))

    @app.get("/api/public/score-configs")
    async def list_score_configs(request: Request) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        configs = sorted(store.score_configs(), key=lambda c: c.seq, reverse=True)
        try:
            page = _paged(
                configs, request.query_params, lambda c: score_config_json(c, store.project_id)
            )
        except BadRequest as e:
            return _api_error(e)
        return JSONResponse(page)

    @app.get("/api/public/score-configs/{config_id}")
    async def get_score_config(request: Request, config_id: str) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        config = store.score_config(config_id)
        if config is None:
            return _error(404, "Score config not found within authorized project")
        return JSONResponse(score_config_json(config, store.project_id))

    @app.patch("/api/public/score-configs/{config_id}")
    async def update_score_config(request: Request, config_id: str) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        try:
            config = store.update_score_config(config_id, await _json_object(request))
        except (BadRequest, ApiError) as e:
            return _api_error(e)
        return JSONResponse(score_config_json(config, store.project_id))

    # ------------------------------------------------------------- annotation queues

    @app.post("/api/public/annotation-queues")
    async def create_queue(request: Request) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        try:
            queue = _create_queue(store, await _json_object(request, _QUEUE_BODY_KEYS))
        except (BadRequest, ApiError) as e:
            return _api_error(e)
        return JSONResponse(queue_json(queue))

    @app.get("/api/public/annotation-queues")
    async def list_queues(request: Request) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        queues = sorted(store.annotation_queues(), key=lambda q: q.seq, reverse=True)
        try:
            _strict_query(request.query_params, frozenset({"page", "limit"}))
            return JSONResponse(_paged(queues, request.query_params, queue_json))
        except BadRequest as e:
            return _api_error(e)

    @app.get("/api/public/annotation-queues/{queue_id}")
    async def get_queue(request: Request, queue_id: str) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        queue = store.annotation_queue(queue_id)
        if queue is None:
            return _error(404, "Annotation queue not found")
        return JSONResponse(queue_json(queue))

    @app.post("/api/public/annotation-queues/{queue_id}/items")
    async def create_queue_item(request: Request, queue_id: str) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        try:
            body = await _json_object(request, _QUEUE_ITEM_BODY_KEYS)
            item = _create_queue_item(store, queue_id, body)
        except (BadRequest, ApiError) as e:
            return _api_error(e)
        return JSONResponse(queue_item_json(item))

    @app.get("/api/public/annotation-queues/{queue_id}/items")
    async def list_queue_items(request: Request, queue_id: str) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        try:
            return JSONResponse(_queue_items_page(store, queue_id, request.query_params))
        except (BadRequest, ApiError) as e:
            return _api_error(e)

    @app.get("/api/public/annotation-queues/{queue_id}/items/{item_id}")
    async def get_queue_item(request: Request, queue_id: str, item_id: str) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        try:
            return JSONResponse(queue_item_json(store.queue_item(queue_id, item_id)))
        except ApiError as e:
            return _api_error(e)

    @app.patch("/api/public/annotation-queues/{queue_id}/items/{item_id}")
    async def update_queue_item(request: Request, queue_id: str, item_id: str) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        try:
            body = await _json_object(request, _QUEUE_ITEM_PATCH_KEYS)
            item = store.update_queue_item(queue_id, item_id, status=body.get("status"))
        except (BadRequest, ApiError) as e:
            return _api_error(e)
        return JSONResponse(queue_item_json(item))

    @app.delete("/api/public/annotation-queues/{queue_id}/items/{item_id}")
    async def delete_queue_item(request: Request, queue_id: str, item_id: str) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        try:
            store.delete_queue_item(queue_id, item_id)
        except ApiError as e:
            return _api_error(e)
        return JSONResponse(
            {"success": True, "message": "Annotation queue item deleted successfully"}
        )

    return app


# --------------------------------------------------------------------------- the server


class LangfuseSandbox(ServerThread):
    """The Langfuse sandbox on 127.0.0.1:<free port>, served from a thread.

    ``with LangfuseSandbox() as lf: Langfuse(**lf.client_kwargs())`` or export ``lf.env()``.

    ``profile``: the server modelled, "current" (Cloud / self-hosted v4.59+, the SDK 5
    contract) or "v4.16" (self-hosted v4.16.0). ``preview_opt_in=False`` models a v4.16 server
    started without ``LANGFUSE_MIGRATION_V4_ALLOW_PREVIEW_OPT_IN=true``. ``version`` overrides
    what /api/public/health reports. With a ``store``, these settings are written onto it.
    """

    def __init__(
        self,
        store: LangfuseStore | None = None,
        port: int | None = None,
        profile: str = "current",
        preview_opt_in: bool = True,
        version: str | None = None,
    ) -> None:
        self.store = store or LangfuseStore(profile=profile)
        self.store.profile = profile
        self.store.preview_opt_in = preview_opt_in
        self.store.version = version
        app = create_langfuse_app(self.store)
        super().__init__(app, port=port)
        self.faults: FaultState = app.state.faults

    @property
    def profile(self) -> str:
        return self.store.profile

    @profile.setter
    def profile(self, value: str) -> None:
        self.store.profile = value

    @property
    def preview_opt_in(self) -> bool:
        return self.store.preview_opt_in

    @preview_opt_in.setter
    def preview_opt_in(self, value: bool) -> None:
        self.store.preview_opt_in = value

    @property
    def version(self) -> str:
        """What GET /api/public/health reports."""
        return self.store.server_version

    @version.setter
    def version(self, value: str | None) -> None:
        self.store.version = value

    def advance_clock(self, seconds: float) -> None:
        """Shift the server's "now" by ``seconds`` (see :meth:`LangfuseStore.advance_clock`)."""
        self.store.advance_clock(seconds)

    def set_score_read_lag(self, seconds: float) -> None:
        """GET v3/scores shows a score only ``seconds`` (sandbox clock) after it was written."""
        self.store.set_score_read_lag(seconds)

    @property
    def dropped_scores(self) -> list[DroppedScore]:
        return self.store.dropped_scores

    @property
    def public_key(self) -> str:
        return self.store.public_key

    @property
    def secret_key(self) -> str:
        return self.store.secret_key

    def env(self) -> dict[str, str]:
        return {
            "LANGFUSE_PUBLIC_KEY": self.public_key,
            "LANGFUSE_SECRET_KEY": self.secret_key,
            "LANGFUSE_BASE_URL": self.url,
        }

    def client_kwargs(self) -> dict[str, str]:
        """Keyword arguments for ``langfuse.Langfuse(...)``."""
        return {"public_key": self.public_key, "secret_key": self.secret_key, "base_url": self.url}

    def set_rate_limit(
        self,
        per_minute: int = 30,
        window_s: float = 60.0,
        endpoints: Iterable[str] | Literal["bucket"] | None = "bucket",
        bucket: str = "public-api",
    ) -> RateLimit:
        """Langfuse Cloud style limit: ``per_minute`` calls per ``window_s`` in one ``bucket``.

        Buckets are independent (a call counts against one): "public-api" (the general API,
        Hobby 30/min) and "annotation-queues" (Hobby 100/min) cover their endpoints
        (``RATE_LIMIT_BUCKETS``) by default; ``endpoints`` overrides that (None: every
        endpoint). Any other bucket name needs ``endpoints``."""
        if endpoints == "bucket":
            if bucket not in RATE_LIMIT_BUCKETS:
                raise ValueError(f"bucket {bucket!r} needs endpoints")
            endpoints = RATE_LIMIT_BUCKETS[bucket]
        limit = RateLimit(
            limit=per_minute,
            window_s=window_s,
            endpoints=frozenset(endpoints) if endpoints is not None else None,
        )
        if bucket == "public-api":
            self.faults.rate_limit = limit
        else:
            self.faults.rate_limits[bucket] = limit
        return limit

    def start(self) -> Self:
        super().start()
        return self

    def __enter__(self) -> Self:
        return self.start()
