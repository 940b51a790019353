"""The backfill flow: evaluate a range of past UTC days, one window run per day, as subflows of
this run, ``max_concurrency`` at a time; then one summary for the range. Why subflows and how a
day's failure is reported: docs/DESIGN.md, "Backfills"."""

from __future__ import annotations

import contextvars
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.client.schemas.objects import FlowRun
from prefect.runtime import deployment, flow_run
from pydantic import BaseModel, Field

from flows.day_runs import run_days_on_workers
from flows.evaluate_traces import EvaluationFailed, evaluate_traces
from flows.options import EvalOptions, options_from, validate_tags
from flows.publish import fails_in_one_line, run_url, stream_key, table_artifact
from flows.window_run import Settings
from tasks.config import ConfigError, load_tuning
from tasks.failures import RunFailed
from tasks.report import EvalReport, LowTrustRow, md_escape, md_link
from tasks.retry import describe
from tasks.windows import midnight, split_days

DayStatus = Literal["ok", "completed_with_failures", "failed"]
SUMMARY_KEY = "trust-backfill-summary"


class DayResult(BaseModel):
    """One day of the backfill: the window run's report (partial when it failed)."""

    window_start: datetime
    window_end: datetime
    status: DayStatus
    report: EvalReport | None = None
    error: str | None = None

    @property
    def day(self) -> date:
        return self.window_start.date()

    @property
    def failed_traces(self) -> int:
        if self.report is None:
            return 0
        c = self.report.counts()
        return c["failed_to_score"] + c["failed_to_upload"]


class BackfillSummary(BaseModel):
    """What a backfill did, day by day, and in total."""

    start_date: date
    end_date: date  # inclusive
    tags: list[str]
    score_name: str
    dry_run: bool = False
    max_concurrency: int = 1
    days: list[DayResult] = Field(default_factory=list)
    flow_run_id: str | None = None
    caught_up: list[date] = Field(default_factory=list)  # daily runs: missed days evaluated

    def total(self, field: str) -> int:
        """A report figure summed over the days (a field or a property of EvalReport)."""
        return sum(int(getattr(d.report, field)) for d in self.days if d.report is not None)

    @property
    def failed_days(self) -> list[DayResult]:
        return [d for d in self.days if d.status == "failed"]

    @property
    def ok(self) -> bool:
        """Every day ran and every trace of every day landed (or was rightly skipped)."""
        return all(d.status == "ok" for d in self.days)

    @property
    def mean_score(self) -> float | None:
        """Mean trust of every scored trace of the range (scored by this run or before)."""
        reports = [d.report for d in self.days if d.report is not None]
        n = sum(r.scored_total for r in reports)
        return sum(r.score_sum + r.existing_sum for r in reports) / n if n else None

    def lowest(self, n: int) -> list[LowTrustRow]:
        """The ``n`` least trustworthy traces this backfill scored, over all its days."""
        rows = [row for d in self.days if d.report is not None for row in d.report.lowest]
        return sorted(rows, key=lambda row: (row.score, row.trace_id))[:n]


class BackfillFailed(RunFailed):
    """One or more days failed; ``summary`` holds every day's (partial) report."""

    def __init__(self, message: str, summary: BackfillSummary) -> None:
        super().__init__(message)
        self.summary = summary


# --- pure helpers -------------------------------------------------------------------------


def day_range(start_date: date, end_date: date) -> list[tuple[datetime, datetime]]:
    """Whole UTC days from ``start_date`` to ``end_date``, both included."""
    if end_date < start_date:
        raise ConfigError(f"end_date ({end_date}) must not be before start_date ({start_date})")
    start, end = midnight(start_date), midnight(end_date + timedelta(days=1))
    if end > datetime.now(UTC):
        raise ConfigError(
            f"end_date {end_date} is not over yet (UTC): a backfill covers whole past days; "
            "use the window flow for today so far"
        )
    return split_days(start, end)


def day_status(report: EvalReport) -> DayStatus:
    return "ok" if report.ok else "completed_with_failures"


def _cell(value: Any) -> str:
    return "–" if value is None else str(value)


