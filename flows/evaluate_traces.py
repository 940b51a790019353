"""The window flow: fetch a window's tagged traces, score them with TLM, write the scores back.

Chunk by chunk (one page of up to 1000 traces): fetch → pair → score → upload, then publish the
report. Re-running a window is safe (scores upsert by deterministic id) and cheap (units already
scored, or recorded as written, skip TLM). Design: docs/DESIGN.md and docs/RELIABILITY.md.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows.evaluated_days import record_window
from flows.options import EvalOptions, options_from, validate_tags
from flows.publish import publish
from flows.settings import Settings
from flows.stopping import STOP, stop_on_signals
from flows.window_run import WindowRun
from tasks.clock import SYSTEM, Clock, utcnow
from tasks.errors import RunFailed, StageError, fails_in_one_line
from tasks.hints import no_match_hint, tags_seen
from tasks.langfuse_api import Calls
from tasks.models import Window
from tasks.report import EvalReport
from tasks.retry import describe
from tasks.windows import resolve_window, settle_wait_s


class EvaluationFailed(RunFailed):
    """A stage failed as a whole. ``report`` holds what did and did not land."""

    def __init__(self, message: str, report: EvalReport) -> None:
        super().__init__(message)
        self.report = report


class Interrupted(EvaluationFailed):
    """Ctrl-C: the run stopped sending, and what TLM had answered landed (``report``)."""


def scheduled_time() -> datetime:
    """The flow run's scheduled start (a re-run or late run keeps its window), else now."""
    value: object = flow_run.scheduled_start_time
    if value is None:
        return datetime.now(UTC)
    if isinstance(value, datetime):  # a pendulum DateTime: as a standard one
        return datetime.fromtimestamp(value.timestamp(), tz=UTC)
    return datetime.fromisoformat(str(value)).astimezone(UTC)


def wait_to_settle(end: datetime, lag_s: float, clock: Clock = SYSTEM) -> None:
    """Traces still running at the window's end settle for ``lag_s`` before we read them."""
    wait = settle_wait_s(end, lag_s, utcnow(clock))
    if wait > 0:
        get_run_logger().info("waiting %.0f s for the window's last traces to settle", wait)
        clock.sleep(wait)


def _run_name() -> str:
    params = flow_run.parameters or {}
    tags = ",".join(params.get("tags") or [])
    start = params.get("window_start")
    label = str(start)[:16] if start else f"day before {scheduled_time():%Y-%m-%d}"
    options = params.get("options")
    dry = options.dry_run if isinstance(options, EvalOptions) else (options or {}).get("dry_run")
    return f"trust {label} [{tags}]{' dry-run' if dry else ''}"


@flow(
    name="evaluate-traces",
    flow_run_name=_run_name,
    log_prints=True,
    persist_result=True,  # a backfill reads each day's report back
    result_serializer="json",
)
@fails_in_one_line
def evaluate_traces(
    tags: list[str],
    window_start: datetime | None = None,
    window_end: datetime | None = None,
    options: EvalOptions = EvalOptions(),  # noqa: B008 (immutable)
) -> EvalReport:
    """Score the traces tagged ``tags`` that started in [window_start, window_end) with TLM and
    write each score (its explanation as the comment) back to the trace in Langfuse.

    Args:
        tags: The tag(s) the traces to evaluate carry (any of them).
        window_start: Start of the window, included. Default: the whole UTC day before the
            run's scheduled time.
        window_end: End of the window, excluded. It must have passed: a window that ended less
            than the settle lag ago waits for its traces to settle.
        options: What is scored and how: score name, TLM preset, cost caps, review and alerts.
    """
    opts = options_from(options)
    tags = validate_tags(tags)
    settings = Settings.load(opts)  # a bad setting is refused before any call
    start, end = resolve_window(window_start, window_end, scheduled=scheduled_time())
    settle_wait_s(end, settings.tuning.settle_lag_s, utcnow())  # refuses a future end
    run = WindowRun(Window(start, end, tuple(tags)), settings, opts)
    # Ctrl-C or SIGTERM: stop sending, land what TLM answered, release, report (flows/stopping);
    # a deployment run keeps Prefect's SIGTERM handler (its worker cancels it with SIGTERM)
    with stop_on_signals():
        report = run_window(run)
    if report.errors:
        raise (Interrupted if STOP.why else EvaluationFailed)("; ".join(report.errors), report)
    if run.stream is not None:  # the day's record: complete (the catch-up skips it), figures
        record_window(run.stream, start, end, report, opts, run.run_id, get_run_logger())
    return report


def tag_hint(calls: Calls, window: Window, environment: list[str] | None) -> str:
    """The warning of a window whose tags matched no trace (never a failure of its own)."""
    try:
        seen, traces = tags_seen(calls, window, environment)
    except Exception as err:
        return (
            f"no trace carries the tag(s) {', '.join(window.tags)} (listing the window's "
            f"tags failed: {describe(err)})"
        )
    return no_match_hint(window.tags, seen, traces)


def run_window(run: WindowRun) -> EvalReport:
    """The stages, in order; whatever stops them, the report of what landed."""
    try:
        with STOP.listening(run.stop):
            run.connect()  # Langfuse's version, the keys' project: a bad key fails here
            wait_to_settle(run.window.end, run.tuning.settle_lag_s)
            # one run per window at a time: a second run waits, then finds the units scored
            with run.locked():
                run.prepare()  # the score configs, what is already scored
                with run.scoring() as tlm:  # one TLM client; every chunk sent to it lands
                    for no, page in enumerate(run.pages(), start=1):  # fetch
                        chunk, pairs = run.pair(run.select(page), no, tlm)  # pair what is new
                        tlm.submit(chunk, pairs)  # score; chunks TLM has finished upload
                        if run.report.capped:
                            break
                if run.report.fetched == 0:  # a mistyped tag? say which tags the window has
                    run.warn(tag_hint(run.lf.calls(run.logger), run.window, run.opts.environment))
                run.review()
    except Exception as err:
        run.failed(err)
    except BaseException as err:  # a cancel, a second Ctrl-C: what TLM answered has landed
        run.failed(StageError(f"stopped by {type(err).__name__}: nothing more was sent"))
        raise
    finally:
        report = run.finish()
        if run.stream is not None:
            publish(report, run.stream, run.progress, run.opts.alert_low_trust_share, run.logger)
    return report
