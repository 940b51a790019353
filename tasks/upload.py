"""Upload stage: one score per unit, idempotent, on the write path the server has.

- id: uuid5 of (trace id, [observation id,] score name); timestamp: the trace's start time. A
  score sent again with the same id (and timestamp, where the server keeps it) is an upsert.
- Cloud and self-hosted v4.59+: list POSTs under the 1 MB body limit. A 207 is not re-sent (SDK
  5's guidance): the batch's scores are read back by id to learn which were taken.
- Older self-hosted servers (v4.16): ``score-create`` events in batches on POST ingestion (up
  to ``ingestion_batch_bytes``, under its 4.5 MB limit), each event timestamped with its unit's
  start time (the score takes its event's timestamp) and carrying its score id (an event
  without one is answered 201 and never stored). The 207 gives one result per EVENT id, which
  the writer maps back to its score.
- One score per POST (``TRUST_EVAL_SCORE_WRITE=single``): a few at a time, stamped on arrival.
"""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from langfuse.api.core.api_error import ApiError
from langfuse.api.scores.types.create_score_batch_results import CreateScoreBatchResults
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from tasks.config import Tuning
from tasks.failures import Reason
from tasks.langfuse_api import (
    Access,
    Calls,
    IngestionSuspended,
    Server,
    make_http,
    scores_by_id,
)
from tasks.models import (
    Bucket,
    Outcome,
    Scored,
    label_for,
    last_user_turn,
    outcome_for,
    preview,
    safe_text,
    score_id,
)
from tasks.retry import describe, raise_if_transient

TRUNCATED = " … [truncated]"
_WIRE = {
    "trace_id": "traceId",
    "observation_id": "observationId",
    "data_type": "dataType",
    "config_id": "configId",
}


def comment_text(explanation: str | None, max_chars: int) -> str | None:
    """TLM's explanation as a comment: valid UTF-8, cut to ``max_chars`` (the body limit)."""
    if not explanation:
        return None
    text = safe_text(explanation)
    return text if len(text) <= max_chars else text[: max_chars - len(TRUNCATED)] + TRUNCATED


@dataclass(frozen=True, slots=True)
class LabelSpec:
    """The categorical companion score: its name, thresholds and config."""

    name: str
    review_below: float
    untrustworthy_below: float
    config_id: str | None = None


@dataclass(frozen=True, slots=True)
class ScoreSpec:
    """What every score of a run carries besides its value."""

    name: str
    metadata: dict[str, Any]
    config_id: str | None = None
    label: LabelSpec | None = None
    comment_max_chars: int = 20_000
    configs: dict[str, str] = field(default_factory=dict)  # the other names' config ids

    @property
    def config_ids(self) -> list[str]:
        """The score configs of the run's scores (a review queue offers them)."""
        ids = [self.config_id, self.label.config_id if self.label else None]
        return [i for i in ids if i]


def _body(
    item: Scored, name: str, value: Any, data_type: str, config_id: str | None, meta: Any
) -> dict[str, Any]:
    pair = item.pair
    body: dict[str, Any] = {
        "id": score_id(pair.trace_id, name, pair.observation_id),
        "trace_id": safe_text(pair.trace_id),
        "name": name,
        "value": value,
        "data_type": data_type,
        "timestamp": pair.start_time,
        "metadata": meta,
    }
    if pair.observation_id:
        body["observation_id"] = safe_text(pair.observation_id)
    if config_id:
        body["config_id"] = config_id
    if pair.environment:
        body["environment"] = safe_text(pair.environment)
    return body


def score_bodies(item: Scored, spec: ScoreSpec) -> list[dict[str, Any]]:
    """The scores of one unit, as the SDK's ``CreateScoreRequest`` fields: trust (and its
    label), then its evals and criteria (NUMERIC) and its cause (CATEGORICAL), each only when
    the unit lacks it (``Pair.only``)."""
    out = []
    if item.writes(spec.name):
        body = _body(item, spec.name, item.score, "NUMERIC", spec.config_id, spec.metadata)
        comment = comment_text(item.explanation, spec.comment_max_chars)
        if comment:
            body["comment"] = comment
        out.append(body)
        if spec.label is not None:
            lb = spec.label
            value = label_for(item.score, lb.review_below, lb.untrustworthy_below)
            out.append(_body(item, lb.name, value, "CATEGORICAL", lb.config_id, spec.metadata))
    for name, number in item.extra.items():
        if item.writes(name):
            out.append(_body(item, name, number, "NUMERIC", spec.configs.get(name), spec.metadata))
    for name, label in item.labels.items():
        if item.writes(name):
            cfg = spec.configs.get(name)
            out.append(_body(item, name, label, "CATEGORICAL", cfg, spec.metadata))
    return out


