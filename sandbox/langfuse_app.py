"""The Langfuse sandbox (``sandbox.langfuse``), under the names the tests, the benchmarks and the
demo import: ``from sandbox.langfuse_app import LangfuseSandbox, LangfuseStore``."""

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
