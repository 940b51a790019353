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
from dataclasses import dataclass
from typing import Any

from langfuse.api import LangfuseAPI
from langfuse.api.scores.types.create_score_batch_results import CreateScoreBatchResults
from langfuse.api.scores.types.create_score_request import CreateScoreRequest
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from tasks.config import LangfuseSettings, Tuning
from tasks.fetch import NO_RETRY, make_api
from tasks.models import Bucket, Outcome, Scored, preview
from tasks.retry import call_with_retries, describe

SCORE_NAMESPACE = uuid.UUID("6f1c3a52-8a47-4d0e-9a8e-3d1f0b6c2e11")


def score_id(trace_id: str, score_name: str, observation_id: str | None = None) -> str:
    """The same (trace, [observation,] name) always gets the same score id."""
    key = f"{trace_id}\x1f{observation_id or ''}\x1f{score_name}"
    return str(uuid.uuid5(SCORE_NAMESPACE, key))


def score_body(item: Scored, *, score_name: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """One score as the SDK's ``CreateScoreRequest`` fields (it serialises them camelCase)."""
    pair = item.pair
    body: dict[str, Any] = {
        "id": score_id(pair.trace_id, score_name),
        "trace_id": pair.trace_id,
        "name": score_name,
        "value": item.score,
        "data_type": "NUMERIC",
        "timestamp": pair.start_time,
        "metadata": metadata,
    }
    if item.explanation:
        body["comment"] = item.explanation
    if pair.environment:
        body["environment"] = pair.environment
    return body


def pack(bodies: list[dict[str, Any]], max_bytes: int) -> list[list[dict[str, Any]]]:
    """Split score bodies into batches whose JSON list stays under ``max_bytes``."""
    batches: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    size = 2
    for body in bodies:
        n = len(json.dumps(body, ensure_ascii=False, default=str).encode()) + 1
        if current and size + n > max_bytes:
            batches.append(current)
            current, size = [], 2
        current.append(body)
        size += n
    if current:
        batches.append(current)
    return batches


@dataclass(slots=True)
class UploadResult:
    uploaded: list[Outcome]
    failed: list[Outcome]
    requests: int


class _Uploader:
    def __init__(self, api: LangfuseAPI, tuning: Tuning, logger: Any) -> None:
        self.api, self.tuning, self.logger = api, tuning, logger
        self.requests = 0

    def post(self, batch: list[dict[str, Any]]) -> Any:
        request = [CreateScoreRequest(**b) for b in batch]

        def call() -> Any:
            self.requests += 1
            return self.api.scores.create(request=request, request_options=NO_RETRY)

        return call_with_retries(
            call,
            what=f"writing {len(batch)} scores (POST scores)",
            retries=self.tuning.retries,
            base_delay_s=self.tuning.retry_base_delay_s,
            max_delay_s=self.tuning.retry_max_delay_s,
            logger=self.logger,
        )

    def send(self, batch: list[dict[str, Any]]) -> dict[str, str | None]:
        """trace id -> None when accepted, else the reason it was refused."""
        try:
            answer = self.post(batch)
        except Exception as err:
            reason = f"upload_error: {describe(err)}"
            return {b["trace_id"]: reason for b in batch}
        if not isinstance(answer, CreateScoreBatchResults) or answer.rejected == 0:
            return {b["trace_id"]: None for b in batch}
        if len(batch) == 1:
            msg = "; ".join(e.message for e in answer.errors)[:300] or "refused"
            return {batch[0]["trace_id"]: f"refused: {msg}"}
        if answer.accepted == 0 and answer.rejected == len(batch) and len(batch) > 64:
            # all refused: a batch-wide cause; no point bisecting hundreds of items
            msg = "; ".join(e.message for e in answer.errors[:3])[:300]
            return {b["trace_id"]: f"refused: {msg}" for b in batch}
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
) -> UploadResult:
    by_trace = {s.pair.trace_id: s for s in items}
    bodies = [score_body(s, score_name=score_name, metadata=metadata) for s in items]
    uploader = _Uploader(api, tuning, logger)
    verdicts: dict[str, str | None] = {}
    for batch in pack(bodies, tuning.upload_batch_bytes):
        verdicts |= uploader.send(batch)
    uploaded: list[Outcome] = []
    failed: list[Outcome] = []
    for trace_id, reason in verdicts.items():
        s = by_trace[trace_id]
        bucket = Bucket.UPLOADED if reason is None else Bucket.FAILED_TO_UPLOAD
        outcome = Outcome(
            trace_id,
            bucket,
            reason=reason,
            score=s.score,
            explanation=s.explanation,
            name=s.pair.name,
            start_time=s.pair.start_time,
            question=preview(s.pair.prompt, tail=True),
            answer=preview(s.pair.response),
        )
        (uploaded if reason is None else failed).append(outcome)
    return UploadResult(uploaded, failed, uploader.requests)


@task(name="upload-scores", task_run_name="upload chunk {chunk_no}", cache_policy=NO_CACHE)
def upload_task(
    items: list[Scored],
    cfg: LangfuseSettings,
    score_name: str,
    metadata: dict[str, Any],
    tuning: Tuning,
    chunk_no: int,
) -> UploadResult:
    logger = get_run_logger()
    result = upload_scores(
        make_api(cfg), items, score_name=score_name, metadata=metadata, tuning=tuning, logger=logger
    )
    logger.info(
        "chunk %d: %d scores landed, %d refused or lost (%d POSTs)",
        chunk_no,
        len(result.uploaded),
        len(result.failed),
        result.requests,
    )
    return result