def body_bytes(body: dict[str, Any]) -> int:
    return len(json.dumps(body, ensure_ascii=False, default=str).encode()) + 1


def pack(groups: list[list[dict[str, Any]]], max_bytes: int) -> list[list[dict[str, Any]]]:
    """Batches of score bodies whose JSON list stays under ``max_bytes``; a unit's score and
    label stay in one batch."""
    batches: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    size = 2
    for group in groups:
        n = sum(body_bytes(b) for b in group)
        if current and size + n > max_bytes:
            batches.append(current)
            current, size = [], 2
        current.extend(group)
        size += n
    if current:
        batches.append(current)
    return batches


def _is_label(body: dict[str, Any]) -> bool:
    return body.get("data_type") == "CATEGORICAL"


Verdict = tuple[Reason, str] | None  # a score's fate: None when accepted


class ListRefused(Exception):
    """The server answered a list POST with 400: it takes no list (v4.16)."""


def wire_body(body: dict[str, Any]) -> dict[str, Any]:
    """A score body as Langfuse's JSON takes it, without its timestamp."""
    return {_WIRE.get(k, k): v for k, v in body.items() if k != "timestamp"}


def iso_utc(when: datetime) -> str:
    """An ISO timestamp with its offset (the ingestion event schema requires one)."""
    aware = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")


def score_event(body: dict[str, Any]) -> dict[str, Any]:
    """A ``score-create`` ingestion event: its own id, and the unit's start time as its
    timestamp, which becomes the score's."""
    return {
        "id": str(uuid.uuid4()),
        "type": "score-create",
        "timestamp": iso_utc(body["timestamp"]),
        "body": wire_body(body),
    }


def event_verdicts(events: list[dict[str, Any]], answer: Any) -> dict[str, Verdict]:
    """Each score's fate from the 207 of POST ingestion, which names the EVENTS' ids."""
    results: dict[str, dict[str, Any]] = {}
    if isinstance(answer, dict):
        for key in ("successes", "errors"):
            rows = answer.get(key)
            for row in rows if isinstance(rows, list) else []:
                if isinstance(row, dict) and isinstance(row.get("id"), str):
                    results.setdefault(row["id"], row)
    out: dict[str, Verdict] = {}
    for event in events:
        row = results.get(event["id"])
        score = event["body"]["id"]
        status = row.get("status") if row is not None else None
        if row is None or not isinstance(status, int):
            out[score] = (Reason.UPLOAD_ERROR, "Langfuse's 207 has no result for its event")
        elif status < 300:
            out[score] = None
        else:
            parts = [str(row.get(k)) for k in ("message", "error") if row.get(k)]
            text = " ".join(": ".join(parts).split())
            out[score] = (Reason.REFUSED, f"HTTP {status}: {text}"[:300])
    return out


