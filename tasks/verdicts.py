"""Reviewers' verdicts read back: how often the low-trust flag was right, per stream.

What is read (``GET /api/public/v3/scores``, 100 rows a page, every request through the run's
``Calls``: counted, retried, within the shared Langfuse budget):

1. the units the pipeline scored in the last ``review_days`` days: our scores by name, source
   ``API`` and timestamp range. The timestamp is the trace's start time (Cloud, self-hosted
   v4.59+) or, on v4.16, the time the score was written;
2. the reviewers' verdicts on them: ``ANNOTATION`` scores named ``review_score``, by lists of
   100 trace ids. A unit's newest verdict counts (a second verdict updates the first), so a
   unit is counted once however often it is reviewed or read.

A verdict says correct or incorrect by its data type:

| data type | correct | incorrect |
|---|---|---|
| CATEGORICAL | label ``correct`` | label ``incorrect`` (case-insensitive) |
| BOOLEAN | true | false |
| NUMERIC | 1 | 0 |

Anything else (another label or number, a TEXT score) is counted as unreadable and left out.

The precision of the flag is the share of flagged units (score below the threshold) that
reviewers marked incorrect. Below ``MIN_VERDICTS`` reviewed flagged units there are too few to
conclude, and a threshold of the table with fewer is never suggested. Reviewers see the queue,
the units already flagged, and only spot-check the others: a threshold above the current one is
suggested only when at least ``BAND_COVERAGE`` of the units it would add to the flag were
reviewed, never on the verdicts of the units flagged already alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from langfuse.api import GetScoresV3Response, ScoreV3
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from pydantic import BaseModel

from tasks.langfuse_api import NO_RETRY, Access, Calls, CursorGuard, batches, page_cursor

THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(1, 10))
MIN_VERDICTS = 10
BAND_COVERAGE = 0.5  # of the units a higher threshold would add to the flag, reviewed
CORRECT, INCORRECT = "correct", "incorrect"  # the labels of the config tasks/review.py makes

Unit = tuple[str, str | None]  # (trace id, observation id)


def verdict_value(score: Any) -> bool | None:
    """True: the answer is correct; False: incorrect; None: not a verdict we can read."""
    kind, value = str(getattr(score, "data_type", "")), getattr(score, "value", None)
    if kind == "CATEGORICAL" and isinstance(value, str):
        label = value.strip().lower()
        return True if label == CORRECT else False if label == INCORRECT else None
    if kind == "BOOLEAN" and isinstance(value, bool | int | float):
        return bool(value)
    if kind == "NUMERIC" and isinstance(value, int | float) and value in (0, 1):
        return value == 1
    return None


def unit_of(score: ScoreV3) -> Unit | None:
    subject = score.subject
    if subject is None:
        return None
    if subject.kind == "trace":
        return (subject.id, None)
    if subject.kind == "observation" and subject.trace_id:
        return (subject.trace_id, subject.id)
    return None


def _pages(calls: Calls, what: str, **query: Any) -> Iterator[ScoreV3]:
    """Every row of a v3 scores listing, page by page (a looping cursor is stopped)."""
    guard, cursor = CursorGuard(what), None
    while True:

        def get(page_cursor: str | None = cursor) -> GetScoresV3Response:
            return calls.scores.get_many(
                **query, fields="subject", limit=100, cursor=page_cursor,
                request_options=NO_RETRY,
            )  # fmt: skip

        resp = calls(f"{what} (GET v3/scores)", get)
        yield from resp.data
        cursor = guard.next(page_cursor(resp), len(resp.data), [str(s.id) for s in resp.data])
        if cursor is None:
            return


def scored_units(
    calls: Calls, score_name: str, start: datetime, end: datetime
) -> dict[Unit, float]:
    """Our scores (source API) with a timestamp in [start, end): unit -> value."""
    found: dict[Unit, float] = {}
    for score in _pages(
        calls, "reading our scores", name=score_name, source="API",
        from_timestamp=start, to_timestamp=end,
    ):  # fmt: skip
        unit = unit_of(score)
        if unit is not None and str(score.data_type) == "NUMERIC":
            found[unit] = float(score.value)
    return found


def verdicts_on(calls: Calls, review_score: str, trace_ids: Sequence[str]) -> dict[Unit, Any]:
    """The newest ANNOTATION score named ``review_score`` per unit of these traces."""
    newest: dict[Unit, Any] = {}
    for ids in batches(sorted(set(trace_ids))):
        for score in _pages(
            calls, "reading reviewers' verdicts", name=review_score, source="ANNOTATION",
            trace_id=",".join(ids),
        ):  # fmt: skip
            unit = unit_of(score)
            if unit is None:
                continue
            if unit not in newest or score.timestamp > newest[unit].timestamp:
                newest[unit] = score
    return newest


# --- the figures ------------------------------------------------------------------------------


class ThresholdRow(BaseModel):
    threshold: float
    would_flag: int  # scored units below it
    reviewed: int  # of which reviewed
    incorrect: int  # of which marked incorrect
    added: int = 0  # units it flags that the current threshold does not
    added_reviewed: int = 0  # of which reviewed

    @property
    def precision(self) -> float | None:
        return self.incorrect / self.reviewed if self.reviewed else None

    @property
    def enough(self) -> bool:
        return self.reviewed >= MIN_VERDICTS

    @property
    def covered(self) -> bool:
        """Enough of what it adds to the flag was reviewed to judge it."""
        return not self.added or self.added_reviewed >= BAND_COVERAGE * self.added


class Verdicts(BaseModel):
    """The review loop's figures for one stream and period."""

    score_name: str
    review_score: str
    since: datetime
    until: datetime
    threshold: float
    target: float
    scored: int
    reviewed: int = 0
    unreadable: int = 0  # verdicts whose value says neither correct nor incorrect
    flagged_reviewed: int = 0
    flagged_incorrect: int = 0
    unflagged_reviewed: int = 0
    unflagged_incorrect: int = 0
    table: list[ThresholdRow] = []
    suggestion: float | None = None
    langfuse_requests: int = 0

    @property
    def precision(self) -> float | None:
        r = self.flagged_reviewed
        return self.flagged_incorrect / r if r else None

    @property
    def enough(self) -> bool:
        return self.flagged_reviewed >= MIN_VERDICTS


