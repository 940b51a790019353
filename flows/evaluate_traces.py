"""The window flow: fetch a window's tagged traces, score them with TLM, write the scores back.

Chunk by chunk (one page of up to 1000 traces): fetch -> pair -> score -> upload, so memory stays
bounded and a crash loses at most the chunk at TLM. Re-running a window is safe (scores upsert by
deterministic id) and cheap (units already scored, or recorded as written, skip TLM).
"""

from __future__ import annotations

import re
import sys
import time
from collections import deque
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar, cast

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import PrefectFuture, as_completed
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote

from flows.window_lock import window_lock
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
from tasks.fetch import Page, fetch_page_task, find_scored_task
from tasks.langfuse_api import Calls, CursorGuard, Server, read_server, scores_by_id
from tasks.ledger import Ledger, days_of
from tasks.models import Bucket, Outcome, Scored, TraceRecord, Window, outcome_for, score_id
from tasks.pairs import build_pairs_task
from tasks.report import EvalReport, Lowest, emit_run_events, lowest_table, summary_markdown
from tasks.retry import StageError, describe
from tasks.review import ensure_configs_task, review_task
from tasks.score import ScoreResult, TLMEngine, score_task
from tasks.select import Known, select, split_resends
from tasks.upload import LabelSpec, ScoreSpec, upload_task
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
    # one run per window at a time: a second run waits, then finds the units scored
    with nullcontext() if dry_run else window_lock(start, end, tags, score_name):
        try:
            run.go()
            run.review()
        except Exception as err:  # whatever failed, the report of what landed comes back
            known_kind = isinstance(err, StageError | ConfigError)
            report.errors.append(str(err) if known_kind else f"unexpected {describe(err)}")
            report.errors += [e for e in run.late_errors if e not in report.errors]
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


