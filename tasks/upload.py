"""Upload stage: one score per trace, idempotent, each trace's acceptance confirmed.

- id: uuid5 of (trace id, score name), timestamp: the trace's start time. Langfuse upserts a
  score sent again with the same id and timestamp, so re-runs and lost answers never duplicate.
- batched POSTs (a JSON list) kept under the 1 MB body limit;
- a 207 does not say which score was refused: the batch is split in halves and re-sent (an
  upsert, so harmless for the accepted ones) until each refused trace is pinned down.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from langfuse.api import LangfuseAPI
from langfuse.api.scores.types.create_score_batch_results import CreateScoreBatchResults
from langfuse.api.scores.types.create_score_request import CreateScoreRequest
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from tasks.config import LangfuseSettings, Tuning
from tasks.fetch import NO_RETRY, make_api
from tasks.models import Bucket, Outcome, Scored, outcome_for, preview
from tasks.retry import describe, retrying
from tasks.review import label_for

SCORE_NAMESPACE = uuid.UUID("6f1c3a52-8a47-4d0e-9a8e-3d1f0b6c2e11")


def score_id(trace_id: str, score_name: str, observation_id: str | None = None) -> str:
    """The same (trace, [observation,] name) always gets the same score id."""
    key = f"{trace_id}\x1f{observation_id or ''}\x1f{score_name}"
    return str(uuid.uuid5(SCORE_NAMESPACE, key))


@dataclass(frozen=True, slots=True)
class LabelSpec:
    """The categorical companion score: its name, thresholds and config."""

    name: str
    review_below: float
    untrustworthy_below: float
    config_id: str | None = None


def label_body(item: Scored, spec: LabelSpec, metadata: dict[str, Any]) -> dict[str, Any]:
    pair = item.pair
    body: dict[str, Any] = {
        "id": score_id(pair.trace_id, spec.name, pair.observation_id),
        "trace_id": pair.trace_id,
        "name": spec.name,
        "value": label_for(item.score, spec.review_below, spec.untrustworthy_below),
        "data_type": "CATEGORICAL",
        "timestamp": pair.start_time,
        "metadata": metadata,
    }
    if pair.observation_id:
        body["observation_id"] = pair.observation_id
    if spec.config_id:
        body["config_id"] = spec.config_id
    if pair.environment:
        body["environment"] = pair.environment
    return body


def score_body(
    item: Scored, *, score_name: str, metadata: dict[str, Any], config_id: str | None = None
) -> dict[str, Any]:
    """One score as the SDK's ``CreateScoreRequest`` fields (it serialises them camelCase)."""
    pair = item.pair
    body: dict[str, Any] = {
        "id": score_id(pair.trace_id, score_name, pair.observation_id),
        "trace_id": pair.trace_id,
        "name": score_name,
        "value": item.score,
        "data_type": "NUMERIC",
        "timestamp": pair.start_time,
        "metadata": metadata,
    }
    if pair.observation_id:
        body["observation_id"] = pair.observation_id
    if config_id:
        body["config_id"] = config_id
    if item.explanation:
        body["comment"] = item.explanation
    if pair.environment:
        body["environment"] = pair.environment
    return body


def pack(
    groups: list[list[dict[str, Any]]], max_bytes: int
) -> tuple[list[list[dict[str, Any]]], list[int]]:
    """Batches of score bodies whose JSON list stays under ``max_bytes``.

    ``groups`` are the bodies of one unit (its score and its label), kept in one batch. Also
    returns, per batch, how many groups it holds.
    """
    batches: list[list[dict[str, Any]]] = []
    counts: list[int] = []
    current: list[dict[str, Any]] = []
    size, n_groups = 2, 0
    for group in groups:
        n = sum(len(json.dumps(b, ensure_ascii=False, default=str).encode()) + 1 for b in group)
        if current and size + n > max_bytes:
            batches.append(current)
            counts.append(n_groups)
            current, size, n_groups = [], 2, 0
        current.extend(group)
        size += n
        n_groups += 1
    if current:
        batches.append(current)
        counts.append(n_groups)
    return batches, counts


def _key(body: dict[str, Any]) -> str:
    """Verdicts are per scored unit; a companion label's verdict is keyed apart."""
    unit = str(body.get("observation_id") or body["trace_id"])
    return unit if body.get("data_type") != "CATEGORICAL" else f"{unit}#label"


@dataclass(slots=True)
class UploadResult:
    uploaded: list[Outcome]
    failed: list[Outcome]
    requests: int
    labels_failed: int = 0
    held: list[Scored] = field(default_factory=list)  # the last, part-full batch, kept back


