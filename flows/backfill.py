"""The backfill flow: evaluate a range of past UTC days, one window run per day, as subflows of
this run, ``max_concurrency`` at a time; then one summary for the range. Why subflows and how a
day's failure is reported: docs/DESIGN.md, "Backfills"."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Annotated, Any, Literal
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.client.schemas.objects import FlowRun
from prefect.exceptions import PrefectHTTPStatusError
from prefect.runtime import flow_run
from pydantic import Field

from flows.backfill_budget import days_within_budget
from flows.backfill_summary import (
    BackfillSummary,
    DayResult,
    DayStatus,
    day_status,
    range_alert,
    summary_markdown,
)
from flows.day_runs import (
    check_day_deployment,
    heartbeat_silence_s,
    report_of,
    run_days_on_workers,
)
from flows.evaluate_traces import EvaluationFailed, evaluate_traces
from flows.evaluated_days import complete
from flows.options import EvalOptions, options_from, validate_tags
from flows.publish import artifact_url, emit_range_alert, table_artifact
from flows.review_loop import close_the_loop, traces_url
from flows.settings import Settings, open_stream
from flows.stopping import STOP, deployed, stop_on_signals
from tasks.clock import SYSTEM, Clock
from tasks.config import RunLogger, load_tuning
from tasks.errors import ConfigError, RunFailed, fails_in_one_line
from tasks.fetch import roots_in_window
from tasks.langfuse_api import Access
from tasks.models import Window
from tasks.report import EvalReport
from tasks.retry import describe
from tasks.stream import Stream
from tasks.windows import midnight, previous_day, split_days

SUMMARY_KEY = "trust-backfill-summary"
BUSY = (502, 503, 504)
Links = dict[str, str | None]


class BackfillFailed(RunFailed):
    """One or more days failed; ``summary`` holds every day's (partial) report."""

    def __init__(self, message: str, summary: BackfillSummary) -> None:
        super().__init__(message)
        self.summary = summary


def day_range(start_date: date, end_date: date) -> list[tuple[datetime, datetime]]:
    """Whole UTC days from ``start_date`` to ``end_date``, both included."""
    if end_date < start_date:
        raise ConfigError(f"end_date ({end_date}) must not be before start_date ({start_date})")
    if end_date >= datetime.now(UTC).date():  # compared as dates: 9999-12-31 + 1 day overflows
        raise ConfigError(
            f"end_date {end_date} is not over yet (UTC): a backfill covers whole past days; "
            "use the window flow for today so far"
        )
    return split_days(midnight(start_date), midnight(end_date + timedelta(days=1)))


def left_to_do(lf: Access, opts: EvalOptions) -> Callable[[FlowRun], bool]:
    """Whether a day an earlier backfill evaluated has something left to score: its report had
    failures (or cannot be read, or was a trial), or Langfuse now counts more of its traces than
    it read (late traces). One count per day, no TLM; when Langfuse cannot count, yes."""
    logger = get_run_logger()

    def needs(run: FlowRun) -> bool:
        report = report_of(run)
        if report is None or not complete(report, opts) or opts.observations:
            return True
        window = Window(
            datetime.fromisoformat(str(run.parameters["window_start"])),
            datetime.fromisoformat(str(run.parameters["window_end"])),
            tuple(report.tags),
        )
        count = roots_in_window(lf.calls(logger), window)
        if count is None or count > report.fetched:
            logger.info("day %s: %s traces now, %d read by %s: evaluated again",
                        f"{window.start:%Y-%m-%d}", count if count is not None else "more",
                        report.fetched, run.name)  # fmt: skip
            return True
        return False

    return needs


# --- the flow -----------------------------------------------------------------------------


def _run_name() -> str:
    p = flow_run.parameters or {}
    tags = ",".join(p.get("tags") or [])
    return f"backfill {p.get('start_date')}..{p.get('end_date')} [{tags}]"


# A SQLite Prefect server may answer 503 ("database is locked") to a day's subflow creation
# through all the client's retries while other days' task states are written. The day runs
# again: nothing is paid before its run exists, and after, the ledger keeps it paid once.
DAY_TRIES, DAY_PAUSE_S = 3, 5.0


