"""The window flow: fetch a window's tagged traces, score them with TLM, write the scores back.

Chunk by chunk (one page of up to 1000 traces at a time): fetch -> pair -> score -> upload, so
memory stays bounded and a crash loses at most one chunk of work; re-running the window is safe
(scores upsert by deterministic id) and cheap (traces already scored are not sent to TLM).
"""

from __future__ import annotations

import hashlib
import re
import time
from contextlib import nullcontext  # issue 4: no lock for dry runs
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar, cast

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote

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
from tasks.models import Bucket, Outcome, Scored, TraceRecord, Window, outcome_for
from tasks.pairs import build_pairs_task
from tasks.report import EvalReport, Lowest, emit_run_events, lowest_table, summary_markdown
from tasks.retry import StageError, describe
from tasks.review import ensure_configs_task, review_task
from tasks.score import score_task
from tasks.upload import LabelSpec, upload_task
from tasks.windows import resolve_window

T = TypeVar("T")
CONFIG_NAME = re.compile(r"[A-Za-z0-9_ .()\-]{1,35}")  # Langfuse's rule for score config names
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


def bulk(value: T) -> T:
    """A big task input that Prefect passes through without walking it (``quote``)."""
    return cast(T, quote(value))


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


@dataclass(frozen=True)
class Options:
    """What a window run does, beside which window it reads."""

    score_name: str = "trust_score"
    quality_preset: str = "medium"
    rescore: bool = False
    max_traces: int | None = None
    sample_rate: float = 1.0
    dry_run: bool = False
    environment: list[str] | None = None
    low_trust_threshold: float = 0.5
    scope: str = "trace"  # or "generation": score each GENERATION observation
    score_config: bool = True
    label_score: bool = False
    untrustworthy_below: float = 0.3
    review_queue: str | None = None
    review_lowest_n: int | None = None
    alert_low_trust_share: float | None = 0.2

    @property
    def label_name(self) -> str | None:
        return f"{self.score_name}_label" if self.label_score else None

    @property
    def observations(self) -> bool:
        return self.scope == "generation"


def validate_options(tags: list[str] | None, o: Options) -> list[str]:
    if not tags or isinstance(tags, str):
        raise ConfigError("tags must be a non-empty list of the tag(s) the traces carry")
    bad = [t for t in tags if not isinstance(t, str) or not t.strip()]
    if bad:
        raise ConfigError(f"tags must be non-empty strings, got {bad!r}")
    if not o.score_name or not o.score_name.strip():
        raise ConfigError("score_name must not be empty")
    if not 0.0 < o.sample_rate <= 1.0:
        raise ConfigError(f"sample_rate must be in (0, 1], got {o.sample_rate}")
    if o.max_traces is not None and o.max_traces < 1:
        raise ConfigError(f"max_traces must be at least 1 (or unset), got {o.max_traces}")
    for name in ("low_trust_threshold", "untrustworthy_below"):
        if not 0.0 <= getattr(o, name) <= 1.0:
            raise ConfigError(f"{name} must be in [0, 1], got {getattr(o, name)}")
    if o.untrustworthy_below > o.low_trust_threshold:
        raise ConfigError("untrustworthy_below must not exceed low_trust_threshold")
    if o.alert_low_trust_share is not None and not 0.0 <= o.alert_low_trust_share <= 1.0:
        raise ConfigError(f"alert_low_trust_share must be in [0, 1], got {o.alert_low_trust_share}")
    if o.scope not in ("trace", "generation"):
        raise ConfigError(f"scope must be 'trace' or 'generation', got {o.scope!r}")
    if o.review_lowest_n is not None and o.review_lowest_n < 1:
        raise ConfigError(f"review_lowest_n must be at least 1, got {o.review_lowest_n}")
    if o.review_queue is not None and not o.review_queue.strip():
        raise ConfigError("review_queue must be a queue name (or unset)")
    config_names = [o.score_name] if o.score_config else []
    config_names += [o.label_name] if o.label_name else []
    for name in config_names:
        if not CONFIG_NAME.fullmatch(name):
            raise ConfigError(
                f"{name!r} cannot name a Langfuse score config (at most 35 letters, digits, "
                "spaces, _ . ( ) -): shorten score_name, or set score_config=false and "
                "label_score=false"
            )
    return list(dict.fromkeys(tags))