@dataclass(frozen=True, slots=True)
class Period:
    since: datetime
    until: datetime


def measure(
    scored: dict[Unit, float],
    verdicts: dict[Unit, bool | None],
    *,
    score_name: str,
    review_score: str,
    period: Period,
    threshold: float,
    target: float,
) -> Verdicts:
    """The flag's precision at ``threshold``, the table over THRESHOLDS and the suggestion:
    the highest threshold whose precision, over at least MIN_VERDICTS reviewed flagged units,
    reaches ``target`` (it flags the most units at that precision), among those whose added
    units were reviewed enough (``ThresholdRow.covered``)."""
    known = {u: v for u, v in verdicts.items() if u in scored and v is not None}
    out = Verdicts(
        score_name=score_name, review_score=review_score, since=period.since,
        until=period.until, threshold=threshold, target=target, scored=len(scored),
        reviewed=len(known), unreadable=sum(1 for u, v in verdicts.items()
                                            if u in scored and v is None),
    )  # fmt: skip
    for unit, correct in known.items():
        if scored[unit] < threshold:
            out.flagged_reviewed += 1
            out.flagged_incorrect += not correct
        else:
            out.unflagged_reviewed += 1
            out.unflagged_incorrect += not correct
    for t in THRESHOLDS:
        below = [u for u, value in scored.items() if value < t]
        judged = [known[u] for u in below if u in known]
        added = [u for u in below if scored[u] >= threshold]
        out.table.append(
            ThresholdRow(threshold=t, would_flag=len(below), reviewed=len(judged),
                         incorrect=sum(1 for c in judged if not c), added=len(added),
                         added_reviewed=sum(1 for u in added if u in known))
        )  # fmt: skip
    fit = [
        r.threshold for r in out.table if r.enough and r.covered and (r.precision or 0) >= target
    ]
    out.suggestion = max(fit, default=None)
    return out


@task(name="read-verdicts", task_run_name="read reviewers' verdicts", cache_policy=NO_CACHE)
def read_verdicts_task(
    lf: Access,
    score_name: str,
    review_score: str,
    period: Period,
    threshold: float,
    target: float,
) -> Verdicts:
    """Our scores of the period, then the verdicts on their traces, measured."""
    calls = lf.calls(get_run_logger())
    scored = scored_units(calls, score_name, period.since, period.until)
    raw = verdicts_on(calls, review_score, [trace for trace, _ in scored]) if scored else {}
    out = measure(
        scored, {u: verdict_value(s) for u, s in raw.items()}, score_name=score_name,
        review_score=review_score, period=period, threshold=threshold, target=target,
    )  # fmt: skip
    out.langfuse_requests = calls.requests
    calls.logger.info(
        "%d units scored since %s, %d reviewed (%d flagged, %d of them marked incorrect); "
        "%d Langfuse requests", out.scored, period.since, out.reviewed, out.flagged_reviewed,
        out.flagged_incorrect, calls.requests,
    )  # fmt: skip
    return out
