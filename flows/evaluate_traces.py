"""The window flow: fetch a window's tagged traces, score them with TLM, write the scores back.

Chunk by chunk (one page of up to 1000 traces at a time): fetch -> pair -> score -> upload, so
memory stays bounded and a crash loses at most one chunk of work; re-running the window is safe
(scores upsert by deterministic id) and cheap (traces already scored are not sent to TLM).
"""

from __future__ import annotations

import hashlib
import time
from contextlib import nullcontext  # issue 4: no lock for dry runs
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.runtime import flow_run

from flows.window_lock import window_lock  # issue 4: per-window concurrency limit
from tasks.config import (
    ConfigError,
    LangfuseSettings,
    TLMSettings,
    Tuning,
    check_preset,
    load_langfuse,
    load_tlm,
    load_tuning,
)
from tasks.fetch import fetch_page_task, find_scored_task
from tasks.models import Bucket, Outcome, Window
from tasks.pairs import build_pairs_task
from tasks.report import EvalReport, Lowest, lowest_table, summary_markdown
from tasks.retry import StageError, describe
from tasks.score import score_task
from tasks.upload import upload_task
from tasks.windows import resolve_window

DEFAULT_MODEL = "gpt-4.1-mini"  # TLM's default model (we do not override it)


class EvaluationFailed(RuntimeError):
    """A stage failed as a whole. ``report`` holds what did and did not land."""

    def __init__(self, message: str, report: EvalReport) -> None:
        super().__init__(message)
        self.report = report


def project_version() -> str:
    try:
        return version("langfuse-tlm-evals")
    except PackageNotFoundError:
        return "0+unknown"


