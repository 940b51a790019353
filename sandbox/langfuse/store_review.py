"""The store's reviewer: what a person does in Langfuse's annotation UI, which the public API
cannot do (sandbox only)."""

from __future__ import annotations

import math
import uuid
from dataclasses import replace
from typing import Any

from sandbox.langfuse.common import TEXT_SCORE_MAX, BadRequest, NotFound
from sandbox.langfuse.records import ScoreRecord
from sandbox.langfuse.store_observations import ObservationStore
from sandbox.langfuse.store_queues import QueueStore
from sandbox.langfuse.store_scores import ScoreStore
from sandbox.langfuse.validation import _js_num

ANNOTATION_DATA_TYPES = frozenset({"NUMERIC", "BOOLEAN", "CATEGORICAL", "TEXT"})
DEFAULT_REVIEWER = "sandbox-reviewer"


class ReviewStore(ObservationStore, ScoreStore, QueueStore):
    """Reviewers' verdicts on annotation queue items."""

    def annotate(
        self,
        queue_id: str,
        item_id: str,
        *,
        value: Any,
        name: str | None = None,
        data_type: str | None = None,
        config_id: str | None = None,
        comment: str | None = None,
        author_user_id: str = DEFAULT_REVIEWER,
        environment: str = "default",
        complete: bool = True,
    ) -> ScoreRecord:
        """A reviewer's verdict on a queue item, as Langfuse's UI records it (the tRPC
        ``scores.createAnnotationScore`` of web/src/server/api/routers/scores.ts and the
        annotation queue's "complete", v4.16.0): a score with ``source`` "ANNOTATION",
        ``queueId`` and ``authorUserId`` on the item's object (a trace; an observation, with its
        trace; a session), written straight to the scores table (no ingestion queue, so no
        silent drop: problems are raised), and the item marked COMPLETED.

        With ``config_id`` the score takes the config's name and dataType (given ones must
        agree) and the value must fit the config: within minValue/maxValue, a category label,
        True/False. Without one, ``name`` and ``data_type`` are needed. Values: NUMERIC a
        number; BOOLEAN True/False, 1/0 or the label "True"/"False"; CATEGORICAL a label; TEXT
        1 to 500 characters. The object must exist (NotFound, as the UI's trace look-up). A
        second verdict with the same name, config and dataType on the same object updates the
        first (``searchExistingAnnotationScore``): same id, new timestamp and value.

        Raises NotFound (unknown queue, item, config or object) or BadRequest.
        """
        item = self.queue_item(queue_id, item_id)
        trace_id, observation_id, session_id = self._annotation_target(
            item.object_type, item.object_id
        )
        if config_id is not None:
            config = self.score_config(config_id)
            if config is None:
                raise NotFound("Score config not found within authorized project")
            if config.is_archived:
                raise BadRequest(
                    "Config is archived and cannot be used to create new scores. "
                    "Please restore the config first."
                )
            if data_type is not None and data_type != config.data_type:
                raise BadRequest(
                    f"Data type mismatch based on config: expected {config.data_type}, "
                    f"got {data_type}"
                )
            if name is not None and name != config.name:
                raise BadRequest(
                    f"Name mismatch based on config: expected {config.name}, got {name}"
                )
            name, data_type = config.name, config.data_type
        if not name:
            raise BadRequest("name is required without a configId")
        if data_type not in ANNOTATION_DATA_TYPES:
            raise BadRequest(f"dataType must be one of {sorted(ANNOTATION_DATA_TYPES)}")
        stored = _annotation_value(data_type, value)
        if config_id is not None:
            config = self.score_config(config_id)
            assert config is not None
            _check_against_config(
                stored, data_type, config.min_value, config.max_value, config.categories
            )
        now = self.now_ms()
        with self._lock:
            existing = next(
                (
                    s
                    for s in self._scores.values()
                    if s.source == "ANNOTATION"
                    and (s.trace_id, s.observation_id, s.session_id)
                    == (trace_id, observation_id, session_id)
                    and (s.name, s.config_id, s.data_type) == (name, config_id, data_type)
                ),
                None,
            )
            if existing is not None:
                row = replace(
                    existing,
                    value=stored,
                    comment=comment,
                    queue_id=queue_id,
                    author_user_id=author_user_id,
                    timestamp_ms=now,
                    updated_ms=now,
                    event_ms=now,
                )
                self._score_order.remove((existing.timestamp_ms, existing.seq))
            else:
                self._seq += 1
                row = ScoreRecord(
                    id=str(uuid.uuid4()),
                    name=name,
                    value=stored,
                    data_type=data_type,
                    timestamp_ms=now,
                    trace_id=trace_id,
                    observation_id=observation_id,
                    session_id=session_id,
                    comment=comment,
                    environment=environment,
                    source="ANNOTATION",
                    config_id=config_id,
                    queue_id=queue_id,
                    author_user_id=author_user_id,
                    created_ms=now,
                    updated_ms=now,
                    seq=self._seq,
                    event_ms=now,
                )
                self._score_ids.setdefault(row.id, []).append(row.seq)
            self._scores[row.seq] = row
            self._add_score_order(row)
            if complete:
                self.update_queue_item(queue_id, item_id, status="COMPLETED")
            return replace(row)

    def _annotation_target(
        self, object_type: str, object_id: str
    ) -> tuple[str | None, str | None, str | None]:
        """(traceId, observationId, sessionId) of a queued object that exists."""
        with self._lock:
            if object_type == "TRACE":
                if object_id not in self._traces:
                    raise NotFound(f"No trace with id {object_id} in project {self.project_id}")
                return object_id, None, None
            if object_type == "OBSERVATION":
                obs = self._observations.get(object_id)
                if obs is None:
                    raise NotFound(
                        f"No observation with id {object_id} in project {self.project_id}"
                    )
                return obs.trace_id, object_id, None
            if not any(t.session_id == object_id for t in self._traces.values()):
                raise NotFound(
                    f"No trace referencing session with id {object_id} in project {self.project_id}"
                )
            return None, None, object_id


def _annotation_value(data_type: str, value: Any) -> float | str:
    if data_type == "NUMERIC":
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise BadRequest("NUMERIC verdicts need a finite number")
        return float(value)
    if data_type == "BOOLEAN":
        if value in ("True", "False"):  # the labels the UI shows
            return 1.0 if value == "True" else 0.0
        if isinstance(value, bool | int | float) and value in (0, 1):  # True/False, 1/0
            return float(value)
        raise BadRequest('BOOLEAN verdicts are True/False, 1/0 or "True"/"False"')
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{data_type} verdicts need a non-empty string")
    if data_type == "TEXT" and len(value) > TEXT_SCORE_MAX:
        raise BadRequest(f"TEXT verdicts are at most {TEXT_SCORE_MAX} characters")
    return value


def _check_against_config(
    value: float | str,
    data_type: str,
    min_value: float | None,
    max_value: float | None,
    categories: list[dict[str, Any]] | None,
) -> None:
    """validateConfigAgainstBody's rules (the UI offers only what they allow)."""
    if data_type == "NUMERIC" and isinstance(value, float):
        if max_value is not None and value > max_value:
            raise BadRequest(
                f"Value exceeds maximum value of {_js_num(max_value)} defined in config"
            )
        if min_value is not None and value < min_value:
            raise BadRequest(
                f"Value is below minimum value of {_js_num(min_value)} defined in config"
            )
    if data_type == "CATEGORICAL":
        labels = [c["label"] for c in categories or []]
        if value not in labels:
            raise BadRequest(
                f"Value {value} does not map to a valid category. Pass a valid category value."
            )
