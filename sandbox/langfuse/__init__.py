"""A local, Langfuse-compatible HTTP server for the offline demo, the tests and the benchmarks.

It speaks the parts of the Langfuse public API the project uses (wire facts in
``../shared/docs/PROTOCOLS.md``, shapes from Langfuse's OpenAPI spec v4.16.0, behaviour from the
server source at tag v4.16.0, cited where it matters):

- ``GET  /api/public/health``            no auth, ``{"status":"OK","version":...}``
- ``GET  /api/public/projects``          the project of the key pair (``auth_check()``)
- ``POST /api/public/otel/v1/traces``    OTLP protobuf (gzip or not) or OTLP JSON, from the SDK
- ``GET  /api/public/v2/observations``   field groups, filters, keyset cursor, newest first
- ``POST /api/public/scores``            a JSON list of scores -> 202 / 207, upsert by id+timestamp
                                          (v4.16: one object -> 200 ``{"id"}``)
- ``POST /api/public/ingestion``         ``{"batch":[events]}`` -> 207 ``{"successes":[{id,
  status}], "errors":[{id,status,message,error}]}`` (ids are the EVENTS' ids); score-create
  events are stored, timestamped by their event (see :mod:`sandbox.langfuse.ingestion`)
- ``GET  /api/public/v3/scores``         filters, field groups, base64url cursor; strict query
- ``GET  /api/public/metrics``           v1, the ``traces`` view's count (legacy tables)
- ``GET  /api/public/v2/metrics``        v2, counts of scores and observations (events tables)
- ``POST/GET /api/public/score-configs``, ``GET/PATCH /api/public/score-configs/{configId}``
- ``GET/POST /api/public/annotation-queues``, ``GET /api/public/annotation-queues/{queueId}``
- ``GET/POST /api/public/annotation-queues/{queueId}/items``,
  ``GET/PATCH/DELETE /api/public/annotation-queues/{queueId}/items/{itemId}``
  (page/limit paging with ``meta`` = page, limit, totalItems, totalPages)
- SANDBOX ONLY (no Langfuse server has it): ``POST /sandbox/annotation-queues/{queueId}/items/
  {itemId}/score`` plays the reviewer in Langfuse's annotation UI (:mod:`.review`,
  ``LangfuseStore.annotate``): an ANNOTATION score on the item's object, the item COMPLETED.

Server profiles (``LangfuseStore(profile=...)``, ``LangfuseSandbox(profile=...)``):

- ``current`` (default): Langfuse Cloud / self-hosted v4.59+, the contract SDK 5 is built for;
  write mode "dual"; v1 metrics answers carry ``_deprecation`` (Cloud).
- ``v4.16``: self-hosted v4.16.0 as its source shows: ``POST /api/public/scores`` takes one object
  (a list is a 400), stamped on arrival; one score row per id keeping the FIRST timestamp
  (below); ``LANGFUSE_MIGRATION_V4_ALLOW_PREVIEW_OPT_IN`` is true by default (web/src/env.mjs), so
  v2 observations are served unless ``preview_opt_in`` is set False (then 404); write mode
  "events_only" by default; the model name comes back only as ``model``.

Scores, both profiles: a score with a ``configId`` is checked the way Langfuse's ingestion worker
does, AFTER the answer said OK (unknown or archived config, dataType mismatch, value out of range
or not a category label: silently dropped, kept in ``store.dropped_scores``; the score takes the
config's name). The worker merges every event of one score id into ONE row: timestamp, traceId and
environment stay the first's, the newest event's other fields win, metadata merges
(worker/src/services/IngestionService/index.ts). That is how v4.16 stores scores from either
write route, and how the ingestion route stores them on both profiles; the "current" list POST
keeps SDK 5's documented id+timestamp upsert (another timestamp adds a row).

Write modes (``write_mode``: LANGFUSE_MIGRATION_V4_WRITE_MODE, web/src/env.mjs and
worker/src/env.ts): "legacy" writes traces to the v3 tables only, "events_only" to the v4 events
tables only, "dual" to both; a trace (OTLP or seeded) lands where the mode in force when it
arrives writes it. What a legacy-mode server answers for such traces, from the source:

- ``GET /api/public/v2/observations`` reads the events tables only
  (getObservationsV2FromEventsTableForPublicApi): 200 with ``data: []`` for them (its only gate is
  the preview opt-in).
- ``GET /api/public/v2/metrics`` is a 404 in legacy mode (isMetricsV2Available in
  web/src/pages/api/public/v2/metrics.ts: opt-in true AND write mode not legacy).
- The cheap read that still sees them: ``GET /api/public/metrics`` (v1, web/src/pages/api/public/
  metrics/index.ts), which runs the QueryBuilder against the legacy ``traces`` table (view
  ``traces``, packages/shared/src/features/query/dataModel.ts) and is refused (404, before auth)
  only in events_only mode (``rejectInEventsOnlyMode``). One request counts the traces of a window
  carrying any of some tags: ``?query={"view":"traces","metrics":[{"measure":"count",
  "aggregation":"count"}],"filters":[{"column":"tags","operator":"any of","value":["a","b"],
  "type":"arrayOptions"}],"fromTimestamp":"<ISO>","toTimestamp":"<ISO>"}`` -> 200
  ``{"data":[{"count_count":2}]}`` (the trace timestamp within [from, to], BOTH ends inclusive:
  QueryBuilder's ``>=``/``<=``; rate resource "public-api-metrics", Hobby 100 a day).

``GET /api/public/v2/metrics`` takes the same ``query`` shape (views ``observations``,
``scores-numeric`` (NUMERIC + BOOLEAN), ``scores-categorical``, ``scores-boolean``; no
``traces``): e.g. the scores named X in a window, ``{"view":"scores-numeric","metrics":
[{"measure":"count","aggregation":"count"}],"filters":[{"column":"name","operator":"=",
"value":"X","type":"string"}],"fromTimestamp":...,"toTimestamp":...}`` -> ``{"data":
[{"count_count":N}]}``; root observations with a tag: filters ``{"column":"isRootObservation",
"operator":"=","value":true,"type":"boolean"}`` and ``{"column":"tags","operator":"any of",
"value":[...],"type":"arrayOptions"}`` (each observation's own tags). See :mod:`.metrics` for the
subset modelled (a valid query outside it is a 501, not a guess).

Other behaviours, both profiles: tags are each observation's own (its span's attributes); unknown
``fields`` groups are dropped; a duplicate annotation queue name is a 400.

Knobs (store / sandbox): ``advance_clock`` moves the server's "now"; ``set_score_read_lag`` hides
scores from reads for a while after they are written; ``heavy_read_rows``: a v2 observations page
with the ``io`` or ``metadata`` group and a larger ``limit`` answers 422 ``{"message": <advice>,
"error": "Request timed out"}`` (withMiddlewares.ts' answer to a ClickHouse timeout or memory
limit); ``write_mode``; ``preview_opt_in``; ``ingestion_suspended`` (per project,
``LangfuseSandbox.set_ingestion_suspended``): POST scores, POST ingestion and OTLP answer 403
``"Ingestion suspended: Usage threshold exceeded. Please upgrade your plan."``;
``max_annotation_queues``; ``set_rate_limit``: Langfuse's fixed window per organisation in
which the request taking the last point is refused (RateLimitService.ts: Hobby's 30 a minute
serve 29), per bucket: "public-api", "annotation-queues", "ingestion" (ingestion + OTLP),
"public-api-metrics", "public-api-v2-metrics".

Projects: one server can hold several (``LangfuseSandbox.add_project(name)`` ->
:class:`ProjectHandle` with its own key pair, store and ``env()``); a request reaches the project
of its key pair. Server settings (profile, version, opt-in, write mode, clock, read lag, heavy
reads: :class:`ServerSettings`), faults and rate limits (one organisation) are shared.

Every call but health needs HTTP Basic auth with a project's key pair. Data lives in a
:class:`LangfuseStore` (thread-safe, in memory), which tests and benchmarks can also seed directly
(``add_trace`` / ``add_observation`` / ``add_score``) without going through HTTP.

Faults (:mod:`sandbox.faults`) apply per endpoint name: ``health``, ``projects``, ``otel``,
``ingestion``, ``observations``, ``scores.create``, ``scores.list``, ``metrics.v1``,
``metrics.v2``, ``score_configs.{create,list,get,update}``, ``annotation_queues.{create,list,get}``,
``annotation_queue_items.{create,list,get,update,delete}``, ``sandbox.annotate``.

Modules: ``common`` (constants, errors, HTTP helpers), ``records``, ``store`` (``store_base``,
``store_observations``, ``store_scores``, ``store_queues``, ``store_review``), ``otlp``
(decoding), ``validation``, ``filters``; the routes in ``observations``, ``ingest`` (OTLP),
``ingestion``, ``scores``, ``metrics``, ``score_configs``, ``annotation_queues``, ``review``, put
together by ``app`` (one route table, one auth dependency) and served by ``server``. The public
names are re-exported here: ``from sandbox.langfuse import LangfuseSandbox, LangfuseStore``.
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
    WRITE_MODE_DEFAULTS,
    WRITE_MODES,
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
    ProjectHandle,
)
from sandbox.langfuse.store import (
    LangfuseStore,
)
from sandbox.langfuse.store_base import (
    ServerSettings,
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
    "WRITE_MODES",
    "WRITE_MODE_DEFAULTS",
    "AnnotationQueueRecord",
    "ApiError",
    "BadRequest",
    "DroppedScore",
    "LangfuseSandbox",
    "LangfuseStore",
    "NotAllowed",
    "NotFound",
    "ObservationRecord",
    "ProjectHandle",
    "QueueItemRecord",
    "ScoreConfigRecord",
    "ScoreDropped",
    "ScoreRecord",
    "ServerSettings",
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