@dataclass(slots=True)
class Job:
    """A chunk sent to TLM: what to land when its scores come back."""

    chunk: int
    pairs: int
    again: list[Scored]  # scores paid for by an earlier run, re-sent with this chunk
    future: PrefectFuture[ScoreResult] | None


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
        self.server = Server(None, batch_scores=True)
        self.known = Known(read_lag_s=tuning.score_read_lag_s, now=time.time())
        self.ledger: Ledger | None = None
        self.values: dict[str, float | None] = {}  # already-scored units: their value
        self.low: dict[str, tuple[float, str, str]] = {}  # key -> (score, object id, type)
        self.accepted: dict[str, tuple[str, date]] = {}  # key -> (score id, day) it wrote
        self.failed_chunks = 0  # chunks in a row in which TLM scored nothing
        self.in_flight: deque[Job] = deque()  # chunks at TLM, oldest first
        self.late_errors: list[str] = []  # failures while landing after the run had failed
        self.scored_any: bool | None = None  # None: TLM not asked yet
        self.ledger_writes = 0
        self.run_id = str(flow_run.id) if flow_run.id else "local"
        self.logger = get_run_logger()

    # --- helpers ---
    def record(self, outcomes: list[Outcome]) -> None:
        thr = self.opts.low_trust_threshold
        for o in outcomes:
            self.report.add(o)
            value = o.score if o.bucket is Bucket.UPLOADED else None
            if o.bucket is Bucket.UPLOADED:
                self.lowest.offer(o)
            elif o.bucket is Bucket.ALREADY_SCORED:
                value = self.values.get(o.key)
                self.report.add_existing(value)
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
        self.progress(self.window.end)
        self.prepare()
        with self.engine() as engine:
            try:
                for chunk, page in enumerate(self.pages(), start=1):
                    sel = select(
                        [rec for rec in page.records if self.first_sight(rec)],
                        known=self.known,
                        observations=self.opts.observations,
                        rescore=self.opts.rescore,
                        sample_rate=self.opts.sample_rate,
                    )
                    self.report.fetched += sel.units
                    self.values |= sel.values
                    self.record(sel.outcomes)
                    if sel.todo:
                        self.start(sel.todo, chunk, engine)
                    while len(self.in_flight) >= self.tuning.chunks_in_flight:
                        self.land_first_done()
                    if self.report.capped:
                        break
                    self.progress(min((rec.start_time for rec in page.records), default=None))
            finally:  # whatever stopped the loop, the scores already paid for still land
                self.drain()
        r = self.report
        if r.tlm_requests and self.scored_any is False:
            reasons = sorted(r.failed_to_score, key=lambda k: -len(r.failed_to_score[k]))
            raise StageError(
                f"TLM scored none of {r.tlm_requests} items: {reasons[0] if reasons else '?'}"
            )

    def engine(self) -> AbstractContextManager[TLMEngine | None]:
        """One TLM client for the run: its concurrency carries over from chunk to chunk."""
        if self.opts.dry_run or self.tlm_cfg is None:
            return nullcontext()
        return TLMEngine(
            self.tlm_cfg, quality_preset=self.opts.quality_preset,
            timeout_s=self.tuning.tlm_timeout_s,
        )  # fmt: skip

    def drain(self) -> None:
        """Land every chunk still at TLM; with a failure already on its way, its errors follow
        that one in the report (``late_errors``)."""
        errors: list[str] = []
        while self.in_flight:
            try:
                self.land(self.in_flight.popleft())
            except Exception as err:
                errors.append(str(err) if isinstance(err, StageError) else describe(err))
        if errors and sys.exc_info()[0] is None:
            raise StageError("; ".join(dict.fromkeys(errors)))
        self.late_errors = list(dict.fromkeys(errors))

    def first_sight(self, rec: TraceRecord) -> bool:
        """A row repeated across pages is counted once."""
        if rec.trace_id in self.seen:
            return False
        self.seen.add(rec.trace_id)
        return True

    def prepare(self) -> None:
        """Before any TLM call: the write path, the score configs, what is already scored."""
        r, o = self.report, self.opts
        calls = Calls(self.lf_cfg, self.tuning, self.logger)
        try:
            self.server = read_server(self.lf_cfg, self.tuning, calls)
        finally:
            r.langfuse_requests += calls.requests
        r.langfuse_server = self.server.label
        self.logger.info(
            "%s at %s: %s", self.server.label, self.lf_cfg.base_url,
            "list score POSTs" if self.server.batch_scores else "one score per POST",
        )  # fmt: skip
        if not o.dry_run and (o.score_config or o.label_score):
            try:
                self.config_ids, n = ensure_configs_task(
                    self.lf_cfg, o.score_name if o.score_config else None, o.label_name,
                    self.tuning,
                )  # fmt: skip
            except Exception as err:
                raise StageError(f"ensuring the score configs failed: {describe(err)}") from err
            r.langfuse_requests += n
        lookup_end = self.window.end + timedelta(
            seconds=self.tuning.trace_max_duration_s if o.observations else 0
        )
        try:
            self.ledger = Ledger.of(self.lf_cfg, self.tuning, o.score_name)
            if not o.rescore or o.review_queue:  # a re-run's review needs the existing values
                self.known.now = time.time()
                self.known.ledger = self.ledger.read(days_of(self.window.start, lookup_end))
        except Exception as err:  # without it a re-run within the read lag may pay again
            self.logger.warning("could not read the score ledger: %s", describe(err))
            r.warnings.append(f"score ledger unavailable: {describe(err)}")
            self.ledger = None
        if o.rescore and not o.review_queue:
            return
        if self.server.batch_scores:  # the server keeps our timestamps: one range look-up
            try:
                self.known.in_langfuse, n = find_scored_task(
                    self.lf_cfg, o.score_name, self.window.start, lookup_end, self.tuning,
                    o.observations,
                )  # fmt: skip
            except Exception as err:
                raise StageError(f"reading existing scores failed: {describe(err)}") from err
            r.langfuse_requests += n

    def pages(self) -> Iterator[Page]:
        r, o = self.report, self.opts
        guard = CursorGuard("reading traces")
        cursor: str | None = None
        kinds: dict[str, Any] | None = None  # how child observations are found: page 1 asks
        page_no = 0
        lookup = o.score_name if not self.server.batch_scores and not o.rescore else None
        while True:
            page_no += 1
            try:
                page = fetch_page_task(
                    self.lf_cfg, self.window, cursor, page_no, self.tuning, self.server,
                    o.environment, kinds, lookup, o.observations,
                )  # fmt: skip
            except ConfigError:
                raise
            except Exception as err:
                raise StageError(
                    f"reading traces failed on page {page_no}: {describe(err)}"
                ) from err
            r.langfuse_requests += page.requests
            kinds = page.kinds if page.kinds is not None else kinds
            if kinds:
                r.generations_by_trace_id = kinds.get("GENERATION") == "trace_ids"
            self.project_id = self.project_id or page.project_id
            if page.scored:
                self.known.in_langfuse |= page.scored
            yield page
            cursor = guard.next(page.cursor, page.rows)
            if cursor is None:
                return

    def start(self, records: list[TraceRecord], chunk: int, engine: TLMEngine | None) -> None:
        """Pair a chunk and send it to TLM; its scores are landed later (``land``)."""
        r, o = self.report, self.opts
        # quote(): big inputs are not walked by Prefect's parameter introspection (~15% of CPU)
        paired = build_pairs_task(bulk(records), self.tuning, chunk)
        self.record(paired.skipped)
        r.count_sources(p.source for p in paired.pairs)
        again, pairs = split_resends(paired.pairs, self.known, o.rescore)
        if o.max_traces is not None:
            room = max(o.max_traces - self.selected, 0)
            if len(pairs) > room:
                over = pairs[room:]
                pairs = pairs[:room]
                r.capped = True
                self.record([outcome_for(p, Bucket.SKIPPED, "over_max_traces") for p in over])
        self.selected += len(pairs)
        if engine is None:  # a dry run
            r.would_score += len(pairs) + len(again)
            r.would_score_chars += sum(len(p.prompt) + len(p.response) for p in pairs)
            return
        future = score_task.submit(bulk(pairs), bulk(engine), chunk) if pairs else None
        if pairs:
            r.tlm_requests += len(pairs)
        self.in_flight.append(Job(chunk, len(pairs), again, future))

    def land_first_done(self) -> None:
        """Land whichever chunk TLM finished first: a chunk waiting on its slowest item does not
        hold back the next one, so TLM always has a chunk's items to work on."""
        ready = next((j for j in self.in_flight if j.future is None), None)
        if ready is None:
            done = next(as_completed([j.future for j in self.in_flight if j.future is not None]))
            ready = next(j for j in self.in_flight if j.future is done)
        self.in_flight.remove(ready)
        self.land(ready)

    def land(self, job: Job) -> None:
        """Wait for a chunk's scores and write them (with the re-sends) to Langfuse."""
        scored: list[Scored] = []
        if job.future is not None:
            result = job.future.result()
            self.record(result.failed)
            scored = result.scored
            self.tlm_health(result, job.pairs)
        if job.again:
            self.report.resent += len(job.again)
            self.logger.info(
                "chunk %d: re-sending %d scores paid for earlier that Langfuse does not show",
                job.chunk, len(job.again),
            )  # fmt: skip
        if scored or job.again:
            self.upload(job.again + scored, job.chunk)

    def tlm_health(self, result: ScoreResult, n: int) -> None:
        """A refused key or a failed call stops the run; so do N chunks in a row with no score."""
        if result.fatal:
            raise StageError(result.fatal)
        any_scored = not result.all_failed
        fatal = result.failed[0].reason if result.all_failed and result.failed else None
        self.scored_any = bool(self.scored_any) or any_scored
        self.failed_chunks = 0 if any_scored else self.failed_chunks + 1
        if self.failed_chunks >= self.tuning.tlm_down_after_chunks:
            raise StageError(
                f"TLM scored nothing in {self.failed_chunks} chunks in a row "
                f"({fatal or 'every item failed'}): stopping"
            )
        if not any_scored:
            self.logger.warning("TLM scored none of the %d items of this chunk; going on", n)

    def upload(self, items: list[Scored], chunk: int) -> None:
        r, o = self.report, self.opts
        label = None
        if o.label_name:
            label = LabelSpec(
                o.label_name, o.low_trust_threshold, o.untrustworthy_below,
                self.config_ids.get(o.label_name),
            )  # fmt: skip
        spec = ScoreSpec(
            o.score_name, self.metadata(), self.config_ids.get(o.score_name), label,
            self.tuning.comment_max_chars,
        )  # fmt: skip
        try:
            up = upload_task(bulk(items), self.lf_cfg, spec, self.server, self.tuning, chunk)
        except Exception as err:  # never lose track of a scored unit
            reason = f"upload_error: {describe(err)}"
            self.record([outcome_for(s.pair, Bucket.FAILED_TO_UPLOAD, reason) for s in items])
            self.remember(items, set())
            raise StageError(f"writing scores failed in chunk {chunk}: {describe(err)}") from err
        self.server = up.server
        r.langfuse_requests += up.requests
        r.labels_failed += up.labels_failed
        r.read_back += up.read_back
        self.record(up.uploaded + up.failed)
        self.remember(items, {x.key for x in up.uploaded})
        if up.failed and not up.uploaded:
            raise StageError(
                f"writing scores failed: {self.server.label} took none of the "
                f"{len(up.failed)} scores of chunk {chunk}: {up.failed[0].reason}"
            )

    def remember(self, items: list[Scored], accepted: set[str]) -> None:
        """Record what was written (and what was not) for the runs that follow."""
        name = self.opts.score_name
        by_day: dict[date, dict[str, tuple[float | None, str | None, bool]]] = {}
        for s in items:
            p = s.pair
            day = p.start_time.astimezone(UTC).date()
            if p.key in accepted:
                self.accepted[p.key] = (score_id(p.trace_id, name, p.observation_id), day)
            by_day.setdefault(day, {})[p.key] = (s.score, s.explanation, p.key not in accepted)
        if self.ledger is None:
            return
        self.ledger_writes += 1
        try:
            self.ledger.write(by_day, run_id=self.run_id, chunk=self.ledger_writes)
        except Exception as err:
            self.logger.warning("could not write the score ledger: %s", describe(err))
            self.report.warnings.append(f"score ledger not written: {describe(err)}")

    def verify(self) -> None:
        """Read this run's scores back until all show or ``verify_wait_s`` is up."""
        wait = self.tuning.verify_wait_s
        if wait <= 0 or not self.accepted:
            return
        calls = Calls(self.lf_cfg, self.tuning, self.logger)
        missing = {k: sid for k, (sid, _) in self.accepted.items()}
        deadline = time.monotonic() + wait
        try:
            while missing:
                found = {str(s.id) for s in scores_by_id(calls, list(missing.values()), "verify")}
                missing = {k: v for k, v in missing.items() if v not in found}
                if not missing or time.monotonic() >= deadline:
                    break
                time.sleep(min(5.0, max(deadline - time.monotonic(), 0.0)))
        finally:
            self.report.langfuse_requests += calls.requests
        self.report.confirmed = len(self.accepted) - len(missing)
        self.report.not_confirmed = sorted(missing)
        if missing:
            self.logger.warning(
                "%d of %d accepted scores did not show in Langfuse within %.0f s: the next run "
                "re-sends them", len(missing), len(self.accepted), wait,
            )  # fmt: skip
            if self.ledger is not None:
                self.mark_missing(set(missing))

    def mark_missing(self, keys: set[str]) -> None:
        """Accepted but never shown: the next run re-sends these without paying TLM."""
        assert self.ledger is not None
        days = {self.accepted[k][1] for k in keys}
        entries = self.ledger.read(sorted(days))
        by_day: dict[date, dict[str, tuple[float | None, str | None, bool]]] = {}
        for key in keys:
            e = entries.get(key)
            if e is not None:
                by_day.setdefault(self.accepted[key][1], {})[key] = (e.value, e.comment, True)
        self.ledger_writes += 1
        self.ledger.write(by_day, run_id=self.run_id, chunk=self.ledger_writes)

    def review(self) -> None:
        """Queue the low-trust units for human review, once."""
        r, o = self.report, self.opts
        if not o.review_queue or o.dry_run or not self.low:
            return
        ranked = sorted(self.low.values())
        if o.review_lowest_n is not None:
            ranked = ranked[: o.review_lowest_n]
        objects = [(oid, otype) for _, oid, otype in ranked]
        # a run that only scored fresh units cannot have queued them before; anything scored
        # earlier (a re-run, a rescore, a crash after upload) is checked against the queue
        earlier = o.rescore or any(k in self.values for k in self.low)
        try:
            result = review_task(
                self.lf_cfg, o.review_queue, list(self.config_ids.values()), objects, earlier,
                self.tuning,
            )  # fmt: skip
        except Exception as err:
            raise StageError(f"adding traces to review queue failed: {describe(err)}") from err
        r.langfuse_requests += result.requests
        r.queued_for_review = result.added
        r.already_in_review = result.already_queued

    def finish(self) -> None:
        r = self.report
        try:
            self.verify()
        except Exception as err:
            r.warnings.append(f"reading the scores back failed: {describe(err)}")
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