class Writer:
    """Sends score bodies; returns each body's verdict by score id (None: accepted).

    When Langfuse suspends the project's ingestion, the batch and every later one fail as not
    taken, and ``suspended`` holds the error (the run stops; the paid scores are re-sent by
    the next run without paying TLM)."""

    def __init__(self, calls: Calls, server: Server, tuning: Tuning) -> None:
        self.calls, self.server, self.tuning = calls, server, tuning
        self.logger = calls.logger
        self.read_back = 0  # scores looked up after a 207
        self.suspended: IngestionSuspended | None = None

    def write(self, groups: list[list[dict[str, Any]]]) -> dict[str, Verdict]:
        """Every score body of ``groups`` (a unit's score and label stay in one batch)."""
        verdicts: dict[str, Verdict] = {}
        if self.server.write == "ingestion":
            events = [[score_event(b) for b in group] for group in groups]
            for batch in pack(events, self.tuning.ingestion_batch_bytes):
                verdicts |= self._guarded(batch, [e["body"]["id"] for e in batch])
            return verdicts
        for batch in pack(groups, self.tuning.upload_batch_bytes):
            verdicts |= self._guarded(batch, [b["id"] for b in batch])
        return verdicts

    def _guarded(self, batch: list[dict[str, Any]], ids: list[str]) -> dict[str, Verdict]:
        if self.suspended is None:
            try:
                return self.send(batch)
            except IngestionSuspended as err:
                self.suspended = err
        return {i: (Reason.UPLOAD_ERROR, str(self.suspended)[:300]) for i in ids}

    def send(self, batch: list[dict[str, Any]]) -> dict[str, Verdict]:
        """One batch, on the server's route: score bodies, or events on the ingestion route."""
        if self.server.write == "ingestion":
            return self._send_events(batch)
        if self.server.write == "list":
            try:
                return self._send_list(batch)
            except ListRefused as err:
                self.logger.warning(
                    "%s refused a list of scores (%s): writing score-create events on POST "
                    "ingestion from now on", self.server.label, err,
                )  # fmt: skip
                self.server = self.server.taking("ingestion")
                return self._send_events([score_event(b) for b in batch])
        return self._send_singly(batch)

    # --- list POSTs (SDK 5) ---
    def _send_list(self, batch: list[dict[str, Any]]) -> dict[str, Verdict]:
        # the JSON body sent as it is: through the SDK, its encoder walked every score again
        # (the largest of the flow's own costs per trace when TLM answers fast)
        wire = [wire_body(b) | {"timestamp": iso_utc(b["timestamp"])} for b in batch]
        payload = json.dumps(wire, ensure_ascii=False, default=str).encode()
        url = f"{self.calls.cfg.base_url}/api/public/scores"
        headers = {"content-type": "application/json"}

        def post() -> httpx.Response:
            resp = raise_if_transient(self.calls.http.post(url, content=payload, headers=headers))
            if resp.status_code >= 300:  # as the SDK raises it
                raise ApiError(status_code=resp.status_code, headers=dict(resp.headers),
                               body=resp.text)  # fmt: skip
            return resp

        what = f"writing {len(batch)} scores (POST scores)"
        try:
            resp = self.calls(what, post)
        except IngestionSuspended:
            raise
        except ApiError as err:
            if err.status_code == 400:
                raise ListRefused(describe(err)) from None
            return {b["id"]: (Reason.UPLOAD_ERROR, describe(err)) for b in batch}
        except Exception as err:
            return {b["id"]: (Reason.UPLOAD_ERROR, describe(err)) for b in batch}
        try:
            answer = CreateScoreBatchResults.model_validate(resp.json())
        except Exception:  # 202 with no body, or another shape: nothing refused
            return {b["id"]: None for b in batch}
        if answer.rejected == 0:
            return {b["id"]: None for b in batch}
        # 207: some refused, not saying which; re-sending is discouraged, so read them back
        errors = "; ".join(e.message for e in answer.errors[:3])[:300] or "refused"
        self.logger.warning(
            "207: %d of %d scores refused (%s); reading the batch back", answer.rejected,
            len(batch), errors,
        )  # fmt: skip
        try:
            found = {str(s.id) for s in scores_by_id(self.calls, [b["id"] for b in batch], what)}
        except Exception as err:
            found = set()
            errors += f"; reading back failed: {describe(err)}"
        self.read_back += len(batch)
        return {
            b["id"]: None if b["id"] in found else (Reason.NOT_CONFIRMED, errors) for b in batch
        }

    # --- score-create events on POST ingestion (older self-hosted servers) ---
    def _send_events(self, events: list[dict[str, Any]]) -> dict[str, Verdict]:
        cfg = self.calls.cfg
        url = f"{cfg.base_url}/api/public/ingestion"
        payload = json.dumps({"batch": events}, ensure_ascii=False, default=str).encode()
        headers = {"content-type": "application/json"}
        with make_http(cfg) as client:

            def post() -> httpx.Response:
                return raise_if_transient(client.post(url, content=payload, headers=headers))

            what = f"writing {len(events)} scores (POST ingestion)"
            try:
                resp = self.calls(what, post, ingestion=True)
            except IngestionSuspended:
                raise
            except Exception as err:
                return {e["body"]["id"]: (Reason.UPLOAD_ERROR, describe(err)) for e in events}
        if resp.status_code >= 300:  # the batch as a whole (a bad body, too large)
            why = f"HTTP {resp.status_code}: {resp.text[:300]}"
            return {e["body"]["id"]: (Reason.UPLOAD_ERROR, why) for e in events}
        try:
            answer = resp.json()
        except ValueError:
            answer = None
        verdicts = event_verdicts(events, answer)
        refused = [v for v in verdicts.values() if v is not None]
        if refused:
            self.logger.warning(
                "POST ingestion: %d of %d scores refused (%s)", len(refused), len(events),
                refused[0][1],
            )  # fmt: skip
        return verdicts

    # --- one score per POST (v4.16, TRUST_EVAL_SCORE_WRITE=single) ---
    def _send_singly(self, batch: list[dict[str, Any]]) -> dict[str, Verdict]:
        cfg = self.calls.cfg
        url = f"{cfg.base_url}/api/public/scores"
        with make_http(cfg) as client:

            def one(body: dict[str, Any]) -> tuple[str, Verdict]:
                # the single-object body has no timestamp: the server stamps the score itself
                wire = wire_body(body)

                def post() -> httpx.Response:
                    return raise_if_transient(client.post(url, json=wire))

                try:
                    resp = self.calls(f"writing score {body['id']} (POST scores)", post)
                except IngestionSuspended:
                    raise
                except Exception as err:
                    return body["id"], (Reason.UPLOAD_ERROR, describe(err))
                if resp.status_code < 300:
                    return body["id"], None
                return body["id"], (Reason.REFUSED, f"HTTP {resp.status_code}: {resp.text[:300]}")

            workers = min(self.tuning.single_post_concurrency, len(batch)) or 1
            with ThreadPoolExecutor(workers, thread_name_prefix="score-post") as pool:
                return dict(pool.map(one, batch))


