"""Which whole UTC days of a stream (tags and score name) have a completed evaluation: a Prefect
Variable per stream, the watermark the daily run catches up from."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

from prefect.variables import Variable

from tasks.config import RunLogger
from tasks.retry import describe
from tasks.windows import split_days

KEEP_DAYS = 62  # the watermark remembers this many recent days


def variable_name(tags: Sequence[str], score_name: str) -> str:
    key = "\n".join([*sorted(set(tags)), score_name])
    return f"trust_evaluated_{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def whole_days(start: datetime, end: datetime) -> list[date]:
    """The whole UTC days inside [start, end)."""
    return [s.date() for s, e in split_days(start, end) if e - s == timedelta(days=1)]


def evaluated_days(tags: Sequence[str], score_name: str) -> set[date]:
    value = Variable.get(variable_name(tags, score_name), default=None)
    days: list[Any] = value.get("days", []) if isinstance(value, dict) else []
    return {date.fromisoformat(d) for d in days if isinstance(d, str)}


def mark_evaluated(
    start: datetime, end: datetime, tags: Sequence[str], score_name: str, logger: RunLogger
) -> None:
    """Record the window's whole days as evaluated (a failure here only costs a re-run)."""
    days = whole_days(start, end)
    if not days:
        return
    try:
        known = evaluated_days(tags, score_name) | set(days)
        recent = sorted(known)[-KEEP_DAYS:]
        value: dict[str, Any] = {
            "tags": sorted(set(tags)),
            "score_name": score_name,
            "days": [d.isoformat() for d in recent],
        }
        Variable.set(variable_name(tags, score_name), value, overwrite=True)
    except Exception as err:
        logger.warning("could not record the evaluated days: %s", describe(err))


def days_to_catch_up(previous: date, n: int, done: set[date]) -> list[date]:
    """Up to ``n`` whole days before ``previous`` with no completed evaluation, oldest first."""
    candidates = [previous - timedelta(days=i) for i in range(n, 0, -1)]
    return [d for d in candidates if d not in done]
