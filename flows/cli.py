"""Ad-hoc runs from a terminal: ``python -m flows.cli window|backfill|report|verdicts ...``.

    python -m flows.cli window --since 24h --tag TLM_eval_pipeline
    python -m flows.cli window --start 2026-11-27T00:00Z --end 2026-11-28T00:00Z --tag X
    python -m flows.cli backfill --start-date 2026-11-01 --end-date 2026-11-07 --tag X
    python -m flows.cli report --since 7d --tag X
    python -m flows.cli verdicts --tag X --review-score trust_verdict  # reviewers, the trend

Everything that needs no call is checked first (one line on stderr, exit 2). Then Langfuse is
asked (its version, the keys' project) while the Prefect server starts: PREFECT_API_URL's, the
one of ``make prefect`` when it answers, or an embedded one (flows/prefect_server.py). A run
that may send more than TRUST_EVAL_CONFIRM_ITEMS items to TLM asks first (``--yes`` does not).

Ctrl-C or SIGTERM: the run stops sending, lands what TLM answered, releases its lock, prints
what landed and exits 130; a second one stops at once.

Exit codes: 0 everything landed; 1 a run failed or some traces failed to score or upload;
2 bad configuration or arguments (one line on stderr, nothing called); 130 stopped.
"""

from __future__ import annotations

import os

# Offline by default, as `make` runs it: no telemetry from Prefect's SDK or from the server
# it starts, unless the user set these. Before anything imports Prefect.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from flows.cli_args import build_parser, options_of, parse_duration
from flows.cli_output import print_backfill, print_range, print_report
from flows.cli_session import Declined, Session, signals_ignored, sigterm_as_ctrl_c
from flows.options import EvalOptions, validate_tags
from tasks.config import (
    LangfuseSettings,
    Tuning,
    check_preset,
    load_langfuse,
    load_tlm,
    load_tuning,
)
from tasks.errors import ConfigError, TrustEvalError
from tasks.spend import check_budget
from tasks.windows import (
    aware,
    check_span,
    midnight,
    resolve_window,
    settle_wait_s,
)

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_STOPPED = 0, 1, 2, 130
MAX_CONCURRENCY = 64  # the backfill flow's own bound
__all__ = ["main", "parse_duration"]


def checked(tags: list[str], opts: EvalOptions) -> tuple[Tuning, LangfuseSettings]:
    """The flows' own configuration checks that need no call (a clean one-line error)."""
    validate_tags(tags)
    tuning, langfuse = load_tuning(), load_langfuse()
    check_budget(opts.max_cost, tuning.price_per_1k_tokens)
    if not opts.dry_run:
        check_preset(opts.quality_preset, opts.explain == "all")
        load_tlm()
    return tuning, langfuse


def cli_window(args: argparse.Namespace, tuning: Tuning) -> tuple[datetime, datetime]:
    """The window the arguments name; the default end keeps the settle lag (no waiting)."""
    now = datetime.now(UTC)
    if args.since is not None and args.end is not None:
        raise ConfigError("give --since or --start/--end, not --since with --end")
    end = args.end if args.end is not None else now - timedelta(seconds=tuning.settle_lag_s)
    start = now - args.since if args.since is not None else args.start
    start, end = aware(start, "--start"), aware(end, "--end")
    start, end = resolve_window(start, end, scheduled=now)
    check_span(start, end)
    settle_wait_s(end, tuning.settle_lag_s, now)  # refuses a future end, as a run does
    return start, end


def run_window(args: argparse.Namespace, s: Session) -> int:
    opts = options_of(args)
    tuning, langfuse = checked(args.tags, opts)
    start, end = cli_window(args, tuning)
    s.warn_span(start, end)
    s.start_prefect(tuning)
    access = s.reach_langfuse(langfuse, tuning, args.tags, opts.score_name)
    s.confirm(args, access, start, end, args.tags, opts)
    s.ready()
    from flows.evaluate_traces import EvaluationFailed, Interrupted, evaluate_traces

    span = f"{start.isoformat(timespec='seconds')} → {end.isoformat(timespec='seconds')}"
    s.say(f"Evaluating {span} [{', '.join(args.tags)}]")
    try:
        report = evaluate_traces(tags=args.tags, window_start=start, window_end=end, options=opts)
    except Interrupted as err:
        print_report(err.report, args.show, failed=str(err), stopped=True)
        return EXIT_STOPPED
    except EvaluationFailed as err:
        print_report(err.report, args.show, failed=str(err))
        return EXIT_FAILED
    print_report(report, args.show)
    return EXIT_OK if report.ok else EXIT_FAILED