@dataclass(slots=True)
class UploadResult:
    uploaded: list[Outcome]  # accepted by Langfuse (not yet read back)
    failed: list[Outcome]
    server: Server  # the write path, as the uploads left it
    labels_failed: int = 0
    read_back: int = 0
    suspended: str | None = None  # Langfuse suspended the project's ingestion: the run stops
    taken: set[str] = field(default_factory=set)  # the score ids Langfuse accepted


def upload_scores(items: list[Scored], spec: ScoreSpec, writer: Writer) -> UploadResult:
    """POST the scores of ``items``; every unit ends uploaded or failed, with its reason."""
    groups = [score_bodies(s, spec) for s in items]
    verdicts = writer.write(groups)
    uploaded: list[Outcome] = []
    failed: list[Outcome] = []
    labels_failed = 0
    for s, group in zip(items, groups, strict=True):
        labels = [b for b in group if _is_label(b)]
        labels_failed += sum(verdicts.get(b["id"]) is not None for b in labels)
        # the unit landed when its numeric scores did (trust, evals, criteria)
        numbers = [b for b in group if not _is_label(b)] or group
        fates = [verdicts.get(b["id"], (Reason.UPLOAD_ERROR, "not sent")) for b in numbers]
        verdict = next((v for v in fates if v is not None), None)
        bucket = Bucket.UPLOADED if verdict is None else Bucket.FAILED_TO_UPLOAD
        outcome = outcome_for(
            s.pair,
            bucket,
            *(verdict or (None, "")),
            score=s.score,
            explanation=s.explanation,
            question=preview(s.pair.query or last_user_turn(s.pair.prompt)),
            answer=preview(s.pair.response),
            cause=next(iter(s.labels.values()), None),
            failed_evals=s.failed_evals or None,
        )
        (uploaded if verdict is None else failed).append(outcome)
    stop = str(writer.suspended) if writer.suspended is not None else None
    taken = {i for i, v in verdicts.items() if v is None}
    return UploadResult(
        uploaded, failed, writer.server, labels_failed, writer.read_back, stop, taken
    )


@task(name="upload-scores", task_run_name="upload chunk {chunk_no}", cache_policy=NO_CACHE)
def upload_task(
    items: list[Scored], lf: Access, spec: ScoreSpec, server: Server, chunk_no: int
) -> UploadResult:
    logger = get_run_logger()
    writer = Writer(lf.calls(logger), server, lf.tuning)
    result = upload_scores(items, spec, writer)
    logger.info(
        "chunk %d: %d scores accepted by Langfuse, %d refused or lost (%d requests)",
        chunk_no,
        len(result.uploaded),
        len(result.failed),
        writer.calls.requests,
    )
    return result
