"""Ad-hoc runs without a server: ``python -m flows.cli window|backfill ...``.

    python -m flows.cli window --since 24h --tag TLM_eval_pipeline
    python -m flows.cli window --start 2026-11-27T00:00Z --end 2026-11-28T00:00Z --tag X
    python -m flows.cli backfill --start-date 2026-11-01 --end-date 2026-11-07 --tag X
    python -m flows.cli verdicts --tag X    # reviewers' verdicts read back; the trust trend

The flows run on Prefect's embedded (ephemeral) server, or on the server PREFECT_API_URL points
at, so the runs, their logs and artifacts show in that server's UI. Credentials come from the
environment (LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY, LANGFUSE_BASE_URL, CLEANLAB_TLM_API_KEY).

Exit codes: 0 everything landed; 1 a run failed or some traces failed to score or upload;
2 bad configuration or arguments (one line on stderr, nothing called).
"""

from __future__ import annotations

import os

# Offline by default, as `make` runs it: no telemetry from Prefect's SDK or from the ephemeral
# server it starts, unless the user set these. Before anything imports Prefect.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

import argparse
import re
import sys
import typing
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

from flows.options import EvalOptions, options_from, validate_tags
from tasks.config import load_tuning
from tasks.errors import ConfigError
from tasks.report import EvalReport, text_table
from tasks.windows import aware, resolve_window, settle_wait_s

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """``90m``, ``24h``, ``7d``, ``1w``, ``3600s`` (or a bare number of seconds)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text.lower())
    if not m or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90m, 24h, 7d)")
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2) or "s"])


def parse_datetime(text: str) -> datetime:
    """ISO 8601 with a timezone (``Z`` accepted); a bare date means 00:00 UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date/time: {text!r}") from None
    if value.tzinfo is None and len(text.strip()) == 10:
        value = value.replace(tzinfo=UTC)
    return value


def parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flows.cli",
        description="Score Langfuse traces with Cleanlab TLM, ad hoc (no server needed).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--tag", dest="tags", action="append", required=True, help="trace tag (repeatable)"
    )
    add_option_flags(common)
    common.add_argument("--show", type=int, default=20, help="rows of the lowest-trust table")

    win = sub.add_parser("window", parents=[common], help="evaluate one time window")
    when = win.add_mutually_exclusive_group(required=True)
    when.add_argument("--since", type=parse_duration, help="from this long ago, e.g. 24h")
    when.add_argument("--start", type=parse_datetime, help="window start, ISO 8601")
    win.add_argument("--end", type=parse_datetime, help="window end (default: now - settle lag)")

    back = sub.add_parser("backfill", parents=[common], help="evaluate whole past UTC days")
    back.add_argument("--start-date", type=parse_date, required=True, help="first day, UTC")
    back.add_argument("--end-date", type=parse_date, required=True, help="last day (included)")
    back.add_argument("--max-concurrency", type=int, default=4, help="days at a time")
    sub.add_parser("verdicts", parents=[common], help="reviewers' verdicts; the trust trend")
    return parser


def add_option_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per field of EvalOptions (``--score-name``, ``--no-score-config``...), with the
    field's description as help: the CLI can set every option the flows take."""
    for name, info in EvalOptions.model_fields.items():
        flag = "--" + name.replace("_", "-")
        help_text = info.description or ""
        kind = info.annotation
        args = typing.get_args(kind)
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                                help=f"{help_text} (default: {info.default})")  # fmt: skip
        elif typing.get_origin(kind) is typing.Literal:  # checked by EvalOptions: one line
            parser.add_argument(flag, metavar="{" + ",".join(args) + "}", default=None,
                                help=f"{help_text} (default: {info.default})")  # fmt: skip
        elif list[str] in args:
            parser.add_argument(
                flag, action="append", default=None, help=f"{help_text} (repeatable)"
            )
        else:
            number = next((t for t in (int, float) if t in (kind, *args)), str)
            parser.add_argument(flag, type=number, default=None,
                                help=f"{help_text} (default: {info.default})")  # fmt: skip


def options_of(args: argparse.Namespace) -> EvalOptions:
    """The options the flags set; the rest keep their defaults."""
    given = {k: getattr(args, k) for k in EvalOptions.model_fields if getattr(args, k) is not None}
    return options_from(given)


def preflight(tags: list[str], opts: EvalOptions) -> None:
    """The flows' own configuration checks, before Prefect starts (a clean one-line error)."""
    from flows.settings import Settings

    validate_tags(tags)
    Settings.load(opts)