def summary_markdown(summary: BackfillSummary, table_url: str | None = None) -> str:
    """One table for the whole range: a row per day (linked to its run), then the totals. Mean
    and low trust count every scored trace of the day, those scored before this run included."""
    failed = len(summary.failed_days)
    status = "OK" if summary.ok else f"FAILED ({failed} of {len(summary.days)} days)"
    if not failed and not summary.ok:
        status = "completed with failures"
    mean = summary.mean_score
    lines = [
        f"# Trust backfill: {summary.start_date} → {summary.end_date} (UTC days, inclusive)",
        "",
        f"**Status:** {status}{' (dry run: nothing scored)' if summary.dry_run else ''}  ",
        f"**Tags:** {md_escape(', '.join(summary.tags))} · **Score:** "
        f"{md_escape(summary.score_name)} · **Days:** {len(summary.days)} · "
        f"**At a time:** {summary.max_concurrency}  ",
        *([md_link("Lowest-trust traces of the range", table_url)] if table_url else []),
        *(
            [f"**Caught up:** {', '.join(str(d) for d in summary.caught_up)} (missed days)  "]
            if summary.caught_up
            else []
        ),
        "",
        "| day | status | fetched | new | already | skipped | failed | mean | low |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for d in summary.days:
        r = d.report
        c = r.counts() if r else None
        url = run_url(r.flow_run_id if r else None)
        day = md_link(str(d.day), url) if url else str(d.day)
        lines.append(
            f"| {day} | {d.status.replace('_', ' ')} | {_cell(r and r.fetched)} "
            f"| {_cell(r and r.uploaded)} | {_cell(r and r.already_scored)} "
            f"| {_cell(c and c['skipped'])} | {_cell(d.failed_traces if r else None)} "
            f"| {f'{r.mean_total:.3f}' if r and r.mean_total is not None else '–'} "
            f"| {_cell(r and r.low_total)} |"
        )
    skipped = sum(d.report.counts()["skipped"] for d in summary.days if d.report)
    lines.append(
        f"| **total** | {len(summary.days) - failed} ran, {failed} failed "
        f"| {summary.total('fetched')} | {summary.total('uploaded')} "
        f"| {summary.total('already_scored')} | {skipped} "
        f"| {sum(d.failed_traces for d in summary.days)} "
        f"| {f'{mean:.3f}' if mean is not None else '–'} | {summary.total('low_total')} |"
    )
    lines += ["", "_new: scored by this backfill; mean and low: every scored trace of the day._"]
    errors = [d for d in summary.days if d.error]
    if errors:
        lines += ["", "## Failed days", ""]
        lines += [f"- **{d.day}**: {md_escape(d.error, 1000)}" for d in errors]
    return "\n".join(lines)


def text_summary(summary: BackfillSummary) -> str:
    """The same table for a terminal."""
    head = (
        f"{'day':<10}  {'status':<23}  {'fetched':>7}  {'scored':>6}  {'already':>7}  "
        f"{'skipped':>7}  {'failed':>6}  {'mean':>5}  {'low':>4}"
    )
    out = [head]
    for d in summary.days:
        r = d.report
        c = r.counts() if r else None
        mean = f"{r.mean_total:.3f}" if r and r.mean_total is not None else "–"
        out.append(
            f"{d.day!s:<10}  {d.status:<23}  {_cell(r and r.fetched):>7}  "
            f"{_cell(r and r.uploaded):>6}  {_cell(r and r.already_scored):>7}  "
            f"{_cell(c and c['skipped']):>7}  {_cell(d.failed_traces if r else None):>6}  "
            f"{mean:>5}  {_cell(r and r.low_total):>4}"
        )
    for d in summary.days:
        if d.error:
            out.append(f"{d.day}: {d.error}")
    return "\n".join(out)


# --- the flow -----------------------------------------------------------------------------


def _run_name() -> str:
    p = flow_run.parameters or {}
    tags = ",".join(p.get("tags") or [])
    return f"backfill {p.get('start_date')}..{p.get('end_date')} [{tags}]"


def run_day(start: datetime, end: datetime, params: dict[str, Any]) -> DayResult:
    """One day as a subflow; its failure becomes a failed DayResult, never an exception."""
    try:
        report = evaluate_traces(window_start=start, window_end=end, **params)
    except EvaluationFailed as err:
        return DayResult(
            window_start=start, window_end=end, status="failed", report=err.report, error=str(err)
        )
    except Exception as err:  # a day must not stop the others
        return DayResult(window_start=start, window_end=end, status="failed", error=describe(err))
    return DayResult(window_start=start, window_end=end, status=day_status(report), report=report)


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
    return [results[s] for s, _ in windows]


def write_summary(summary: BackfillSummary) -> None:
    """The summary artifact, and a lowest-trust table over all the days (a view: a failure
    here is a warning)."""
    logger = get_run_logger()
    span = f"{summary.start_date} → {summary.end_date}"
    try:
        table_url = table_artifact(
            summary.lowest(load_tuning().lowest_n),
            stream_key("trust-backfill-lowest", summary.tags, summary.score_name),
            f"({span})",
        )
        create_markdown_artifact(
            markdown=summary_markdown(summary, table_url),
            key=stream_key(SUMMARY_KEY, summary.tags, summary.score_name),
            description=f"Trust backfill {span}",
        )
    except Exception as err:
        logger.warning("could not write the backfill summary artifact: %s", describe(err))


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
        options: What is scored and how, for every day (``max_traces`` applies per day).
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
    Settings.load(opts)
    windows = day_range(start_date, end_date)
    params: dict[str, Any] = {"tags": tags, "options": opts}
    workers = min(max_concurrency, len(windows))
    logger.info(
        "backfill %s → %s: %d day(s), %d at a time", start_date, end_date, len(windows), workers
    )
    summary = BackfillSummary(
        start_date=start_date,
        end_date=end_date,
        tags=tags,
        score_name=opts.score_name,
        dry_run=opts.dry_run,
        max_concurrency=workers,
        days=(
            days_of_runs(run_days_on_workers(day_deployment, windows, params, workers))
            if days_on == "workers" or (days_on == "auto" and deployment.id)
            else run_days(windows, params, workers)
        ),
        flow_run_id=str(flow_run.id) if flow_run.id else None,
    )
    write_summary(summary)
    return raise_if_failed(summary)


def raise_if_failed(summary: BackfillSummary) -> BackfillSummary:
    failed = summary.failed_days
    if failed:
        raise BackfillFailed(
            f"{len(failed)} of {len(summary.days)} day(s) failed: "
            + ", ".join(str(d.day) for d in failed),
            summary,
        )
    return summary