def validate_params(
    tags: list[str] | None,
    score_name: str = "trust_score",
    sample_rate: float = 1.0,
    max_traces: int | None = None,
    low_trust_threshold: float = 0.5,
) -> list[str]:
    """The checks of the flow's core parameters (for callers that run it later: CLI, backfill)."""
    return validate_options(
        tags,
        Options(
            score_name=score_name,
            sample_rate=sample_rate,
            max_traces=max_traces,
            low_trust_threshold=low_trust_threshold,
        ),
    )


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
    logger = get_run_logger()
    opts = Options(
        score_name, quality_preset, rescore, max_traces, sample_rate, dry_run, environment,
        low_trust_threshold, scope, score_config, label_score, untrustworthy_below,
        review_queue, review_lowest_n, alert_low_trust_share,
    )  # fmt: skip
    # --- refuse bad configuration before any call ---
    tags = validate_options(tags, opts)
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
        scope=scope,
        dry_run=dry_run,
        low_trust_threshold=low_trust_threshold,
        flow_run_id=str(flow_run.id) if flow_run.id else None,
    )
    run = Run(report, window, lf_cfg, tlm_cfg, tuning, opts)
    # Issue 4: one run per window at a time, so two runs of the same window never both pay TLM
    # for the same traces (the second waits, then finds them scored). See flows/window_lock.py.
    with nullcontext() if dry_run else window_lock(start, end, tags, score_name):
        try:
            run.go()
            run.review()
        except StageError as err:
            report.errors.append(str(err))
            try:
                run.send_held(0)  # scores kept back for a fuller POST still land (or are reported)
            except StageError as held_err:
                report.errors.append(str(held_err))
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


def expand_generations(rec: TraceRecord) -> list[TraceRecord]:
    """Observation scope: one unit per GENERATION of the trace (its own io, the trace's context)."""
    return [
        TraceRecord(
            trace_id=rec.trace_id,
            observation_id=g.observation_id,
            start_time=g.start_time,
            name=rec.name,
            input=g.input,
            output=g.output,
            metadata=None,
            environment=rec.environment,
            context=rec.context,
            score_observation=g.observation_id,
        )
        for g in rec.generations
    ]


