"""Per (stream, whole UTC day): one Prefect Variable, ``Stream.day_record_name(day)``, holding the
day's record (``tasks/trend.py: DayRecord``): whether its evaluation is complete (what the daily
catch-up reads), the day's figures (what the trend shows) and its drift verdict. Written by the
runs that evaluated the day, so parallel days never overwrite each other's records.

A day is complete when a run over the whole day landed every trace (or rightly skipped it) with
nothing left out on purpose: not a dry run, not capped by ``max_traces``, not sampled. Its
figures are recorded by any run over exactly that day that read all of it: a figures-only
record (some traces failed to score, or a sample) is not complete.

The records live in the Prefect server's database: they survive a server restart, and are
pruned after ``KEEP_DAYS``. A lost day is rebuilt by a backfill over it (traces already scored
cost no TLM: the run reads their values back and records the figures again).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from prefect import get_client

from flows.options import EvalOptions
from tasks.config import RunLogger
from tasks.failures import Reason
from tasks.report import EvalReport
from tasks.retry import describe
from tasks.stream import Stream
from tasks.trend import DayFigures, DayRecord, DriftMark, merge, parse_record, record_value
from tasks.windows import whole_days

KEEP_DAYS = 62  # records of older days are deleted when a day is recorded


def complete(report: EvalReport, opts: EvalOptions) -> bool:
    """The run evaluated its window completely: nothing left for a later run to do."""
    return (
        report.ok
        and not report.capped
        and not report.skipped.get(Reason.OVER_BUDGET.value)  # left for the next run
        and not opts.dry_run
        and opts.sample_rate >= 1.0
        and opts.max_traces is None
    )


def cause_mix(report: EvalReport) -> dict[str, int] | None:
    """The day's cause mix (cause -> low-trust units this run scored with RAG evals) for the
    trend's causes column; None when the run classified none."""
    return dict(report.causes) or None


def figures_of(report: EvalReport, opts: EvalOptions) -> DayFigures | None:
    """The window's figures, when the run read all of it (None: a dry run, capped, or a stage
    failed: its figures would be partial)."""
    if opts.dry_run or report.capped or report.errors or Reason.OVER_BUDGET in report.skipped:
        return None
    return DayFigures(
        fetched=report.fetched,
        scored=report.scored_total,
        mean=None if report.mean_total is None else round(report.mean_total, 4),
        low=report.low_total,
        threshold=report.low_trust_threshold,
        sampled=opts.sample_rate < 1.0,
        causes=cause_mix(report),
    )


def read_days(stream: Stream, days: list[date], logger: RunLogger) -> dict[date, DayRecord]:
    """The records of ``days`` (one request). A record that is not one of ours is reported in
    one line and counts as absent."""
    names = {stream.day_record_name(d): d for d in days}
    if not names:
        return {}
    with get_client(sync_client=True) as client:
        resp = client.request(
            "POST", "/variables/filter",
            json={"variables": {"name": {"any_": list(names)}}, "limit": len(names)},
        )  # fmt: skip
    found: dict[date, DayRecord] = {}
    for var in resp.json():
        day = names.get(str(var.get("name")))
        if day is None:
            continue
        record = parse_record(day, var.get("value"))
        if record is None:
            logger.warning(
                "the evaluation record %s is not one this project wrote (%.80r): treating %s "
                "as not evaluated", var.get("name"), var.get("value"), day,
            )  # fmt: skip
            continue
        found[day] = record
    return found


def evaluated_days(stream: Stream, days: list[date], logger: RunLogger) -> set[date]:
    """Those of ``days`` the stream evaluated completely (one request)."""
    return {d for d, rec in read_days(stream, days, logger).items() if rec.complete}


def record_window(
    stream: Stream,
    start: datetime,
    end: datetime,
    report: EvalReport,
    opts: EvalOptions,
    run_id: str | None,
    logger: RunLogger,
) -> None:
    """Record what the run learnt of the window's whole days: each is complete (or not), and a
    window of exactly one day records that day's figures. A failure here is a warning: the
    catch-up then re-runs the day, and the trend shows it after that run."""
    days = whole_days(start, end)
    done = complete(report, opts)
    figures = figures_of(report, opts) if len(days) == 1 else None
    if not days or (not done and figures is None):
        return
    now = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        old = read_days(stream, days, logger)
        with get_client(sync_client=True) as client:
            for day in days:
                new = merge(old.get(day), day, complete=done, figures=figures, run_id=run_id,
                            at=now)  # fmt: skip
                _put(client, stream.day_record_name(day), record_value(new, stream.label))
            _prune(client, stream, max(days) - timedelta(days=KEEP_DAYS))
    except Exception as err:
        logger.warning("could not record the evaluated days: %s", describe(err))


def mark_drift(stream: Stream, day: date, mark: DriftMark, logger: RunLogger) -> bool:
    """Write the day's drift verdict into its record (read again just before: a run of that
    day may have replaced its figures since). False when it could not be written: the verdict
    is then not acted on, and the day is judged again by the next run."""
    try:
        current = read_days(stream, [day], logger).get(day)
        if current is None or current.drift is not None:
            return False
        value = record_value(current.model_copy(update={"drift": mark}), stream.label)
        with get_client(sync_client=True) as client:
            _put(client, stream.day_record_name(day), value)
        return True
    except Exception as err:
        logger.warning("could not record the drift verdict of %s: %s", day, describe(err))
        return False


def _put(client: Any, name: str, value: dict[str, Any]) -> None:
    from prefect.client.schemas.actions import VariableCreate, VariableUpdate
    from prefect.exceptions import ObjectAlreadyExists

    try:
        client.create_variable(VariableCreate(name=name, value=value, tags=["trust-evaluated"]))
    except ObjectAlreadyExists:
        client.update_variable(VariableUpdate(name=name, value=value))


def _prune(client: Any, stream: Stream, before: date) -> None:
    prefix = stream.day_record_prefix
    resp = client.request(
        "POST", "/variables/filter", json={"variables": {"name": {"like_": f"{prefix}%"}}}
    )
    for var in resp.json():
        name = str(var.get("name"))
        try:
            day = date.fromisoformat(name.removeprefix(prefix))
        except ValueError:
            continue
        if day < before:
            client.delete_variable_by_name(name)


def days_to_catch_up(previous: date, n: int, done: set[date]) -> list[date]:
    """Up to ``n`` whole days before ``previous`` with no complete evaluation, oldest first."""
    candidates = [previous - timedelta(days=i) for i in range(n, 0, -1)]
    return [d for d in candidates if d not in done]
