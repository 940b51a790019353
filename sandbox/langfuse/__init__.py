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

Modules: ``common`` (constants, errors, HTTP helpers), ``records``, ``store`` (``store_base``,
``store_observations``, ``store_scores``, ``store_queues``), ``otlp`` (decoding), ``validation``,
``filters``; the routes in ``observations``, ``ingest``, ``scores``, ``score_configs``,
``annotation_queues``, put together by ``app`` (one route table, one auth dependency) and served by
``server``. The public names are re-exported here:
``from sandbox.langfuse import LangfuseSandbox, LangfuseStore``.
"""

from __future__ import annotations

from sandbox.langfuse.annotation_queues import (
    queue_item_json,
    queue_json,
)
from sandbox.langfuse.app import (
    create_langfuse_app,
    endpoint_of,
)
from sandbox.langfuse.common import (
    ANNOTATION_QUEUE_ENDPOINTS,
    BOOLEAN_CATEGORIES,
    ENVIRONMENT_RE,
    FIELD_GROUPS,
    GENERAL_API_ENDPOINTS,
    INGESTION_ENDPOINTS,
    INGESTION_MAX_BODY_BYTES,
    INGESTION_SUSPENDED,
    LEVELS,
    MAX_BODY_BYTES,
    METADATA_TRUNCATE_AT,
    METADATA_TRUNCATION_SUFFIX,
    OBSERVATION_TYPES,
    OBSERVATIONS_DEFAULT_LIMIT,
    OBSERVATIONS_MAX_LIMIT,
    OBSERVATIONS_V2_DISABLED,
    PAGE_DEFAULT_LIMIT,
    PAGE_MAX_LIMIT,
    PROFILE_VERSIONS,
    PROFILES,
    QUEUE_ITEM_STATUSES,
    QUEUE_OBJECT_TYPES,
    RATE_LIMIT_BUCKETS,
    SCORE_CONFIG_DATA_TYPES,
    SCORE_CONFIG_NAME_RE,
    SCORE_DATA_TYPES,
    SCORE_FIELD_GROUPS,
    SCORES_DEFAULT_LIMIT,
    SCORES_MAX_LIMIT,
    SERVER_VERSION,
    TEXT_SCORE_MAX,
    ApiError,
    BadRequest,
    NotAllowed,
    NotFound,
    error_body,
    iso,
    ms_to_datetime,
    parse_iso,
    to_ms,
)
from sandbox.langfuse.filters import (
    parse_observation_filter,
)
from sandbox.langfuse.observations import (
    observation_json,
)
from sandbox.langfuse.otlp import (
    decode_otlp,
)
from sandbox.langfuse.records import (
    AnnotationQueueRecord,
    DroppedScore,
    ObservationRecord,
    QueueItemRecord,
    ScoreConfigRecord,
    ScoreDropped,
    ScoreRecord,
    TraceRecord,
)
from sandbox.langfuse.score_configs import (
    score_config_json,
)
from sandbox.langfuse.scores import (
    score_json,
)
from sandbox.langfuse.server import (
    LangfuseSandbox,
)
from sandbox.langfuse.store import (
    LangfuseStore,
)
from sandbox.langfuse.validation import (
    validate_score,
)

__all__ = [
    "ANNOTATION_QUEUE_ENDPOINTS",
    "BOOLEAN_CATEGORIES",
    "ENVIRONMENT_RE",
    "FIELD_GROUPS",
    "GENERAL_API_ENDPOINTS",
    "INGESTION_ENDPOINTS",
    "INGESTION_MAX_BODY_BYTES",
    "INGESTION_SUSPENDED",
    "LEVELS",
    "MAX_BODY_BYTES",
    "METADATA_TRUNCATE_AT",
    "METADATA_TRUNCATION_SUFFIX",
    "OBSERVATIONS_DEFAULT_LIMIT",
    "OBSERVATIONS_MAX_LIMIT",
    "OBSERVATIONS_V2_DISABLED",
    "OBSERVATION_TYPES",
    "PAGE_DEFAULT_LIMIT",
    "PAGE_MAX_LIMIT",
    "PROFILES",
    "PROFILE_VERSIONS",
    "QUEUE_ITEM_STATUSES",
    "QUEUE_OBJECT_TYPES",
    "RATE_LIMIT_BUCKETS",
    "SCORES_DEFAULT_LIMIT",
    "SCORES_MAX_LIMIT",
    "SCORE_CONFIG_DATA_TYPES",
    "SCORE_CONFIG_NAME_RE",
    "SCORE_DATA_TYPES",
    "SCORE_FIELD_GROUPS",
    "SERVER_VERSION",
    "TEXT_SCORE_MAX",
    "AnnotationQueueRecord",
    "ApiError",
    "BadRequest",
    "DroppedScore",
    "LangfuseSandbox",
    "LangfuseStore",
    "NotAllowed",
    "NotFound",
    "ObservationRecord",
    "QueueItemRecord",
    "ScoreConfigRecord",
    "ScoreDropped",
    "ScoreRecord",
    "TraceRecord",
    "create_langfuse_app",
    "decode_otlp",
    "endpoint_of",
    "error_body",
    "iso",
    "ms_to_datetime",
    "observation_json",
    "parse_iso",
    "parse_observation_filter",
    "queue_item_json",
    "queue_json",
    "score_config_json",
    "score_json",
    "to_ms",
    "validate_score",
]
