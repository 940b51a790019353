"""A backfill's ``max_cost`` is a total for all its days. The simplest design that never passes
it: with a budget the days run one at a time, in order (on this process or on workers alike),
and each day gets what is left of the total after the days before it (its own ``max_cost``).
A day spends what its report prices (``EvalReport.stages``); a day whose report cannot be read
counts as having spent all it was given. Once the total is spent the days still run, with a
budget too small to send anything: their traces are counted ``over_budget``, for a later run.
The total is per backfill run: a backfill started again has its whole total again."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from flows.backfill_summary import DayResult
from flows.options import EvalOptions
from tasks.report import EvalReport

NOTHING = 1e-9  # what a day gets once the total is spent (max_cost must be above 0)
Day = tuple[datetime, datetime]


def day_cost(report: EvalReport | None, given: float) -> float:
    """What a day spent at TLM, as its report prices it (unknown: all it was given)."""
    if report is None:
        return given
    return sum(s.cost or 0.0 for s in report.stages.values())


def days_within_budget(
    windows: list[Day],
    params: dict[str, Any],
    total: float,
    run: Callable[[list[Day], dict[str, Any]], list[DayResult]],
) -> list[DayResult]:
    """Each day run by ``run`` (one at a time) with what is left of ``total``."""
    opts = params["options"]
    assert isinstance(opts, EvalOptions)
    spent, days = 0.0, []
    for day in windows:
        left = max(total - spent, NOTHING)
        day_opts = opts.model_copy(update={"max_cost": left})
        (result,) = run([day], {**params, "options": day_opts})
        days.append(result)
        spent += day_cost(result.report, left)
    return days
