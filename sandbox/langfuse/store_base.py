"""The state every part of the Langfuse sandbox's store shares: keys, profile, clock."""

from __future__ import annotations

import secrets
import threading
from dataclasses import replace
from datetime import datetime

from sandbox.langfuse.common import (
    PROFILE_VERSIONS,
    PROFILES,
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


class StoreBase:
    """The project's keys, server settings, clock and tables (the parts of
    :class:`~sandbox.langfuse.store.LangfuseStore` work on them under ``_lock``)."""

    def __init__(
        self,
        *,
        project_id: str | None = None,
        project_name: str = "sandbox",
        profile: str = "current",
        public_key: str | None = None,
        secret_key: str | None = None,
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
        self.public_key = public_key or f"pk-lf-sandbox-{secrets.token_hex(8)}"
        self.secret_key = secret_key or f"sk-lf-sandbox-{secrets.token_hex(16)}"
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

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq
