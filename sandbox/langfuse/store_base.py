"""The state every part of the Langfuse sandbox's store shares: keys, profile, clock."""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sandbox.langfuse.common import (
    PROFILE_VERSIONS,
    PROFILES,
    WRITE_MODE_DEFAULTS,
    WRITE_MODES,
    _now_ms,
    ms_to_datetime,
)
from sandbox.langfuse.records import (
    AnnotationQueueRecord,
    DroppedScore,
    ObservationRecord,
    QueueItemRecord,
    ScoreConfigRecord,
    ScoreRecord,
    TraceRecord,
)


def _check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ValueError(f"unknown Langfuse profile {profile!r}; one of {PROFILES}")
    return profile


def _check_write_mode(mode: str | None) -> str | None:
    if mode is not None and mode not in WRITE_MODES:
        raise ValueError(f"unknown write mode {mode!r}; one of {WRITE_MODES}")
    return mode


@dataclass
class ServerSettings:
    """What belongs to the Langfuse server rather than to one project: every project (store) of
    one sandbox server shares one of these (:meth:`LangfuseSandbox.add_project`)."""

    profile: str = "current"
    version: str | None = None  # None: the profile's version
    # LANGFUSE_MIGRATION_V4_ALLOW_PREVIEW_OPT_IN: "true" by default on v4.16.0 (web/src/env.mjs)
    preview_opt_in: bool = True
    # LANGFUSE_MIGRATION_V4_WRITE_MODE; None: the profile's (WRITE_MODE_DEFAULTS)
    write_mode: str | None = None
    clock_offset_ms: int = 0
    score_read_lag_ms: int = 0
    # v2 observations with the io/metadata groups and a limit above this: 422 (None: never)
    heavy_read_rows: int | None = None


class StoreBase:
    """The project's keys, server settings, clock and tables (the parts of
    :class:`~sandbox.langfuse.store.LangfuseStore` work on them under ``_lock``).

    ``settings``: the server's (shared by every project of one server); a new one by default.
    """

    def __init__(
        self,
        *,
        project_id: str | None = None,
        project_name: str = "sandbox",
        profile: str | None = None,
        public_key: str | None = None,
        secret_key: str | None = None,
        settings: ServerSettings | None = None,
    ) -> None:
        self.settings = settings or ServerSettings()
        if profile is not None:
            self.settings.profile = _check_profile(profile)
        self._dropped: list[DroppedScore] = []
        self.project_id = project_id or f"sandbox-project-{secrets.token_hex(4)}"
        self.project_name = project_name
        self.organization_id = "sandbox-org"
        self.public_key = public_key or f"pk-lf-sandbox-{secrets.token_hex(8)}"
        self.secret_key = secret_key or f"sk-lf-sandbox-{secrets.token_hex(16)}"
        # the key's isIngestionSuspended (Cloud: the free tier's usage threshold BLOCKED): 403 on
        # POST scores, POST ingestion and OTLP
        self.ingestion_suspended = False
        # valid ingestion events the sandbox answers but does not store (not score-create)
        self.ignored_events: list[dict[str, Any]] = []
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
        return self.settings.profile

    @profile.setter
    def profile(self, value: str) -> None:
        self.settings.profile = _check_profile(value)

    @property
    def preview_opt_in(self) -> bool:
        """LANGFUSE_MIGRATION_V4_ALLOW_PREVIEW_OPT_IN (v4.16: default true; false: v2 observations
        and v2 metrics answer 404)."""
        return self.settings.preview_opt_in

    @preview_opt_in.setter
    def preview_opt_in(self, value: bool) -> None:
        self.settings.preview_opt_in = value

    @property
    def version(self) -> str | None:
        """The version /api/public/health reports, None for the profile's."""
        return self.settings.version

    @version.setter
    def version(self, value: str | None) -> None:
        self.settings.version = value

    @property
    def write_mode(self) -> str:
        """LANGFUSE_MIGRATION_V4_WRITE_MODE: "legacy", "dual" or "events_only" (see
        ``WRITE_MODE_DEFAULTS`` for each profile's). Set it to None for the profile's default."""
        return self.settings.write_mode or WRITE_MODE_DEFAULTS[self.settings.profile]

    @write_mode.setter
    def write_mode(self, value: str | None) -> None:
        self.settings.write_mode = _check_write_mode(value)

    @property
    def heavy_read_rows(self) -> int | None:
        """The largest v2 observations page with the ``io`` or ``metadata`` group the server's
        ClickHouse answers in time; a larger ``limit`` is a 422 "Request timed out". None: no
        such limit."""
        return self.settings.heavy_read_rows

    @heavy_read_rows.setter
    def heavy_read_rows(self, value: int | None) -> None:
        if value is not None and value < 1:
            raise ValueError("heavy_read_rows must be at least 1 (or None)")
        self.settings.heavy_read_rows = value

    @property
    def server_version(self) -> str:
        """What GET /api/public/health reports."""
        return self.settings.version or PROFILE_VERSIONS[self.settings.profile]

    def now_ms(self) -> int:
        """The sandbox clock: wall-clock time plus every ``advance_clock``."""
        return _now_ms() + self.settings.clock_offset_ms

    def now(self) -> datetime:
        return ms_to_datetime(self.now_ms())

    def advance_clock(self, seconds: float) -> None:
        """Shift the server's "now" (arrival timestamps, read lag, day keys) by ``seconds``."""
        with self._lock:
            self.settings.clock_offset_ms += round(seconds * 1000)

    def set_score_read_lag(self, seconds: float) -> None:
        """Score reads (GET v3/scores) show a score only ``seconds`` after it was written."""
        if seconds < 0:
            raise ValueError("the read lag cannot be negative")
        self.settings.score_read_lag_ms = round(seconds * 1000)

    @property
    def score_read_lag(self) -> float:
        return self.settings.score_read_lag_ms / 1000

    def score_visible(self, score: ScoreRecord) -> bool:
        return score.created_ms + self.settings.score_read_lag_ms <= self.now_ms()

    @property
    def dropped_scores(self) -> list[DroppedScore]:
        """Scores accepted over HTTP and then dropped by ingestion, oldest first (copies)."""
        with self._lock:
            return [replace(d, score=replace(d.score)) for d in self._dropped]

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq
