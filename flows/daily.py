"""The daily flow: the previous whole UTC day of the run's scheduled time, plus any of the
``catch_up_days`` days before it that have no completed evaluation (a missed schedule heals on
the next run). Each day is a window run, a subflow of this run. Then the review loop: the
reviewers' verdicts (with a review queue), the trust trend and its drift events
(``flows/review_loop.py``). A run whose last ``empty_days`` days all fetched no trace fails, so
that a renamed tag is noticed."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from pydantic import Field

from flows.backfill import raise_if_failed, run_days, write_summary
from flows.backfill_summary import BackfillSummary
from flows.evaluate_traces import scheduled_time
from flows.evaluated_days import days_to_catch_up, evaluated_days, read_days
from flows.options import EvalOptions, options_from, validate_tags
from flows.review_loop import check_review, close_the_loop
from flows.settings import Settings, open_stream
from flows.stopping import stop_on_signals
from tasks.config import RunLogger
from tasks.errors import RunFailed, fails_in_one_line
from tasks.langfuse_api import Access
from tasks.retry import describe
from tasks.stream import Stream
from tasks.trend import empty_streak
from tasks.windows import midnight, previous_day


class NothingToEvaluate(RunFailed):
    """The stream's last ``empty_days`` days fetched no trace (a renamed tag?)."""


def _run_name() -> str:
    tags = ",".join((flow_run.parameters or {}).get("tags") or [])
    return f"daily {previous_day(scheduled_time())[0]:%Y-%m-%d} [{tags}]"


@flow(name="evaluate-traces-daily", flow_run_name=_run_name, log_prints=True)
@fails_in_one_line
def daily(
    tags: list[str],
    options: EvalOptions = EvalOptions(),  # noqa: B008 (immutable)
    catch_up_days: Annotated[int, Field(ge=0, le=31)] = 3,
    empty_days: Annotated[int, Field(ge=0, le=31)] = 3,
) -> BackfillSummary:
    """Evaluate the previous whole UTC day of the scheduled time, and catch up on missed days.

    Args:
        tags: The tag(s) the traces to evaluate carry (any of them).
        options: What is scored and how.
        catch_up_days: How many days before the previous day are checked for a missing
            evaluation (a schedule that did not run); those are evaluated first.
        empty_days: Fail the run when this many days in a row, the previous day last, fetched
            no trace (a renamed tag?); 0: never.
    """
    opts = options_from(options)
    tags = validate_tags(tags)
    settings = Settings.load(opts)  # a bad setting is refused before any day starts
    logger = get_run_logger()
    lf = Access(settings.langfuse, settings.tuning)
    _, stream = open_stream(lf, tags, opts.score_name, logger)
    if opts.review_queue:
        check_review(lf, opts, logger)  # a verdict config we cannot read: before any day
    day = previous_day(scheduled_time())[0].date()
    before = days_to_catch_up(day, catch_up_days, set())
    missed = days_to_catch_up(day, catch_up_days, evaluated_days(stream, before, logger))
    if missed:
        logger.info("catching up %s (no complete evaluation)", ", ".join(map(str, missed)))
    windows = [(start, start + timedelta(days=1)) for start in map(midnight, [*missed, day])]
    with stop_on_signals():  # no new day once stopped
        days = run_days(windows, {"tags": tags, "options": opts}, workers=1)
    summary = BackfillSummary(
        start_date=windows[0][0].date(),
        end_date=day,
        tags=tags,
        score_name=opts.score_name,
        dry_run=opts.dry_run,
        days=days,
        flow_run_id=str(flow_run.id) if flow_run.id else None,
        caught_up=missed,
    )
    write_summary(summary, stream)
    if not opts.dry_run:
        try:  # a view of what landed: its failure is a warning, never the day's
            close_the_loop(lf, stream, opts, day, verdicts=bool(opts.review_queue))
        except Exception as err:
            logger.warning("closing the review loop failed: %s", describe(err))
    raise_if_failed(summary)
    if empty_days and not opts.dry_run:
        refuse_nothing(stream, day, empty_days, tags, logger)
    return summary


def refuse_nothing(
    stream: Stream, day: date, empty_days: int, tags: list[str], logger: RunLogger
) -> None:
    """Fail when the last ``empty_days`` days (``day`` last) all fetched no trace."""
    window = [day - timedelta(days=i) for i in range(empty_days)]
    streak = empty_streak(read_days(stream, window, logger), day)
    if streak >= empty_days:
        raise NothingToEvaluate(
            f"no trace tagged {', '.join(tags)} in the last {empty_days} days "
            f"({window[-1]} → {day}): check the tags (renamed?) and the Langfuse project; "
            "empty_days=0 allows empty days"
        )