class Run:
    """The chunk loop of one window run, and the report it fills."""

    def __init__(
        self,
        report: EvalReport,
        window: Window,
        lf_cfg: LangfuseSettings,
        tlm_cfg: TLMSettings | None,
        tuning: Tuning,
        opts: Options,
    ) -> None:
        self.report, self.window, self.lf_cfg, self.tlm_cfg = report, window, lf_cfg, tlm_cfg
        self.tuning, self.opts = tuning, opts
        self.lowest = Lowest(tuning.lowest_n)
        self.project_id: str | None = None
        self.seen: set[str] = set()
        self.selected = 0  # units sent (or, in a dry run, that would be sent) to TLM
        self.progress_id: Any = None
        self.config_ids: dict[str, str] = {}
        self.already: dict[str, float | None] = {}
        self.low: dict[str, tuple[float, str, str]] = {}  # key -> (score, object id, type)
        self.held: list[Scored] = []  # scored, kept back to fill the next POST
        self.logger = get_run_logger()

    # --- helpers ---
    def record(self, outcomes: list[Outcome]) -> None:
        thr = self.opts.low_trust_threshold
        for o in outcomes:
            self.report.add(o)
            if o.bucket is Bucket.UPLOADED:
                self.lowest.offer(o)
                if o.score is not None and o.score < thr:
                    self.low[o.key] = (o.score, *self.review_object(o.trace_id, o.observation_id))
            elif o.bucket is Bucket.ALREADY_SCORED:
                value = self.already.get(o.key)
                if value is not None and value < thr:
                    self.low[o.key] = (value, *self.review_object(o.trace_id, o.observation_id))

    @staticmethod
    def review_object(trace_id: str, observation_id: str | None) -> tuple[str, str]:
        return (observation_id, "OBSERVATION") if observation_id else (trace_id, "TRACE")

    def link(self, trace_id: str, observation_id: str | None = None) -> str | None:
        if not self.project_id:
            return None
        base = (self.tuning.langfuse_ui_url or self.lf_cfg.base_url).rstrip("/")
        url = f"{base}/project/{self.project_id}/traces/{trace_id}"
        return f"{url}?observation={observation_id}" if observation_id else url

    def metadata(self) -> dict[str, Any]:
        # small on purpose: it is sent with every score (1000 scores must fit one 1 MB POST)
        return {
            "evaluator": f"langfuse-tlm-evals {project_version()}",
            "tlm_quality_preset": self.opts.quality_preset,
            "tlm_model": DEFAULT_MODEL,
            "prefect_flow_run_id": str(flow_run.id) if flow_run.id else None,
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
        r, o = self.report, self.opts
        self.progress(self.window.end)
        if not o.dry_run and (o.score_config or o.label_score):
            try:
                self.config_ids = ensure_configs_task(
                    self.lf_cfg, o.score_name if o.score_config else None, o.label_name,
                    self.tuning,
                )  # fmt: skip
            except Exception as err:
                raise StageError(f"ensuring the score configs failed: {describe(err)}") from err
        if not o.rescore or o.review_queue:  # a re-run's review needs the existing values
            lookup_end = self.window.end
            if o.observations:
                lookup_end += timedelta(seconds=self.tuning.trace_max_duration_s)
            try:
                self.already, n = find_scored_task(
                    self.lf_cfg, o.score_name, self.window.start, lookup_end, self.tuning,
                    o.observations,
                )  # fmt: skip
            except Exception as err:
                raise StageError(f"reading existing scores failed: {describe(err)}") from err
            r.langfuse_requests += n
        skip_scored = set() if o.rescore else set(self.already)
        cursor: str | None = None
        chunk = 0
        kinds: dict[str, bool] | None = None  # which child observations exist: first page asks
        while True:
            chunk += 1
            try:
                page = fetch_page_task(
                    self.lf_cfg, self.window, cursor, chunk, self.tuning, o.environment, kinds
                )
            except Exception as err:
                raise StageError(f"reading traces failed on page {chunk}: {describe(err)}") from err
            kinds = page.kinds if page.kinds is not None else kinds
            r.langfuse_requests += page.requests
            self.project_id = self.project_id or page.project_id
            todo = []
            for rec in page.records:
                if rec.trace_id in self.seen:
                    continue  # a row repeated across pages: counted once
                self.seen.add(rec.trace_id)
                units = expand_generations(rec) if o.observations else [rec]
                if not units:
                    r.fetched += 1
                    self.record([outcome_for(rec, Bucket.SKIPPED, "no_generation")])
                for unit in units:
                    r.fetched += 1
                    if unit.key in skip_scored:
                        self.record([outcome_for(unit, Bucket.ALREADY_SCORED)])
                    elif not sampled(unit.key, o.sample_rate):
                        self.record([outcome_for(unit, Bucket.SKIPPED, "not_sampled")])
                    else:
                        todo.append(unit)
            if todo:
                self.process(todo, chunk)
            oldest = min((rec.start_time for rec in page.records), default=None)
            cursor = page.cursor
            if not cursor or r.capped:
                break
            self.progress(oldest)
        self.send_held(chunk)

    def process(self, records: list[TraceRecord], chunk: int) -> None:
        r, o = self.report, self.opts
        # quote(): big inputs are not walked by Prefect's parameter introspection (~15% of CPU)
        paired = build_pairs_task(bulk(records), self.tuning, chunk)
        self.record(paired.skipped)
        pairs = paired.pairs
        if o.max_traces is not None:
            room = max(o.max_traces - self.selected, 0)
            if len(pairs) > room:
                over = pairs[room:]
                pairs = pairs[:room]
                r.capped = True
                self.record([outcome_for(p, Bucket.SKIPPED, "over_max_traces") for p in over])
        self.selected += len(pairs)
        if o.dry_run:
            r.would_score += len(pairs)
            return
        if not pairs:
            return
        assert self.tlm_cfg is not None
        scored = score_task(bulk(pairs), self.tlm_cfg, o.quality_preset, self.tuning, chunk)
        r.tlm_requests += scored.tlm_requests
        self.record(scored.failed)
        if scored.scored:
            # a part-full last POST waits for the next chunk's scores (send_held sends the rest)
            hold = self.tuning.fill_posts and not scored.fatal
            self.upload(self.held + scored.scored, chunk, hold_partial=hold)
        if scored.fatal:
            raise StageError(scored.fatal)

    def upload(self, items: list[Scored], chunk: int, hold_partial: bool) -> None:
        r, o = self.report, self.opts
        self.held = []
        label = None
        if o.label_name:
            label = LabelSpec(
                o.label_name, o.low_trust_threshold, o.untrustworthy_below,
                self.config_ids.get(o.label_name),
            )  # fmt: skip
        try:
            up = upload_task(
                bulk(items), self.lf_cfg, o.score_name, self.metadata(), self.tuning, chunk,
                self.config_ids.get(o.score_name), label, hold_partial,
            )  # fmt: skip
        except Exception as err:  # never lose track of a scored trace
            reason = f"upload_error: {describe(err)}"
            self.record([outcome_for(s.pair, Bucket.FAILED_TO_UPLOAD, reason) for s in items])
            raise StageError(f"writing scores failed in chunk {chunk}: {describe(err)}") from err
        self.held = up.held
        r.langfuse_requests += up.requests
        r.labels_failed += up.labels_failed
        self.record(up.uploaded + up.failed)
        if (
            up.failed
            and not up.uploaded
            and any((x.reason or "").startswith("upload_error") for x in up.failed)
        ):
            raise StageError(
                f"writing scores failed for all {len(up.failed)} scores of chunk {chunk}: "
                f"{up.failed[0].reason}"
            )

    def send_held(self, chunk: int) -> None:
        """Send the scores kept back for a fuller POST (failures are recorded by upload)."""
        if self.held:
            self.upload(self.held, chunk, hold_partial=False)

    def review(self) -> None:
        """Queue the low-trust units for human review, once."""
        r, o = self.report, self.opts
        if not o.review_queue or o.dry_run or not self.low:
            return
        ranked = sorted(self.low.values())
        if o.review_lowest_n is not None:
            ranked = ranked[: o.review_lowest_n]
        objects = [(oid, otype) for _, oid, otype in ranked]
        # a run that only scored fresh traces cannot have queued them before; anything scored
        # earlier (a re-run, a rescore, a crash after upload) is checked against the queue
        earlier = o.rescore or any(k in self.already for k in self.low)
        try:
            result = review_task(
                self.lf_cfg, o.review_queue, list(self.config_ids.values()), objects, earlier,
                self.tuning,
            )  # fmt: skip
        except Exception as err:
            raise StageError(f"adding traces to review queue failed: {describe(err)}") from err
        r.queued_for_review = result.added
        r.already_in_review = result.already_queued

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
        try:
            emit_run_events(r, self.opts.alert_low_trust_share)
        except Exception as err:
            self.logger.warning("could not emit the run's events: %s", describe(err))
