"""The store's scores and score configs."""

from __future__ import annotations

import bisect
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from sandbox.langfuse.common import (
    ANNOTATION_SCORE_REQUIRES_CONFIG_ID,
    BOOLEAN_CATEGORIES,
    SCORE_CONFIG_DATA_TYPES,
    BadRequest,
    NotFound,
    to_ms,
)
from sandbox.langfuse.records import (
    DroppedScore,
    ScoreConfigRecord,
    ScoreDropped,
    ScoreRecord,
    _score_key,
)
from sandbox.langfuse.store_base import (
    StoreBase,
)
from sandbox.langfuse.validation import (
    _checked_config_values,
    _config_name,
    _copy_config,
    _js_num,
    _opt_number,
    _opt_string,
    validate_score,
)


def _merged_metadata(older: Any, newer: Any) -> Any:
    """overwriteObject's metadata rule (worker/src/services/IngestionService/utils.ts): the one
    that is set, else both merged, the newer winning."""
    if isinstance(older, dict) and isinstance(newer, dict):
        return {**older, **newer}
    return newer if newer else older


class ScoreStore(StoreBase):
    """Score rows (upsert, ingestion, the v3 query) and score configs."""

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

    # ----------------------------------------------------------- scores

    def upsert_score(self, score: ScoreRecord, *, merge_by_id: bool | None = None) -> ScoreRecord:
        """Store a score row.

        ``merge_by_id`` (default: on the v4.16 profile): the ingestion worker's merge
        (worker/src/services/IngestionService/index.ts at v4.16.0, processScoreEventList and
        mergeScoreRecords): every event of one score id is merged into ONE row, whichever route
        wrote it (POST scores and POST ingestion both enqueue score-create events). The first
        row's ``timestamp``, ``traceId``, ``environment`` and ``createdAt`` are immutable
        (``immutableEntityKeys``); the other fields come from the newest event by event
        timestamp (``toTimeSortedEventList``); metadata is merged. ``score.timestamp_ms`` is the
        new event's timestamp (v4.16 stamps a POSTed score on arrival; ingestion takes the
        event's ``timestamp``). A changed name stays on the one row (ClickHouse would keep the
        old-name row too: its ORDER BY holds the name).

        Otherwise ("current", the list POST of SDK 5): a stored row with the same id, timestamp
        and name is updated in place; else a row is added (a resend with another timestamp
        duplicates), as the SDK's contract documents it.
        """
        now = self.now_ms()
        if merge_by_id is None:
            merge_by_id = self.profile == "v4.16"
        with self._lock:
            seqs = self._score_ids.get(score.id, [])
            if merge_by_id and seqs:
                first = self._scores[min(seqs)]
                newer = score.timestamp_ms >= first.event_ms
                base = score if newer else first
                merged = replace(
                    base,
                    seq=first.seq,
                    timestamp_ms=first.timestamp_ms,
                    trace_id=first.trace_id,
                    environment=first.environment,
                    created_ms=first.created_ms,
                    updated_ms=now,
                    event_ms=max(first.event_ms, score.timestamp_ms),
                    metadata=_merged_metadata(
                        first.metadata if newer else score.metadata,
                        score.metadata if newer else first.metadata,
                    ),
                )
                self._scores[first.seq] = merged
                return replace(merged)
            for seq in seqs:
                row = self._scores[seq]
                if (
                    not merge_by_id
                    and row.name == score.name
                    and row.timestamp_ms == score.timestamp_ms
                ):
                    updated = replace(
                        score, seq=seq, created_ms=row.created_ms, updated_ms=now, event_ms=now
                    )
                    self._scores[seq] = updated
                    return replace(updated)
            self._seq += 1
            stored = replace(
                score, seq=self._seq, created_ms=now, updated_ms=now, event_ms=score.timestamp_ms
            )
            self._scores[stored.seq] = stored
            self._score_ids.setdefault(stored.id, []).append(stored.seq)
            self._add_score_order(stored)
            return replace(stored)

    def _add_score_order(self, score: ScoreRecord) -> None:
        key = (score.timestamp_ms, score.seq)
        if self._score_order and key < self._score_order[-1]:
            self._scores_sorted = False
        self._score_order.append(key)

    def ingest_score(
        self, item: Mapping[str, Any], score: ScoreRecord, *, merge_by_id: bool | None = None
    ) -> ScoreRecord | None:
        """What ingestion does with a score the HTTP answer already accepted: apply its config
        (:meth:`inflate_with_config`) and store it (:meth:`upsert_score`), or drop it silently
        (kept in ``dropped_scores``) and return None."""
        try:
            if (
                score.source == "ANNOTATION"
                and not item.get("configId")
                and score.data_type != "CORRECTION"
            ):
                # validateAndInflateScore: the REST routes refuse this in their schema; the
                # ingestion route's events reach the worker, which drops them
                raise ScoreDropped(ANNOTATION_SCORE_REQUIRES_CONFIG_ID)
            final = self.inflate_with_config(item, score)
        except ScoreDropped as e:
            with self._lock:
                self._dropped.append(DroppedScore(replace(score), str(e), self.now_ms()))
            return None
        return self.upsert_score(final, merge_by_id=merge_by_id)

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
