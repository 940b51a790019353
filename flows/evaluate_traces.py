"""The window flow: fetch a window's tagged traces, score them with TLM, write the scores back.

Chunk by chunk (one page of up to 1000 traces): fetch → pair → score → upload, then publish the
report. Re-running a window is safe (scores upsert by deterministic id) and cheap (units already
scored, or recorded as written, skip TLM). Design: docs/DESIGN.md and docs/RELIABILITY.md.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from datetime import UTC, datetime

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows.options import Options, validate_options
from flows.publish import publish
from flows.window_lock import window_lock
from flows.window_run import Settings, WindowRun
from tasks.config import ConfigError
from tasks.models import Window
from tasks.report import EvalReport
from tasks.windows import resolve_window


class EvaluationFailed(RuntimeError):
    """A stage failed as a whole. ``report`` holds what did and did not land."""

    def __init__(self, message: str, report: EvalReport) -> None:
        super().__init__(message)
        self.report = report


def scheduled_time() -> datetime:
    """The flow run's scheduled start (a re-run or late run keeps its window), else now."""
    value: object = flow_run.scheduled_start_time
    if value is None:
        return datetime.now(UTC)
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromisoformat(str(value)).astimezone(UTC)


def wait_to_settle(end: datetime, lag_s: float) -> None:
    """Traces still running at the window's end settle for ``lag_s`` before we read them."""
    wait = (end - datetime.now(UTC)).total_seconds() + lag_s
    if wait <= 0:
        return
    if wait > lag_s + 1:
        raise ConfigError(f"window_end {end.isoformat()} is in the future")
    get_run_logger().info(
        "window ended %.0f s ago; waiting %.0f s for its traces to settle", lag_s - wait, wait
    )
    time.sleep(wait)


def _run_name() -> str:
    params = flow_run.parameters or {}
    tags = ",".join(params.get("tags") or [])
    start = params.get("window_start")
    label = str(start)[:16] if start else f"day before {scheduled_time():%Y-%m-%d}"
    return f"trust {label} [{tags}]{' dry-run' if params.get('dry_run') else ''}"


@flow(name="evaluate-traces", flow_run_name=_run_name, log_prints=True)
def evaluate_traces(
    window_start: datetime | None = None,
    window_end: datetime | None = None,
    tags: list[str] | None = None,
    score_name: str = "trust_score",
    quality_preset: str = "medium",
    rescore: bool = False,
    max_traces: int | None = None,
    sample_rate: float = 1.0,
    dry_run: bool = False,
    environment: list[str] | None = None,
    low_trust_threshold: float = 0.5,
    scope: str = "trace",
    score_config: bool = True,
    label_score: bool = False,
    untrustworthy_below: float = 0.3,
    review_queue: str | None = None,
    review_lowest_n: int | None = None,
    alert_low_trust_share: float | None = 0.2,
) -> EvalReport:
    """Score the traces tagged ``tags`` that started in [window_start, window_end).

    Default window: the whole UTC day before the run's scheduled time. ``rescore`` re-scores
    traces that already carry ``score_name``; ``max_traces`` and ``sample_rate`` cap TLM spend;
    ``dry_run`` fetches and pairs, and reports what would be scored, without calling TLM.
    ``scope="generation"`` scores each GENERATION observation instead of the trace.
    ``score_config`` attaches the scores to a numeric Langfuse score config (made on first use);
    ``label_score`` adds a categorical ``<score_name>_label`` (trustworthy / review /
    untrustworthy, split at ``low_trust_threshold`` and ``untrustworthy_below``).
    ``review_queue`` names an annotation queue that receives the traces below
    ``low_trust_threshold`` (at most ``review_lowest_n`` of them, lowest first), once.
    A Prefect event reports every run; another fires when the low-trust share of the scored
    traces passes ``alert_low_trust_share``.
    """
    opts = Options(
        score_name, quality_preset, rescore, max_traces, sample_rate, dry_run, environment,
        low_trust_threshold, scope, score_config, label_score, untrustworthy_below,
        review_queue, review_lowest_n, alert_low_trust_share,
    )  # fmt: skip
    tags = validate_options(tags, opts)
    settings = Settings.load(opts)  # a bad setting is refused before any call
    start, end = resolve_window(window_start, window_end, scheduled=scheduled_time())
    wait_to_settle(end, settings.tuning.settle_lag_s)
    run = WindowRun(Window(start, end, tuple(tags)), settings, opts)
    # one run per window at a time: a second run waits, then finds the units scored
    with nullcontext() if dry_run else window_lock(start, end, tags, score_name):
        try:
            run.prepare()  # the write path, the score configs, what is already scored
            with run.scoring() as tlm:  # one TLM client; every chunk sent to it lands
                for no, page in enumerate(run.pages(), start=1):  # fetch
                    chunk, pairs = run.pair(run.select(page), no)  # pair what is new
                    tlm.submit(chunk, pairs)  # score; chunks TLM has finished upload
                    if run.report.capped:
                        break
            run.review()
        except Exception as err:
            run.failed(err)
        finally:
            report = run.finish()
            publish(report, run.progress, alert_low_trust_share, get_run_logger())
    if report.errors:
        raise EvaluationFailed("; ".join(report.errors), report)
    return report