def sampled(trace_id: str, rate: float) -> bool:
    """Deterministic sampling: a trace is in or out the same way on every run."""
    if rate >= 1.0:
        return True
    digest = hashlib.sha256(trace_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def scheduled_time() -> datetime:
    """The flow run's scheduled start (a re-run or late run keeps its window), else now."""
    value: Any = flow_run.scheduled_start_time
    if value is None:
        return datetime.now(UTC)
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromisoformat(str(value)).astimezone(UTC)


def validate_params(
    tags: list[str] | None,
    score_name: str,
    sample_rate: float,
    max_traces: int | None,
    low_trust_threshold: float,
) -> list[str]:
    if not tags:
        raise ConfigError("tags is empty: give the tag(s) the traces to evaluate carry")
    bad = [t for t in tags if not isinstance(t, str) or not t.strip()]
    if bad:
        raise ConfigError(f"tags must be non-empty strings, got {bad!r}")
    if not score_name or not score_name.strip():
        raise ConfigError("score_name must not be empty")
    if not 0.0 < sample_rate <= 1.0:
        raise ConfigError(f"sample_rate must be in (0, 1], got {sample_rate}")
    if max_traces is not None and max_traces < 1:
        raise ConfigError(f"max_traces must be at least 1 (or unset), got {max_traces}")
    if not 0.0 <= low_trust_threshold <= 1.0:
        raise ConfigError(f"low_trust_threshold must be in [0, 1], got {low_trust_threshold}")
    return list(dict.fromkeys(tags))


def wait_to_settle(end: datetime, lag_s: float, logger: Any) -> None:
    """Traces still running at the window's end settle for ``lag_s`` before we read them."""
    wait = (end - datetime.now(UTC)).total_seconds() + lag_s
    if wait <= 0:
        return
    if wait > lag_s + 1:
        raise ConfigError(f"window_end {end.isoformat()} is in the future")
    logger.info(
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
) -> EvalReport:
    """Score the traces tagged ``tags`` that started in [window_start, window_end).

    Default window: the whole UTC day before the run's scheduled time. ``rescore`` re-scores
    traces that already carry ``score_name``; ``max_traces`` and ``sample_rate`` cap TLM spend;
    ``dry_run`` fetches and pairs, and reports what would be scored, without calling TLM.
    """
    logger = get_run_logger()
    # --- refuse bad configuration before any call ---
    tags = validate_params(tags, score_name, sample_rate, max_traces, low_trust_threshold)
    tuning = load_tuning()
    lf_cfg = load_langfuse()
    tlm_cfg: TLMSettings | None = None
    if not dry_run:
        check_preset(quality_preset)
        tlm_cfg = load_tlm()
    start, end = resolve_window(window_start, window_end, scheduled=scheduled_time())
    window = Window(start, end, tuple(tags))
    wait_to_settle(end, tuning.settle_lag_s, logger)

    report = EvalReport(
        window_start=start,
        window_end=end,
        tags=tags,
        score_name=score_name,
        dry_run=dry_run,
        low_trust_threshold=low_trust_threshold,
        flow_run_id=str(flow_run.id) if flow_run.id else None,
    )
    run = Run(
        report,
        window,
        lf_cfg,
        tlm_cfg,
        tuning,
        quality_preset,
        rescore,
        max_traces,
        sample_rate,
        environment,
    )
    # Issue 4: one run per window at a time, so two runs of the same window never both pay TLM
    # for the same traces (the second waits, then finds them scored). See flows/window_lock.py.
    with nullcontext() if dry_run else window_lock(start, end, tags, score_name):
        try:
            run.go()
        except StageError as err:
            report.errors.append(str(err))
        finally:
            run.finish()
    logger.info(
        "window %s → %s: %s",
        start.isoformat(),
        end.isoformat(),
        ", ".join(f"{k} {v}" for k, v in report.counts().items() if v),
    )
    if report.errors:
        raise EvaluationFailed("; ".join(report.errors), report)
    return report


class Run:
    """The chunk loop of one window run, and the report it fills."""

    def __init__(
        self,
        report: EvalReport,
        window: Window,
        lf_cfg: LangfuseSettings,
        tlm_cfg: TLMSettings | None,
        tuning: Tuning,
        quality_preset: str,
        rescore: bool,
        max_traces: int | None,
        sample_rate: float,
        environment: list[str] | None,
    ) -> None:
        self.report, self.window, self.lf_cfg, self.tlm_cfg = report, window, lf_cfg, tlm_cfg
        self.tuning, self.preset, self.rescore = tuning, quality_preset, rescore
        self.max_traces, self.sample_rate, self.environment = max_traces, sample_rate, environment
        self.lowest = Lowest(tuning.lowest_n)
        self.project_id: str | None = None
        self.seen: set[str] = set()
        self.selected = 0  # traces sent (or, in a dry run, that would be sent) to TLM
        self.progress_id: Any = None
        self.logger = get_run_logger()

    # --- helpers ---
    def record(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            self.report.add(o)
            if o.bucket is Bucket.UPLOADED:
                self.lowest.offer(o)

    def link(self, trace_id: str) -> str | None:
        if not self.project_id:
            return None
        base = (self.tuning.langfuse_ui_url or self.lf_cfg.base_url).rstrip("/")
        return f"{base}/project/{self.project_id}/traces/{trace_id}"

    def metadata(self) -> dict[str, Any]:
        return {
            "evaluator": "langfuse-tlm-evals",
            "evaluator_version": project_version(),
            "tlm_quality_preset": self.preset,
            "tlm_model": DEFAULT_MODEL,
            "prefect_flow_run_id": str(flow_run.id) if flow_run.id else None,
            "prefect_flow_run_name": flow_run.name,
        }

    def progress(self, oldest: datetime | None, done: bool = False) -> None:
        """Pages come newest first: how far back we are in the window is the progress."""
        span = (self.window.end - self.window.start).total_seconds()
        pct = (
            100.0
            if done or oldest is None
            else (100.0 * (self.window.end - oldest).total_seconds() / span if span > 0 else 100.0)
        )
        pct = max(0.0, min(pct, 100.0))
        if self.progress_id is None:
            self.progress_id = create_progress_artifact(
                progress=pct, key="trust-progress", description="Share of the window evaluated"
            )
        else:
            update_progress_artifact(self.progress_id, progress=pct)

    # --- the loop ---
    def go(self) -> None:
        r = self.report
        self.progress(self.window.end)
        already: set[str] = set()
        if not self.rescore:
            already, n = find_scored_task(
                self.lf_cfg, r.score_name, self.window.start, self.window.end, self.tuning
            )
            r.langfuse_requests += n
        cursor: str | None = None
        chunk = 0
        generations: bool | None = None  # unknown until the first page asks
        while True:
            chunk += 1
            try:
                page = fetch_page_task(
                    self.lf_cfg,
                    self.window,
                    cursor,
                    chunk,
                    self.tuning,
                    self.environment,
                    generations,
                )
            except Exception as err:
                raise StageError(f"reading traces failed on page {chunk}: {describe(err)}") from err
            if page.has_generations is not None:
                generations = page.has_generations
            r.langfuse_requests += page.requests
            self.project_id = self.project_id or page.project_id
            todo = []
            for rec in page.records:
                if rec.trace_id in self.seen:
                    continue  # a row repeated across pages: counted once
                self.seen.add(rec.trace_id)
                r.fetched += 1
                if rec.trace_id in already:
                    self.record([Outcome(rec.trace_id, Bucket.ALREADY_SCORED, name=rec.name)])
                elif not sampled(rec.trace_id, self.sample_rate):
                    self.record(
                        [Outcome(rec.trace_id, Bucket.SKIPPED, "not_sampled", name=rec.name)]
                    )
                else:
                    todo.append(rec)
            if todo:
                self.process(todo, chunk)
            oldest = min((rec.start_time for rec in page.records), default=None)
            cursor = page.cursor
            if not cursor or r.capped:
                break
            self.progress(oldest)

    def process(self, records: list[Any], chunk: int) -> None:
        r = self.report
        paired = build_pairs_task(records, self.tuning, chunk)
        self.record(paired.skipped)
        pairs = paired.pairs
        if self.max_traces is not None:
            room = max(self.max_traces - self.selected, 0)
            if len(pairs) > room:
                over = pairs[room:]
                pairs = pairs[:room]
                r.capped = True
                self.record(
                    [
                        Outcome(p.trace_id, Bucket.SKIPPED, "over_max_traces", name=p.name)
                        for p in over
                    ]
                )
        self.selected += len(pairs)
        if r.dry_run:
            r.would_score += len(pairs)
            return
        if not pairs:
            return
        assert self.tlm_cfg is not None
        scored = score_task(pairs, self.tlm_cfg, self.preset, self.tuning, chunk)
        r.tlm_requests += scored.tlm_requests
        self.record(scored.failed)
        if scored.scored:
            up = upload_task(
                scored.scored, self.lf_cfg, r.score_name, self.metadata(), self.tuning, chunk
            )
            r.langfuse_requests += up.requests
            self.record(up.uploaded + up.failed)
            if (
                up.failed
                and not up.uploaded
                and any((o.reason or "").startswith("upload_error") for o in up.failed)
            ):
                raise StageError(
                    f"writing scores failed for all {len(up.failed)} scores of chunk {chunk}: "
                    f"{up.failed[0].reason}"
                )
        if scored.fatal:
            raise StageError(scored.fatal)

    def finish(self) -> None:
        r = self.report
        r.lowest = self.lowest.rows(self.link)
        if r.accounted() != r.fetched:  # the invariant; a bug if it ever trips
            r.errors.append(f"accounting error: {r.accounted()} outcomes for {r.fetched} traces")
        try:
            self.progress(None, done=True)
            create_markdown_artifact(
                markdown=summary_markdown(r),
                key="trust-summary",
                description=f"Trust scores {r.window_start:%Y-%m-%d %H:%M} → "
                f"{r.window_end:%Y-%m-%d %H:%M}",
            )
            if r.lowest:
                create_table_artifact(
                    table=lowest_table(r),
                    key="lowest-trust",
                    description=f"The {len(r.lowest)} least trustworthy traces, lowest first",
                )
        except Exception as err:  # artifacts are a view; never lose the report over them
            self.logger.warning("could not write the report artifacts: %s", describe(err))
