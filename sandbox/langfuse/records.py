"""The rows the Langfuse sandbox stores."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sandbox.langfuse.common import ms_to_datetime

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
    # written to the v3 "traces" table (write modes legacy and dual): what the v1 metrics API
    # reads; events_only does not write it
    in_legacy: bool = True


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
    # written to the v4 events tables (write modes dual and events_only): what v2 observations
    # and v2 metrics read; legacy mode does not write them
    in_events: bool = True


@dataclass(slots=True)
class ScoreRecord:
    """One stored score row. Duplicate ids can exist on "current" (a list POST resent with
    another timestamp); v4.16 and the ingestion route keep one row per id."""

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
    author_user_id: str | None = None  # the reviewer of an ANNOTATION score set in the UI
    created_ms: int = 0
    updated_ms: int = 0
    seq: int = 0  # insertion order, the tie-breaker of the v3 cursor
    # the timestamp of the newest ingestion event merged into this row (the worker's merge
    # takes the mutable fields from the newest event)
    event_ms: int = 0

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


# --------------------------------------------------------------------------- dropped scores


@dataclass(slots=True)
class DroppedScore:
    """A score the HTTP answer accepted that ingestion then dropped (a configId problem)."""

    score: ScoreRecord
    reason: str
    dropped_ms: int


class ScoreDropped(Exception):
    """Raised by the config checks of ingestion: the score is dropped, not refused."""


def _score_key(s: ScoreRecord) -> tuple[int, int]:
    return (s.timestamp_ms, s.seq)
