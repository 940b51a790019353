"""What a backfill (or a daily run with its catch-up days) did, day by day: the summary model
and its two renderings, a markdown artifact and a terminal table."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from flows.publish import run_url
from tasks.report import EvalReport, LowTrustRow, md_escape, md_link

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


def day_share(report: EvalReport | None) -> float | None:
    """The low-trust share of what the day's run scored (None: it scored nothing), as a window
    run's own alert computes it."""
    if report is None or not report.uploaded:
        return None
    return report.low_trust_count / report.uploaded


def range_alert(
    summary: BackfillSummary, share: float, links: dict[str, str | None]
) -> dict[str, Any] | None:
    """The payload of the one low-trust alert of a range: the days whose low-trust share passed
    ``share``, each with its run's link, plus ``links`` (table, summary, traces). None: no day
    passed it."""
    over = [
        (d, s)
        for d in summary.days
        if d.report is not None and (s := day_share(d.report)) is not None and s > share
    ]
    if not over:
        return None
    return {
        "start_date": summary.start_date.isoformat(),
        "end_date": summary.end_date.isoformat(),
        "tags": summary.tags,
        "score_name": summary.score_name,
        "alert_low_trust_share": share,
        "days_in_range": len(summary.days),
        "days": [
            {
                "day": d.day.isoformat(),
                "low_trust_share": round(s, 4),
                "low_trust_count": d.report.low_trust_count,
                "uploaded": d.report.uploaded,
                "mean_score": d.report.mean_score,
                "run_url": run_url(d.report.flow_run_id),
            }
            for d, s in over
            if d.report is not None
        ],
        "run_url": run_url(summary.flow_run_id),
        **links,
    }


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