class _Uploader:
    def __init__(self, api: LangfuseAPI, tuning: Tuning, logger: Any) -> None:
        self.api, self.tuning, self.logger = api, tuning, logger
        self.requests = 0

    def post(self, batch: list[dict[str, Any]]) -> Any:
        request = [CreateScoreRequest(**b) for b in batch]

        def call() -> Any:
            self.requests += 1
            return self.api.scores.create(request=request, request_options=NO_RETRY)

        return retrying(
            self.tuning, self.logger, f"writing {len(batch)} scores (POST scores)", call
        )

    def send(self, batch: list[dict[str, Any]]) -> dict[str, str | None]:
        """trace id -> None when accepted, else the reason it was refused."""
        try:
            answer = self.post(batch)
        except Exception as err:
            reason = f"upload_error: {describe(err)}"
            return {_key(b): reason for b in batch}
        if not isinstance(answer, CreateScoreBatchResults) or answer.rejected == 0:
            return {_key(b): None for b in batch}
        if len(batch) == 1:
            msg = "; ".join(e.message for e in answer.errors)[:300] or "refused"
            return {_key(batch[0]): f"refused: {msg}"}
        if answer.accepted == 0 and answer.rejected == len(batch) and len(batch) > 64:
            # all refused: a batch-wide cause; no point bisecting hundreds of items
            msg = "; ".join(e.message for e in answer.errors[:3])[:300]
            return {_key(b): f"refused: {msg}" for b in batch}
        mid = len(batch) // 2
        self.logger.info(
            "207: %d of %d scores refused; narrowing down", answer.rejected, len(batch)
        )
        return self.send(batch[:mid]) | self.send(batch[mid:])


def upload_scores(
    api: LangfuseAPI,
    items: list[Scored],
    *,
    score_name: str,
    metadata: dict[str, Any],
    tuning: Tuning,
    logger: Any,
    config_id: str | None = None,
    label: LabelSpec | None = None,
    hold_partial: bool = False,
) -> UploadResult:
    """POST the scores of ``items`` in batches under the body limit, each verdict confirmed.

    ``hold_partial`` keeps the last, part-full batch back (returned as ``held``) so that the
    next chunk's scores can fill it: a full window then costs about one POST per megabyte.
    """
    by_key = {s.pair.key: s for s in items}
    groups = [
        [score_body(s, score_name=score_name, metadata=metadata, config_id=config_id)]
        + ([label_body(s, label, metadata)] if label is not None else [])
        for s in items
    ]
    batches, counts = pack(groups, tuning.upload_batch_bytes)
    held: list[Scored] = []
    if hold_partial and batches:
        batches.pop()
        held = items[len(items) - counts[-1] :]
    uploader = _Uploader(api, tuning, logger)
    verdicts: dict[str, str | None] = {}
    for batch in batches:
        verdicts |= uploader.send(batch)
    uploaded: list[Outcome] = []
    failed: list[Outcome] = []
    labels_failed = 0
    for key, reason in verdicts.items():
        if key.endswith("#label"):
            labels_failed += reason is not None
            continue
        s = by_key[key]
        bucket = Bucket.UPLOADED if reason is None else Bucket.FAILED_TO_UPLOAD
        outcome = outcome_for(
            s.pair,
            bucket,
            reason,
            score=s.score,
            explanation=s.explanation,
            question=preview(s.pair.prompt, tail=True),
            answer=preview(s.pair.response),
        )
        (uploaded if reason is None else failed).append(outcome)
    return UploadResult(uploaded, failed, uploader.requests, labels_failed, held)


@task(name="upload-scores", task_run_name="upload chunk {chunk_no}", cache_policy=NO_CACHE)
def upload_task(
    items: list[Scored],
    cfg: LangfuseSettings,
    score_name: str,
    metadata: dict[str, Any],
    tuning: Tuning,
    chunk_no: int,
    config_id: str | None = None,
    label: LabelSpec | None = None,
    hold_partial: bool = False,
) -> UploadResult:
    logger = get_run_logger()
    result = upload_scores(
        make_api(cfg),
        items,
        score_name=score_name,
        metadata=metadata,
        tuning=tuning,
        logger=logger,
        config_id=config_id,
        label=label,
        hold_partial=hold_partial,
    )
    logger.info(
        "chunk %d: %d scores landed, %d refused or lost (%d POSTs), %d kept for the next POST",
        chunk_no,
        len(result.uploaded),
        len(result.failed),
        result.requests,
        len(result.held),
    )
    return result