def run_day(
    start: datetime,
    end: datetime,
    params: dict[str, Any],
    run: Callable[..., EvalReport] = evaluate_traces,
    clock: Clock = SYSTEM,
    logger: RunLogger | None = None,
) -> DayResult:
    """One day as a subflow; its failure becomes a failed DayResult, never an exception."""
    day = partial(DayResult, window_start=start, window_end=end)
    for attempt in range(1, DAY_TRIES + 1):
        if STOP.why:
            return day(status="failed", error=f"not started: {STOP.why}")
        try:
            report = run(window_start=start, window_end=end, **params)
        except EvaluationFailed as err:
            return day(status="failed", report=err.report, error=str(err))
        except Exception as err:  # a day must not stop the others
            code = err.response.status_code if isinstance(err, PrefectHTTPStatusError) else 0
            if code not in BUSY or attempt == DAY_TRIES:
                return day(status="failed", error=describe(err))
            (logger or get_run_logger()).warning(
                "day %s: the Prefect server answered %s; the day runs again in %.0f s",
                start.date(), code, DAY_PAUSE_S,
            )  # fmt: skip
            clock.sleep(DAY_PAUSE_S)
            continue
        return day(status=day_status(report), report=report)
    raise AssertionError("unreachable: the last try returns")


def days_of_runs(runs: list[tuple[FlowRun, EvalReport | None]]) -> list[DayResult]:
    """The days that ran as deployment runs, from their final states and persisted reports."""
    days = []
    for run, report in runs:
        params = run.parameters
        start = datetime.fromisoformat(str(params["window_start"]))
        end = datetime.fromisoformat(str(params["window_end"]))
        if run.state is not None and run.state.is_completed():
            status: DayStatus = day_status(report) if report else "ok"
            note = (
                None if report else f"run {run.id}: its report could not be read (result storage)"
            )
            days.append(DayResult(window_start=start, window_end=end, status=status,
                                  report=report, error=note))  # fmt: skip
        else:
            reason = run.state.message if run.state else "no state"
            days.append(DayResult(window_start=start, window_end=end, status="failed",
                                  error=f"run {run.id}: {reason}"))  # fmt: skip
    return days


def run_days(
    windows: list[tuple[datetime, datetime]], params: dict[str, Any], workers: int
) -> list[DayResult]:
    """Each day as a subflow of this run, ``workers`` at a time; results in the days' order."""
    logger = get_run_logger()
    results: dict[datetime, DayResult] = {}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="backfill-day") as pool:
        futures: dict[Future[DayResult], datetime] = {}
        for start, end in windows:
            # each thread runs the subflow in its own copy of this run's context, so Prefect
            # links the child flow run to this one
            ctx = contextvars.copy_context()
            futures[pool.submit(ctx.run, run_day, start, end, params)] = start
        try:
            for fut in as_completed(futures):
                day = fut.result()
                results[futures[fut]] = day
                r = day.report
                logger.info(
                    "day %s: %s%s",
                    day.day,
                    day.status.replace("_", " "),
                    f" (fetched {r.fetched}, scored {r.uploaded}, already {r.already_scored})"
                    if r
                    else f": {day.error}",
                )
        except BaseException as err:  # a cancel: the days (threads) stop as Ctrl-C stops them
            STOP.request(f"stopped by {type(err).__name__}")
            raise
    return [results[s] for s, _ in windows]


def write_summary(summary: BackfillSummary, stream: Stream) -> Links:
    """The summary artifact, and a lowest-trust table over all the days (a view: a failure
    here is a warning); the links to them, for the range's alert."""
    logger = get_run_logger()
    span = f"{summary.start_date} → {summary.end_date}"
    dry = "-dry-run" if summary.dry_run else ""
    links: Links = {"table_url": None, "summary_url": None}
    try:
        links["table_url"] = table_artifact(
            summary.lowest(load_tuning().lowest_n),
            stream.artifact_key(f"trust-backfill-lowest{dry}"),
            f"({span})",
        )
        made = create_markdown_artifact(
            markdown=summary_markdown(summary, links["table_url"]),
            key=stream.artifact_key(f"{SUMMARY_KEY}{dry}"),
            description=f"Trust backfill {span}",
        )
        links["summary_url"] = artifact_url(made if isinstance(made, UUID) else None)
    except Exception as err:
        logger.warning("could not write the backfill summary artifact: %s", describe(err))
    return links


def alert_once(summary: BackfillSummary, stream: Stream, share: float | None, links: Links) -> None:
    """One low-trust alert for the range, naming each day over the share (a view: a failure
    here is a warning)."""
    payload = range_alert(summary, share, links) if share is not None else None
    if payload is None or summary.dry_run:
        return
    try:
        emit_range_alert(payload, stream)
    except Exception as err:
        get_run_logger().warning("could not emit the range's alert: %s", describe(err))