def run_backfill(args: argparse.Namespace, s: Session) -> int:
    opts = options_of(args)
    tuning, langfuse = checked(args.tags, opts)
    if not 1 <= args.max_concurrency <= MAX_CONCURRENCY:
        raise ConfigError(
            f"--max-concurrency must be 1 to {MAX_CONCURRENCY}, got {args.max_concurrency}"
        )
    today = datetime.now(UTC).date()
    if args.end_date >= today:
        raise ConfigError(
            f"--end-date {args.end_date} is not over yet (UTC): a backfill covers whole past "
            f"days, up to {today - timedelta(days=1)}; use `window` for today so far"
        )
    if args.end_date < args.start_date:
        raise ConfigError(
            f"--end-date ({args.end_date}) must not be before --start-date ({args.start_date})"
        )
    start, end = midnight(args.start_date), midnight(args.end_date + timedelta(days=1))
    check_span(start, end, "the backfill")
    s.warn_span(start, end)
    s.start_prefect(tuning)
    access = s.reach_langfuse(langfuse, tuning, args.tags, opts.score_name)
    s.confirm(args, access, start, end, args.tags, opts, days=(end - start).days)
    s.ready()
    from flows.backfill import BackfillFailed, backfill
    from flows.stopping import STOP

    s.say(f"Backfilling {(end - start).days} day(s), {args.start_date} → {args.end_date} (UTC)")
    failed: str | None = None
    try:
        summary = backfill(
            start_date=args.start_date, end_date=args.end_date, tags=args.tags, options=opts,
            max_concurrency=args.max_concurrency,
        )  # fmt: skip
    except BackfillFailed as err:
        summary, failed = err.summary, str(err)
    print_backfill(summary, args.show, failed, STOP.why)
    if STOP.why:
        return EXIT_STOPPED
    return EXIT_OK if summary.ok else EXIT_FAILED


def run_report(args: argparse.Namespace, s: Session) -> int:
    tags = validate_tags(args.tags)
    tuning, langfuse = load_tuning(), load_langfuse()
    if not 0 <= args.below <= 1 or not 1 <= args.limit <= 1000:
        raise ConfigError("--below must be 0 to 1 and --limit 1 to 1000")
    now = datetime.now(UTC)
    start = now - args.since if args.since is not None else aware(args.start, "--start")
    end = aware(args.end, "--end") if args.end is not None else now
    if end <= start:
        raise ConfigError(f"--end ({end.isoformat()}) must be after {start.isoformat()}")
    check_span(start, end, "the range")
    s.start_prefect(tuning)
    s.reach_langfuse(langfuse, tuning, tags, args.score_name)
    s.ready()
    from flows.report_range import report_range

    report = report_range(
        tags=tags, window_start=start, window_end=end, score_name=args.score_name,
        below=args.below, limit=args.limit,
    )  # fmt: skip
    print_range(report)
    return EXIT_OK


def run_verdicts(args: argparse.Namespace, s: Session) -> int:
    opts = options_of(args)
    tags = validate_tags(args.tags)
    if not opts.review_score:
        raise ConfigError("--review-score is needed: the annotation score reviewers set")
    tuning, langfuse = load_tuning(), load_langfuse()
    s.start_prefect(tuning)
    s.reach_langfuse(langfuse, tuning, tags, opts.score_name)
    s.ready()
    from flows.review_loop import print_loop, review_loop

    try:
        result = review_loop(tags=tags, options=opts)
    except ConfigError:
        raise
    except TrustEvalError as err:
        print(f"\nFAILED: {err}")
        return EXIT_FAILED
    print_loop(result)
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace, Session], int]] = {
    "window": run_window,
    "backfill": run_backfill,
    "report": run_report,
    "verdicts": run_verdicts,
}


def main(argv: Sequence[str] | None = None) -> int:
    session = Session()
    with sigterm_as_ctrl_c():
        try:
            args = build_parser().parse_args(argv)
            return COMMANDS[args.command](args, session)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            return EXIT_CONFIG
        except Declined as err:
            print(f"Stopped: {err}.", file=sys.stderr)
            return EXIT_FAILED
        except TrustEvalError as err:  # the embedded server did not start
            print(f"error: {err}", file=sys.stderr)
            return EXIT_FAILED
        except KeyboardInterrupt:  # before a run started, or a second Ctrl-C: at once
            print("\nstopped", file=sys.stderr)
            return EXIT_STOPPED
        finally:
            if session.prefect is not None:
                with signals_ignored():
                    session.prefect.close()


if __name__ == "__main__":
    sys.exit(main())
