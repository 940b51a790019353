"""Close the review loop of a stream: is the low-trust flag right, and how does trust move?

- **Verdicts**: reviewers' ``review_score`` verdicts on the units scored in the last
  ``review_days`` days, read back (``tasks/verdicts.py``): the flag's precision, what it missed,
  a table over thresholds 0.1 to 0.9 and a suggested threshold, as the ``trust-precision``
  artifact of the stream.
- **Trend and drift**: the last ``trend_days`` days side by side and the ``trust.drift`` event
  (``flows/trend.py``).

The daily run does both after its days (verdicts when it has a review queue); the backfill
refreshes the trend; the ``review-loop`` flow (its own deployment, and ``python -m flows.cli
verdicts``) does both on demand.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from pydantic import BaseModel

from flows.evaluate_traces import scheduled_time
from flows.options import EvalOptions, options_from, validate_tags
from flows.publish import artifact_url
from flows.settings import Settings, open_stream
from flows.trend import refresh_trend
from tasks.budgets import check_limits
from tasks.clock import utcnow
from tasks.config import RunLogger, load_langfuse, load_tuning, without_credentials
from tasks.errors import ConfigError, fails_in_one_line, stage
from tasks.langfuse_api import Access
from tasks.report import md_code, md_escape
from tasks.review import check_review_config
from tasks.stream import Stream
from tasks.verdicts import (
    BAND_COVERAGE,
    MIN_VERDICTS,
    Period,
    ThresholdRow,
    Verdicts,
    read_verdicts_task,
)
from tasks.windows import previous_day

PRECISION_KEY = "trust-precision"
RULE = (
    f", with at least {BAND_COVERAGE:.0%} of the traces a higher threshold adds to the flag "
    "reviewed"
)


class LoopResult(BaseModel):
    verdicts: Verdicts | None = None
    precision_url: str | None = None
    trend_days: int = 0  # days with figures in the trend
    drift_days: list[date] = []  # days whose drift event this run sent
    trend_url: str | None = None


def loop_settings() -> Settings:
    """Langfuse's settings only: the loop never calls TLM (a bad setting: a ConfigError)."""
    tuning = check_limits(load_tuning())
    return Settings(load_langfuse(), None, tuning)


def check_review(lf: Access, opts: EvalOptions, logger: RunLogger) -> None:
    """A review score whose config cannot hold a verdict is refused before anything else."""
    if opts.review_score:
        check_review_config(lf.calls(logger), opts.review_score)


def traces_url(lf: Access, stream: Stream) -> str:
    ui = without_credentials(lf.tuning.langfuse_ui_url or lf.cfg.base_url).rstrip("/")
    return f"{ui}/project/{stream.project}/traces"


def close_the_loop(
    lf: Access, stream: Stream, opts: EvalOptions, last: date, *, verdicts: bool
) -> LoopResult:
    """Verdicts (when asked and ``review_score`` is set), then the trend up to ``last``."""
    logger = get_run_logger()
    out = LoopResult()
    if verdicts and opts.review_score:
        until = utcnow(lf.clock)
        period = Period(until - timedelta(days=opts.review_days), until)
        with stage("reading reviewers' verdicts"):
            out.verdicts = read_verdicts_task(
                lf, opts.score_name, opts.review_score, period, opts.low_trust_threshold,
                opts.review_target_precision,
            )  # fmt: skip
        made = create_markdown_artifact(
            markdown=verdicts_markdown(out.verdicts, stream),
            key=stream.artifact_key(PRECISION_KEY),
            description=f"Reviewers' verdicts on the last {opts.review_days} days' scores",
        )
        out.precision_url = artifact_url(made if isinstance(made, UUID) else None)
    with stage("publishing the trust trend"):
        trend = refresh_trend(stream, opts, last, traces_url(lf, stream), logger)
    out.trend_days, out.drift_days = trend.rows, trend.fired
    out.trend_url = trend.chart_url
    return out


# --- what it shows ------------------------------------------------------------------------------


def _ratio(n: int, d: int) -> str:
    return f"{n}/{d} = {n / d:.0%}" if d else "–"