@flow(name="evaluate-traces-backfill", flow_run_name=_run_name, log_prints=True)
@fails_in_one_line
def backfill(
    start_date: date,
    end_date: date,
    tags: list[str],
    options: EvalOptions = EvalOptions(),  # noqa: B008 (immutable)
    max_concurrency: Annotated[int, Field(ge=1, le=64)] = 4,
    days_on: Literal["auto", "workers", "this-process"] = "auto",
    day_deployment: str = "evaluate-traces/window",
) -> BackfillSummary:
    """Evaluate every whole UTC day from ``start_date`` to ``end_date`` (both included), one
    window run per day, and write one summary for the range.

    Args:
        start_date: The first UTC day to evaluate.
        end_date: The last UTC day to evaluate (included); it must be over.
        tags: The tag(s) the traces to evaluate carry (any of them).
        options: What is scored and how, for every day (``max_traces`` applies per day;
            ``max_cost`` is the total of all days, which then run one at a time).
        max_concurrency: How many days run at a time.
        days_on: "workers": each day is a run of day_deployment, picked up by any worker of
            its pool, and a backfill started again re-attaches to the days it created;
            "this-process": each day is a subflow of this run; "auto": workers when this
            backfill runs from a deployment, else this process.
        day_deployment: The deployment that runs one day (days_on="workers").
    """
    logger = get_run_logger()
    # --- refuse bad configuration before any day starts ---
    opts = options_from(options)
    tags = validate_tags(tags)
    if max_concurrency < 1:
        raise ConfigError(f"max_concurrency must be at least 1, got {max_concurrency}")
    settings = Settings.load(opts)
    windows = day_range(start_date, end_date)
    on_workers = days_on == "workers" or (days_on == "auto" and deployed())
    if on_workers:
        check_day_deployment(day_deployment)
    lf = Access(settings.langfuse, settings.tuning)
    _, stream = open_stream(lf, tags, opts.score_name, logger)
    # the days send no alert of their own: the backfill sends one for the range (alert_once)
    day_opts = opts.model_copy(update={"alert_low_trust_share": None})
    params: dict[str, Any] = {"tags": tags, "options": day_opts}
    workers = min(max_concurrency, len(windows))
    if opts.max_cost is not None and not opts.dry_run:
        workers = 1  # the days share the total: one at a time (flows/backfill_budget.py)
    logger.info(
        "backfill %s → %s: %d day(s), %d at a time", start_date, end_date, len(windows), workers
    )

    def days_of(ws: list[tuple[datetime, datetime]], p: dict[str, Any]) -> list[DayResult]:
        if not on_workers:
            return run_days(ws, p, workers)
        needs = left_to_do(Access(settings.langfuse, settings.tuning), opts)
        silence = heartbeat_silence_s(settings.tuning)
        return days_of_runs(
            run_days_on_workers(day_deployment, ws, p, workers, stream, needs, silence)
        )

    with stop_on_signals():  # no new day once stopped
        if opts.max_cost is not None and not opts.dry_run:
            days = days_within_budget(windows, params, opts.max_cost, days_of)
        else:
            days = days_of(windows, params)
    summary = BackfillSummary(
        start_date=start_date,
        end_date=end_date,
        tags=tags,
        score_name=opts.score_name,
        dry_run=opts.dry_run,
        max_concurrency=workers,
        days=days,
        flow_run_id=str(flow_run.id) if flow_run.id else None,
    )
    links = write_summary(summary, stream) | {"langfuse_traces_url": traces_url(lf, stream)}
    alert_once(summary, stream, opts.alert_low_trust_share, links)
    if not opts.dry_run:  # the backfilled days' rows in the trend, and their drift verdicts
        refresh_loop(lf, stream, opts)
    return raise_if_failed(summary)


def refresh_loop(lf: Access, stream: Stream, opts: EvalOptions) -> None:
    """The trend up to yesterday (a view: its failure is a warning)."""
    yesterday = previous_day(datetime.now(UTC))[0].date()
    try:
        close_the_loop(lf, stream, opts, yesterday, verdicts=False)
    except Exception as err:
        get_run_logger().warning("refreshing the trust trend failed: %s", describe(err))


def raise_if_failed(summary: BackfillSummary) -> BackfillSummary:
    failed = summary.failed_days
    if failed:
        raise BackfillFailed(
            f"{len(failed)} of {len(summary.days)} day(s) failed: "
            + ", ".join(str(d.day) for d in failed),
            summary,
        )
    return summary
