"""What the CLI prints: a window's report, a backfill's summary, a range report. Pure
functions of the reports (no Prefect import: the CLI prints before Prefect starts)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tasks.report import EvalReport, LowTrustRow, stage_lines, text_table

if TYPE_CHECKING:
    from flows.backfill_summary import BackfillSummary
    from flows.report_range import RangeReport

AGAIN = "run the same command again to finish: what landed is not paid for again"


def counts_line(report: EvalReport, failed: bool = False) -> str:
    parts = [f"{k.replace('_', ' ')} {v}" for k, v in report.counts().items() if v]
    if not parts:
        quiet = failed or report.warnings
        return f"fetched {report.fetched}" + ("" if quiet else ": nothing to do")
    mean = f", mean trust {report.mean_total:.3f}" if report.mean_total is not None else ""
    low = f", {report.low_total} of {report.scored_total} below {report.low_trust_threshold}"
    return f"fetched {report.fetched}: {', '.join(parts)}{mean}{low}"


def print_report(
    report: EvalReport, show: int, failed: str | None = None, stopped: bool = False
) -> None:
    start = report.window_start.strftime("%Y-%m-%d %H:%M")
    print(
        f"\nWindow {start} → {report.window_end:%Y-%m-%d %H:%M} UTC "
        f"[{', '.join(report.tags)}]: {counts_line(report, failed is not None)}"
    )
    if report.dry_run:
        chars, cost = report.would_score_chars, report.estimated_cost_usd
        print(
            f"Dry run: {report.would_score} TLM item(s), {chars} characters (about "
            f"{report.estimated_tokens} TLM tokens at this preset, "
            "TRUST_EVAL_PRESET_COST_MULTIPLIERS)"
            + (f", about ${cost:.2f}." if cost is not None else ".")
            + ("" if cost is not None else " Set TRUST_EVAL_PRICE_PER_1K_TOKENS for a cost.")
        )
    for line in stage_lines(report):
        print(line)
    for title, bucket, groups in report.groups():
        for reason, ids in groups.items():
            print(f"  {title.lower()}: {len(ids)} ({report.why(bucket, reason)}), e.g. {ids[0]}")
    for warning in report.warnings:
        print(f"  warning: {warning}")
    if show > 0 and report.lowest:
        print("\nLeast trustworthy, lowest first:\n" + text_table(report, limit=show))
    if stopped:
        print(f"\nSTOPPED ({failed}): the report above is what landed; {AGAIN}.")
    elif failed:
        print(f"\nFAILED: {failed}")
    elif not report.ok:
        print("\nCompleted with failures (see above).")


def print_backfill(
    summary: BackfillSummary, show: int, failed: str | None, stopped: str | None
) -> None:
    from flows.backfill_summary import text_summary

    print("\n" + text_summary(summary))
    rows = summary.lowest(show)
    if show > 0 and rows:
        first, last = summary.days[0], summary.days[-1]
        merged = EvalReport(
            window_start=first.window_start,
            window_end=last.window_end,
            tags=summary.tags,
            score_name=summary.score_name,
            lowest=rows[:show],
        )
        print("\nLeast trustworthy over the range, lowest first:\n" + text_table(merged, show))
    if stopped:
        print(f"\nSTOPPED ({stopped}): the days above show what landed; {AGAIN}.")
    elif failed:
        print(f"\nFAILED: {failed}")
    elif not summary.ok:
        print("\nCompleted with failures (see above).")


def explained_table(rows: list[LowTrustRow]) -> str:
    """The lowest rows with their explanations, for a terminal."""
    out = []
    for i, r in enumerate(rows, 1):
        out.append(f"{i:>3}  {r.score:.3f}  {r.trace_id}  {r.url or ''}".rstrip())
        for label, text in (("Q", r.question), ("A", r.answer), ("why", r.explanation)):
            if text:
                out.append(f"       {label}: {' '.join(text.split())[:300]}")
    return "\n".join(out)


def print_range(report: RangeReport) -> None:
    r = report
    print(
        f"\nScores {r.score_name!r} {r.start:%Y-%m-%d %H:%M} → {r.end:%Y-%m-%d %H:%M} UTC "
        f"[{', '.join(r.tags)}]: {r.scored} scored of {r.tagged_traces} tagged traces, "
        f"{r.below_count} below {r.below} ({r.langfuse_requests} Langfuse requests, no TLM)"
    )
    if r.days:
        print(f"\n{'day (UTC)':<12}{'scored':>8}{'mean':>8}{'below':>8}")
        for d in r.days:
            mean = "–" if d.mean is None else f"{d.mean:.3f}"
            print(f"{d.day:<12}{d.scored:>8}{mean:>8}{d.below:>8}")
    for warning in r.warnings:
        print(f"  warning: {warning}")
    if r.lowest:
        print("\nLeast trustworthy, lowest first:\n" + explained_table(r.lowest))