def cli_window(args: argparse.Namespace) -> tuple[datetime, datetime]:
    """The window the arguments name; the default end keeps the settle lag (no waiting)."""
    now = datetime.now(UTC)
    end = args.end if args.end is not None else now - timedelta(seconds=load_tuning().settle_lag_s)
    start = now - args.since if args.since is not None else args.start
    if args.since is not None and args.end is not None:
        raise ConfigError("give --since or --start/--end, not --since with --end")
    start, end = aware(start, "--start"), aware(end, "--end")
    start, end = resolve_window(start, end, scheduled=now)
    settle_wait_s(end, load_tuning().settle_lag_s, now)  # refuses a future end, as a run does
    return start, end


def counts_line(report: EvalReport, failed: bool = False) -> str:
    parts = [f"{k.replace('_', ' ')} {v}" for k, v in report.counts().items() if v]
    if not parts:
        return f"fetched {report.fetched}" + ("" if failed else ": nothing to do")
    mean = f", mean trust {report.mean_total:.3f}" if report.mean_total is not None else ""
    low = f", {report.low_total} of {report.scored_total} below {report.low_trust_threshold}"
    return f"fetched {report.fetched}: {', '.join(parts)}{mean}{low}"


def print_report(report: EvalReport, show: int, failed: str | None = None) -> None:
    start = report.window_start.strftime("%Y-%m-%d %H:%M")
    print(
        f"\nWindow {start} → {report.window_end:%Y-%m-%d %H:%M} UTC "
        f"[{', '.join(report.tags)}]: {counts_line(report, failed is not None)}"
    )
    if report.dry_run:
        chars = report.would_score_chars
        cost = report.estimated_cost_usd
        print(
            f"Dry run: {report.would_score} TLM item(s), {chars} characters (about "
            f"{chars // 4} tokens)"
            + (f", about ${cost:.2f}." if cost is not None else ".")
            + ("" if cost is not None else " Set TRUST_EVAL_PRICE_PER_1K_TOKENS for a cost.")
        )
    for title, bucket, groups in report.groups():
        for reason, ids in groups.items():
            print(f"  {title.lower()}: {len(ids)} ({report.why(bucket, reason)}), e.g. {ids[0]}")
    if show > 0 and report.lowest:
        print("\nLeast trustworthy, lowest first:\n" + text_table(report, limit=show))
    if failed:
        print(f"\nFAILED: {failed}")
    elif not report.ok:
        print("\nCompleted with failures (see above).")


def run_window(args: argparse.Namespace) -> int:
    from flows.evaluate_traces import EvaluationFailed, evaluate_traces

    opts = options_of(args)
    preflight(args.tags, opts)
    start, end = cli_window(args)
    span = f"{start.isoformat(timespec='seconds')} → {end.isoformat(timespec='seconds')}"
    print(f"Evaluating {span} [{', '.join(args.tags)}]")
    try:
        report = evaluate_traces(tags=args.tags, window_start=start, window_end=end, options=opts)
    except EvaluationFailed as err:
        print_report(err.report, args.show, failed=str(err))
        return EXIT_FAILED
    print_report(report, args.show)
    return EXIT_OK if report.ok else EXIT_FAILED


def run_backfill(args: argparse.Namespace) -> int:
    from flows.backfill import BackfillFailed, backfill, day_range
    from flows.backfill_summary import BackfillSummary, text_summary

    opts = options_of(args)
    preflight(args.tags, opts)
    if args.max_concurrency < 1:
        raise ConfigError(f"--max-concurrency must be at least 1, got {args.max_concurrency}")
    days = day_range(args.start_date, args.end_date)
    print(f"Backfilling {len(days)} day(s), {args.start_date} → {args.end_date} (UTC)")
    failed: str | None = None
    summary: BackfillSummary
    try:
        summary = backfill(
            start_date=args.start_date,
            end_date=args.end_date,
            tags=args.tags,
            options=opts,
            max_concurrency=args.max_concurrency,
        )
    except BackfillFailed as err:
        summary, failed = err.summary, str(err)
    print("\n" + text_summary(summary))
    rows = summary.lowest(args.show)
    if args.show > 0 and rows:
        merged = EvalReport(
            window_start=days[0][0],
            window_end=days[-1][1],
            tags=summary.tags,
            score_name=summary.score_name,
            lowest=rows[: args.show],
        )
        print("\nLeast trustworthy over the range, lowest first:\n" + text_table(merged, args.show))
    if failed:
        print(f"\nFAILED: {failed}")
    elif not summary.ok:
        print("\nCompleted with failures (see above).")
    return EXIT_OK if summary.ok else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "window":
            return run_window(args)
        if args.command == "verdicts":
            from flows.review_loop import run_verdicts

            return run_verdicts(args, options_of(args))
        return run_backfill(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
