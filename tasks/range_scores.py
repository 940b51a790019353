"""The scores already in Langfuse for a range, read back: per-day figures and the lowest.

Pays no TLM. Reads, within the run's Langfuse budget:

1. the ids of the range's traces that carry the tags (``GET v2/observations`` roots,
   ``fields=core``, 1000 a page): scores carry no tags, their traces do;
2. the scores of the score name whose timestamp is in the range (``GET v3/scores``,
   ``fields=details,subject``: the value, the comment, the trace; 100 a page), kept when their
   trace is tagged: per-day figures, and the lowest ``limit`` in a bounded heap;
3. the root observations of those lowest traces only, by trace id, 100 ids a request, for the
   question and answer.

Our runs stamp a score with its trace's start time, so on Langfuse Cloud and v4.59+ the range
selects the traces that started in it; self-hosted v4.16 stamps a score when it arrives.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from langfuse.api import GetScoresV3Response, ObservationsV2Response, ScoreV3, ScoreV3_Numeric
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from tasks.langfuse_api import (
    ID_BATCH,
    NO_RETRY,
    Access,
    Calls,
    CursorGuard,
    batches,
    page_cursor,
    root_trace_ids,
    trace_id_filter,
)
from tasks.models import TraceRecord


@dataclass(slots=True)
class DayFigures:
    day: date
    scored: int = 0
    total: float = 0.0
    below: int = 0

    @property
    def mean(self) -> float | None:
        return self.total / self.scored if self.scored else None


@dataclass(frozen=True, slots=True)
class Found:
    """One score of the range."""

    value: float
    trace_id: str
    observation_id: str | None
    comment: str | None
    timestamp: datetime

    @property
    def key(self) -> str:
        return f"{self.trace_id}/{self.observation_id or ''}"


@dataclass(frozen=True, slots=True)
class Last:
    """A key that sorts backwards: in the heap of the lowest, of two equal scores the one with
    the greater key goes first, so re-reads keep the same rows."""

    key: str

    def __lt__(self, other: Last) -> bool:
        return self.key > other.key

    def __gt__(self, other: Last) -> bool:
        return self.key < other.key


@dataclass(slots=True)
class RangeRead:
    days: list[DayFigures]
    lowest: list[Found]
    roots: dict[str, TraceRecord]  # the lowest traces' roots, by trace id
    tagged: int  # tagged traces in the range
    requests: int


def tagged_traces(calls: Calls, start: datetime, end: datetime, tags: Sequence[str]) -> set[str]:
    """The ids of the traces carrying any of ``tags`` that started in [start, end)."""
    return root_trace_ids(calls, start, end, tags, what="reading the range's traces")


def subject_of(score: ScoreV3) -> tuple[str, str | None] | None:
    """The trace (and observation) a score is on; None for sessions and experiments."""
    subject = score.subject
    if subject is None or not subject.id:
        return None
    if subject.kind == "trace":
        return subject.id, None
    trace_id = getattr(subject, "trace_id", None)
    if subject.kind == "observation" and trace_id:
        return str(trace_id), subject.id
    return None


def read_scores(
    calls: Calls,
    start: datetime,
    end: datetime,
    *,
    score_name: str,
    tagged: set[str],
    below: float,
    limit: int,
) -> tuple[list[DayFigures], list[Found]]:
    """Per-day figures and the ``limit`` lowest of the tagged traces' scores in the range."""
    days: dict[date, DayFigures] = {}
    heap: list[tuple[float, Last, Found]] = []  # the lowest: heap[0] is the one to drop
    seen: set[str] = set()
    guard, cursor = CursorGuard("reading the range's scores"), None
    while True:

        def call(c: str | None = cursor) -> GetScoresV3Response:
            return calls.scores.get_many(
                name=score_name, from_timestamp=start, to_timestamp=end,
                fields="details,subject", limit=ID_BATCH, cursor=c, request_options=NO_RETRY,
            )  # fmt: skip

        resp = calls("reading the range's scores (GET v3/scores)", call)
        for score in resp.data:
            on = subject_of(score)
            if on is None or on[0] not in tagged or f"{on[0]}/{on[1] or ''}" in seen:
                continue  # another tag's trace, or a unit already counted (one score each)
            if not isinstance(score, ScoreV3_Numeric) or score.value is None:
                continue
            seen.add(f"{on[0]}/{on[1] or ''}")
            value = float(score.value)
            fig = days.setdefault(score.timestamp.date(), DayFigures(score.timestamp.date()))
            fig.scored += 1
            fig.total += value
            fig.below += value < below
            found = Found(value, on[0], on[1], score.comment, score.timestamp)
            item = (-value, Last(found.key), found)
            if len(heap) < limit:
                heapq.heappush(heap, item)
            elif item > heap[0]:
                heapq.heapreplace(heap, item)
        cursor = guard.next(page_cursor(resp), len(resp.data), [str(s.id) for s in resp.data])
        if cursor is None:
            break
    lowest = sorted((f for _, _, f in heap), key=lambda f: (f.value, f.key))
    return sorted(days.values(), key=lambda d: d.day), lowest


def roots_of(
    calls: Calls, trace_ids: Sequence[str], end: datetime, expand: Sequence[str]
) -> dict[str, TraceRecord]:
    """The root observations of these traces (100 ids a request), for question and answer."""
    out: dict[str, TraceRecord] = {}
    for ids in batches(list(dict.fromkeys(trace_ids))):

        def call(chunk: Sequence[str] = ids) -> ObservationsV2Response:
            return calls.observations.get_many(
                fields="core,basic,io,metadata", expand_metadata=",".join(expand) or None,
                limit=1000, is_root_observation=True, to_start_time=end,
                filter=trace_id_filter(chunk), request_options=NO_RETRY,
            )  # fmt: skip

        for obs in calls("reading the lowest traces (GET v2/observations)", call).data:
            out.setdefault(
                obs.trace_id or obs.id,
                TraceRecord(
                    trace_id=obs.trace_id or obs.id, observation_id=obs.id,
                    start_time=obs.start_time, name=obs.name, input=obs.input,
                    output=obs.output, environment=obs.environment,
                    metadata=obs.metadata if isinstance(obs.metadata, dict) else None,
                ),
            )  # fmt: skip
    return out


@task(name="read-range-scores", task_run_name="read the range's scores", cache_policy=NO_CACHE)
def read_range_task(
    lf: Access,
    start: datetime,
    end: datetime,
    tags: list[str],
    score_name: str,
    below: float,
    limit: int,
) -> RangeRead:
    calls = lf.calls(get_run_logger())
    tagged = tagged_traces(calls, start, end, tags)
    days, lowest = read_scores(
        calls, start, end, score_name=score_name, tagged=tagged, below=below, limit=limit
    )
    expand = (*lf.tuning.system_prompt_keys, *lf.tuning.context_keys)
    roots = roots_of(calls, [f.trace_id for f in lowest], end, expand) if lowest else {}
    calls.logger.info(
        "%d tagged traces, %d scored, %d below %s (%d Langfuse requests)",
        len(tagged), sum(d.scored for d in days), sum(d.below for d in days), below,
        calls.requests,
    )  # fmt: skip
    return RangeRead(days, lowest, roots, len(tagged), calls.requests)