def verdicts_lines(v: Verdicts, name: Callable[[str], str] = str) -> list[str]:
    """The figures in plain sentences (the artifact's head, and the CLI's output); ``name``
    renders the score names (escaped in markdown)."""
    lines = [
        f"Scored {v.since:%Y-%m-%d %H:%M} → {v.until:%Y-%m-%d %H:%M} UTC: {v.scored}; "
        f"reviewed ({name(v.review_score)}): {v.reviewed}"
        + (f"; {v.unreadable} verdicts neither correct nor incorrect" if v.unreadable else ""),
        f"Precision of the flag (score below {v.threshold}): "
        f"{_ratio(v.flagged_incorrect, v.flagged_reviewed)} of the flagged ones reviewed "
        "were marked incorrect",
        f"Reviewed but not flagged, marked incorrect: {v.unflagged_incorrect} of "
        f"{v.unflagged_reviewed}",
    ]
    if not v.enough:
        lines.append(
            f"Too few verdicts to conclude: {v.flagged_reviewed} flagged ones reviewed, at "
            f"least {MIN_VERDICTS} needed."
        )
    if v.suggestion is not None:
        row = next(r for r in v.table if r.threshold == v.suggestion)
        lines.append(
            f"Suggested threshold: {v.suggestion} (the highest whose precision reaches the "
            f"target {v.target:.0%} over at least {MIN_VERDICTS} verdicts: "
            f"{_ratio(row.incorrect, row.reviewed)}; it flags {row.would_flag} of {v.scored}"
            + (f", {row.added_reviewed} of the {row.added} it adds reviewed)" if row.added else ")")
        )
    else:
        lines.append(
            f"No threshold suggested: none reaches the target precision {v.target:.0%} over "
            f"at least {MIN_VERDICTS} verdicts{RULE}."
        )
    return lines


def verdicts_markdown(v: Verdicts, stream: Stream) -> str:
    lines = [f"# Is the low-trust flag right? {md_escape(stream.label)}", ""]
    lines += [line + "  " for line in verdicts_lines(v, md_code)]
    lines += [
        "",
        "| threshold | would flag | reviewed | marked incorrect | precision |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in v.table:
        mark = " ◀ now" if abs(r.threshold - v.threshold) < 1e-9 else ""
        mark += " ◀ suggested" if r.threshold == v.suggestion else ""
        p = "–" if r.precision is None else f"{r.precision:.0%}" + _caveat(r)
        lines.append(
            f"| {r.threshold}{mark} | {r.would_flag} | {r.reviewed} | {r.incorrect} | {p} |"
        )
    lines += [
        "",
        f'_Precision: the share of flagged ones reviewers marked incorrect. "(few)": under '
        f'{MIN_VERDICTS} verdicts; "(unchecked)": under {BAND_COVERAGE:.0%} of what it adds to '
        "the flag was reviewed (reviewers see the queue: add spot checks above the threshold); "
        f"neither is suggested. Langfuse requests: {v.langfuse_requests}._",
    ]
    return "\n".join(lines)


def _caveat(r: ThresholdRow) -> str:
    return " (few)" if not r.enough else " (unchecked)" if not r.covered else ""


def verdicts_text(v: Verdicts) -> str:
    out = [*verdicts_lines(v), "", "threshold  would flag  reviewed  incorrect  precision"]
    for r in v.table:
        p = "–" if r.precision is None else f"{r.precision:.0%}" + _caveat(r)
        out.append(f"{r.threshold:>9}  {r.would_flag:>10}  {r.reviewed:>8}  {r.incorrect:>9}  {p}")
    return "\n".join(out)


# --- the flow, and the CLI's command ------------------------------------------------------------


def _run_name() -> str:
    tags = ",".join((flow_run.parameters or {}).get("tags") or [])
    return f"review loop [{tags}]"


@flow(name="trust-review-loop", flow_run_name=_run_name, log_prints=True)
@fails_in_one_line
def review_loop(
    tags: list[str],
    options: EvalOptions = EvalOptions(),  # noqa: B008 (immutable)
) -> LoopResult:
    """Read reviewers' verdicts back (the flag's precision, a threshold table and a suggested
    threshold), and publish the trust trend of the stream with its drift events.

    Args:
        tags: The tag(s) of the stream (as the daily run evaluates them).
        options: The stream's options: score_name, low_trust_threshold, review_score,
            review_days, review_target_precision, trend_days, drift_points.
    """
    opts = options_from(options)
    tags = validate_tags(tags)
    if not opts.review_score:
        raise ConfigError("review_score is unset: there are no verdicts to read")
    settings = loop_settings()
    lf = Access(settings.langfuse, settings.tuning)
    logger = get_run_logger()
    _, stream = open_stream(lf, tags, opts.score_name, logger)
    check_review(lf, opts, logger)
    last = previous_day(scheduled_time())[0].date()
    return close_the_loop(lf, stream, opts, last, verdicts=True)


def print_loop(result: LoopResult) -> None:
    """What ``python -m flows.cli verdicts`` prints of a review loop."""
    if result.verdicts is not None:
        print("\n" + verdicts_text(result.verdicts))
    drift = ", ".join(map(str, result.drift_days)) or "none"
    print(f"\nTrend: {result.trend_days} day(s) with figures; drift events sent: {drift}")
    for url in (result.precision_url, result.trend_url):
        if url:
            print(url)
