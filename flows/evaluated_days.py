"""Which whole UTC days of a stream have a complete evaluation: the record the daily run catches
up from. One Prefect Variable per (stream, day), ``Stream.day_record_name(day)``, written only
by the run that evaluated the day, so parallel days never overwrite each other's marks.

A day is complete when a run over the whole day landed every trace (or rightly skipped it) with
nothing left out on purpose: not a dry run, not capped by ``max_traces``, not sampled.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from prefect import get_client

from flows.options import EvalOptions
from tasks.config import RunLogger
from tasks.report import EvalReport
from tasks.retry import describe
from tasks.stream import Stream
from tasks.windows import whole_days

KEEP_DAYS = 62  # records of older days are deleted when a day is marked


def complete(report: EvalReport, opts: EvalOptions) -> bool:
    """The run evaluated its window completely: nothing left for a later run to do."""
    return (
        report.ok
        and not report.capped
        and not opts.dry_run
        and opts.sample_rate >= 1.0
        and opts.max_traces is None
    )


def evaluated_days(stream: Stream, days: list[date], logger: RunLogger) -> set[date]:
    """Those of ``days`` the stream evaluated completely (one request). A record that is not
    one of ours is reported in one line and counts as not evaluated."""
    names = {stream.day_record_name(d): d for d in days}
    if not names:
        return set()
    with get_client(sync_client=True) as client:
        resp = client.request(
            "POST", "/variables/filter",
            json={"variables": {"name": {"any_": list(names)}}, "limit": len(names)},
        )  # fmt: skip
    done: set[date] = set()
    for var in resp.json():
        day = names.get(str(var.get("name")))
        value: Any = var.get("value")
        if day is None:
            continue
        if isinstance(value, dict) and value.get("complete") is True:
            done.add(day)
        else:
            logger.warning(
                "the evaluation record %s is not one this project wrote (%.80r): treating %s "
                "as not evaluated", var.get("name"), value, day,
            )  # fmt: skip
    return done


def mark_evaluated(
    stream: Stream, start: datetime, end: datetime, run_id: str | None, logger: RunLogger
) -> None:
    """Record the window's whole days as evaluated (a failure here only costs a re-run)."""
    days = whole_days(start, end)
    if not days:
        return
    value = {
        "complete": True,
        "evaluated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "flow_run_id": run_id,
        "stream": stream.label,
    }
    try:
        with get_client(sync_client=True) as client:
            for day in days:
                _put(client, stream.day_record_name(day), value)
            _prune(client, stream, max(days) - timedelta(days=KEEP_DAYS))
    except Exception as err:
        logger.warning("could not record the evaluated days: %s", describe(err))


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
