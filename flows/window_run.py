"""The stages of one window run, and the report they fill. The flow (flows/evaluate_traces.py)
calls them in order; each stage is a Prefect task in tasks/, called here with what it needs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar, cast
from uuid import UUID

from prefect import get_run_logger
from prefect.futures import PrefectFuture, as_completed
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote

from flows.options import EvalOptions
from flows.publish import Progress
from tasks.budgets import check_limits
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
from tasks.failures import Reason, StageError
from tasks.fetch import Page, fetch_page_task, find_scored_task
from tasks.langfuse_api import Calls, CursorGuard, Server, read_server, scores_by_id
from tasks.ledger import Ledger, days_of
from tasks.models import Bucket, Outcome, Pair, Scored, TraceRecord, Window, outcome_for, score_id
from tasks.pairs import build_pairs_task
from tasks.report import EvalReport, Lowest
from tasks.retry import describe
from tasks.review import ensure_configs_task, review_task
from tasks.score import ScoreResult, SharedLimit, TLMEngine, score_task
from tasks.select import Known, LowTrust, cap, review_order, select, split_resends
from tasks.upload import LabelSpec, ScoreSpec, upload_task

T = TypeVar("T")
DEFAULT_MODEL = "gpt-4.1-mini"  # TLM's default model (we do not override it)
LedgerRows = dict[date, dict[str, tuple[float | None, str | None, bool]]]


def project_version() -> str:
    try:
        return version("langfuse-tlm-evals")
    except PackageNotFoundError:
        return "0+unknown"


def bulk(value: T) -> T:
    """A big task input that Prefect passes through without walking it (~15% of CPU saved)."""
    return cast(T, quote(value))


@contextmanager
def stage(what: str) -> Iterator[None]:
    """A stage's failure as one line saying which stage; a configuration error as it is."""
    try:
        yield
    except (ConfigError, StageError):
        raise
    except Exception as err:
        raise StageError(f"{what} failed: {describe(err)}") from err


@dataclass(frozen=True, slots=True)
class Settings:
    """The environment's settings; a bad one is refused before any call."""

    langfuse: LangfuseSettings
    tlm: TLMSettings | None  # None in a dry run: TLM is never called
    tuning: Tuning

    @classmethod
    def load(cls, opts: EvalOptions) -> Settings:
        tuning, langfuse = load_tuning(), load_langfuse()
        check_limits(tuning)
        if opts.dry_run:
            return cls(langfuse, None, tuning)
        check_preset(opts.quality_preset)
        return cls(langfuse, load_tlm(), tuning)


@dataclass(slots=True)
class Chunk:
    """A chunk's units on their way to TLM, and the scores re-sent with it."""

    no: int
    pairs: int
    again: list[Scored]  # scores paid for by an earlier run, re-sent with this chunk
    future: PrefectFuture[ScoreResult] | None = None


@dataclass
class Scoring:
    """The chunks at TLM. Whichever finishes first is landed first, so a chunk waiting on its
    slowest item does not hold back the next one and TLM always has items to work on."""

    engine: TLMEngine | None  # None: a dry run
    land: Callable[[Chunk], None]
    limit: int
    at_tlm: list[Chunk] = field(default_factory=list)

    def submit(self, chunk: Chunk, pairs: list[Pair]) -> None:
        if self.engine is None or not (pairs or chunk.again):
            return
        if pairs:
            chunk.future = score_task.submit(bulk(pairs), bulk(self.engine), chunk.no)
        self.at_tlm.append(chunk)
        while len(self.at_tlm) >= self.limit:
            ready = next((c for c in self.at_tlm if c.future is None), None)
            if ready is None:
                done = next(as_completed([c.future for c in self.at_tlm if c.future is not None]))
                ready = next(c for c in self.at_tlm if c.future is done)
            self.at_tlm.remove(ready)
            self.land(ready)

    def drain(self) -> list[str]:
        """Land every chunk still at TLM (the scores paid for still land); their errors."""
        errors: list[str] = []
        while self.at_tlm:
            try:
                self.land(self.at_tlm.pop(0))
            except Exception as err:
                errors.append(str(err) if isinstance(err, StageError) else describe(err))
        return list(dict.fromkeys(errors))


class WindowRun:
    """One window run: its settings, what it knows of the stream's scores, and its report."""

    def __init__(self, window: Window, settings: Settings, opts: EvalOptions) -> None:
        self.window, self.opts = window, opts
        self.lf_cfg, self.tlm_cfg, self.tuning = settings.langfuse, settings.tlm, settings.tuning
        self.report = EvalReport(
            window_start=window.start,
            window_end=window.end,
            tags=list(window.tags),
            score_name=opts.score_name,
            scope=opts.scope,
            dry_run=opts.dry_run,
            low_trust_threshold=opts.low_trust_threshold,
            flow_run_id=str(flow_run.id) if flow_run.id else None,
        )
        self.logger = get_run_logger()
        self.progress = Progress(window)
        self.lowest = Lowest(self.tuning.lowest_n)
        self.server = Server(None, batch_scores=True)
        self.known = Known(read_lag_s=self.tuning.score_read_lag_s, now=time.time())
        self.ledger: Ledger | None = None
        self.config_ids: dict[str, str] = {}
        self.project_id: str | None = None
        self.seen: set[str] = set()  # trace ids: a row repeated across pages counts once
        self.selected = 0  # units sent (or, in a dry run, that would be sent) to TLM
        self.values: dict[str, float | None] = {}  # already-scored units: their value
        self.low: dict[str, LowTrust] = {}  # units below the threshold, for review
        self.accepted: dict[str, tuple[str, date]] = {}  # key -> (score id, day) written
        self.failed_chunks = 0  # chunks in a row in which TLM scored nothing
        self.scored_any: bool | None = None  # None: TLM not asked yet
        self.late_errors: list[str] = []  # failures while landing after the run had failed
        self.ledger_writes = 0
        self.run_id = str(flow_run.id) if flow_run.id else "local"

    # --- before any TLM call ---------------------------------------------------------------

    def prepare(self) -> None:
        """The write path, the score configs, and what is already scored."""
        r, o = self.report, self.opts
        self.progress.update(self.window.end)
        calls = Calls(self.lf_cfg, self.tuning, self.logger)
        try:
            self.server = read_server(self.lf_cfg, self.tuning, calls)
        finally:
            r.langfuse_requests += calls.requests
        r.langfuse_server = self.server.label
        self.logger.info(
            "%s (%s) takes %s", self.server.label, self.lf_cfg.base_url,
            "lists of scores per POST" if self.server.batch_scores else "one score per POST",
        )  # fmt: skip
        if not o.dry_run and (o.score_config or o.label_score):
            with stage("ensuring the score configs"):
                self.config_ids, n = ensure_configs_task(
                    self.lf_cfg, o.score_name if o.score_config else None, o.label_name,
                    self.tuning,
                )  # fmt: skip
            r.langfuse_requests += n
        lookup_end = self.window.end + timedelta(
            seconds=self.tuning.trace_max_duration_s if o.observations else 0
        )
        needs_values = not o.rescore or bool(o.review_queue)  # a re-run's review needs them
        self.read_ledger(lookup_end, needs_values)
        if needs_values and self.server.batch_scores:  # it keeps our timestamps: one look-up
            with stage("reading existing scores"):
                self.known.in_langfuse, n = find_scored_task(
                    self.lf_cfg, o.score_name, self.window.start, lookup_end, self.tuning,
                    o.observations,
                )  # fmt: skip
            r.langfuse_requests += n

    def read_ledger(self, lookup_end: datetime, needs_values: bool) -> None:
        try:
            self.ledger = Ledger.of(self.lf_cfg, self.tuning, self.opts.score_name)
            if needs_values:
                self.known.now = time.time()
                self.known.ledger = self.ledger.read(days_of(self.window.start, lookup_end))
        except Exception as err:  # without it a re-run within the read lag may pay again
            self.logger.warning("could not read the score ledger: %s", describe(err))
            self.report.warnings.append(f"score ledger unavailable: {describe(err)}")
            self.ledger = None

    # --- per chunk ---------------------------------------------------------------------------

    def pages(self) -> Iterator[Page]:
        """The window's traces, a page (one chunk) at a time, newest first."""
        r, o = self.report, self.opts
        guard = CursorGuard("reading traces")
        cursor: str | None = None
        kinds: dict[str, Any] | None = None  # how child observations are found: page 1 asks
        lookup = o.score_name if not self.server.batch_scores and not o.rescore else None
        page_no = 0
        while True:
            page_no += 1
            with stage(f"reading traces (page {page_no})"):
                page = fetch_page_task(
                    self.lf_cfg, self.window, cursor, page_no, self.tuning, self.server,
                    o.environment, kinds, lookup, o.observations,
                )  # fmt: skip
            r.langfuse_requests += page.requests
            kinds = page.kinds if page.kinds is not None else kinds
            if kinds:
                r.generations_by_trace_id = kinds.get("GENERATION") == "trace_ids"
            self.project_id = self.project_id or page.project_id
            self.known.in_langfuse |= page.scored or {}
            yield page
            self.progress.update(min((rec.start_time for rec in page.records), default=None))
            cursor = guard.next(page.cursor, page.rows)
            if cursor is None:
                return

    def select(self, page: Page) -> list[TraceRecord]:
        """New units of the page that are not scored yet (or are re-scored), sampled."""
        fresh = []
        for rec in page.records:  # a row repeated, on this page or an earlier one, counts once
            if rec.trace_id not in self.seen:
                self.seen.add(rec.trace_id)
                fresh.append(rec)
        sel = select(
            fresh, known=self.known, observations=self.opts.observations,
            rescore=self.opts.rescore, sample_rate=self.opts.sample_rate,
        )  # fmt: skip
        self.report.fetched += sel.units
        self.values |= sel.values
        self.record(sel.outcomes)
        return sel.todo

    def pair(self, records: list[TraceRecord], no: int) -> tuple[Chunk, list[Pair]]:
        """Prompt and response per unit; what TLM needs to score, within ``max_traces``."""
        r, o = self.report, self.opts
        paired = build_pairs_task(bulk(records), self.tuning, no) if records else None
        pairs = paired.pairs if paired else []
        if paired:
            self.record(paired.skipped)
            r.count_sources(p.source for p in pairs)
        again, fresh = split_resends(pairs, self.known, o.rescore)
        room = None if o.max_traces is None else o.max_traces - self.selected
        fresh, over = cap(fresh, room)
        r.capped = r.capped or bool(over)
        self.record(over)
        self.selected += len(fresh)
        if o.dry_run:
            r.would_score += len(fresh) + len(again)
            r.would_score_chars += sum(len(p.prompt) + len(p.response) for p in fresh)
        else:
            r.tlm_requests += len(fresh)
        return Chunk(no, len(fresh), again), fresh

    @contextmanager
    def scoring(self) -> Iterator[Scoring]:
        """One TLM client for the run (its concurrency carries over from chunk to chunk); on
        the way out every chunk still at TLM lands, whatever stopped the loop."""
        with self.engine() as engine:
            at_tlm = Scoring(engine, self.land, self.tuning.chunks_in_flight)
            try:
                yield at_tlm
            except BaseException:
                self.late_errors = at_tlm.drain()  # listed after the failure on its way
                raise
            finally:
                self.report.tlm_slot_wait_s = round(engine.slot_wait_s, 1) if engine else 0.0
            errors = at_tlm.drain()
            if errors:
                raise StageError("; ".join(errors))
        r = self.report
        if r.tlm_requests and self.scored_any is False:
            reasons = sorted(r.failed_to_score, key=lambda k: -len(r.failed_to_score[k]))
            raise StageError(
                f"TLM scored none of {r.tlm_requests} items: {reasons[0] if reasons else '?'}"
            )

    def engine(self) -> AbstractContextManager[TLMEngine | None]:
        if self.opts.dry_run or self.tlm_cfg is None:
            return nullcontext()
        t = self.tuning
        shared = None
        if t.tlm_concurrency_limit:
            shared = SharedLimit(
                t.tlm_concurrency_limit, t.tlm_slot_block, t.tlm_slot_lease_s,
                UUID(str(flow_run.id)) if flow_run.id else None, self.logger,
            )  # fmt: skip
        return TLMEngine(
            self.tlm_cfg, quality_preset=self.opts.quality_preset,
            timeout_s=t.tlm_timeout_s, shared=shared,
        )  # fmt: skip

    def land(self, chunk: Chunk) -> None:
        """A chunk's scores (and its re-sends) go to Langfuse."""
        scored: list[Scored] = []
        if chunk.future is not None:
            result = chunk.future.result()
            self.record(result.failed)
            scored = result.scored
            self.tlm_health(result, chunk.pairs)
        if chunk.again:
            self.report.resent += len(chunk.again)
            self.logger.info(
                "chunk %d: re-sending %d scores paid for earlier that Langfuse does not show",
                chunk.no, len(chunk.again),
            )  # fmt: skip
        if scored or chunk.again:
            self.upload(chunk.again + scored, chunk.no)

    def tlm_health(self, result: ScoreResult, n: int) -> None:
        """A refused key or a failed call stops the run; so do N chunks in a row with no score."""
        if result.fatal:
            raise StageError(result.fatal)
        any_scored = not result.all_failed
        fatal = result.failed[0].why if result.all_failed and result.failed else None
        self.scored_any = bool(self.scored_any) or any_scored
        self.failed_chunks = 0 if any_scored else self.failed_chunks + 1
        if self.failed_chunks >= self.tuning.tlm_down_after_chunks:
            raise StageError(
                f"TLM scored nothing in {self.failed_chunks} chunks in a row "
                f"({fatal or 'every item failed'}): stopping"
            )
        if not any_scored:
            self.logger.warning("TLM scored none of the %d items of this chunk; going on", n)

    def upload(self, items: list[Scored], no: int) -> None:
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
            up = upload_task(bulk(items), self.lf_cfg, spec, self.server, self.tuning, no)
        except Exception as err:  # never lose track of a scored unit
            bucket, why = Bucket.FAILED_TO_UPLOAD, describe(err)
            self.record([outcome_for(s.pair, bucket, Reason.UPLOAD_ERROR, why) for s in items])
            self.remember(items, set())
            raise StageError(f"writing scores failed in chunk {no}: {why}") from err
        self.server = up.server
        r.langfuse_requests += up.requests
        r.labels_failed += up.labels_failed
        r.read_back += up.read_back
        self.record(up.uploaded + up.failed)
        self.remember(items, {x.key for x in up.uploaded})
        if up.failed and not up.uploaded:
            raise StageError(
                f"writing scores failed: {self.server.label} took none of the "
                f"{len(up.failed)} scores of chunk {no}: {up.failed[0].why}"
            )

    # --- bookkeeping ------------------------------------------------------------------------

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
                kind = "OBSERVATION" if o.observation_id else "TRACE"
                self.low[o.key] = LowTrust(value, o.observation_id or o.trace_id, kind)

    def metadata(self) -> dict[str, Any]:
        # small on purpose: it is sent with every score (1000 scores must fit one 1 MB POST)
        return {
            "evaluator": f"langfuse-tlm-evals {project_version()}",
            "tlm_quality_preset": self.opts.quality_preset,
            "tlm_model": DEFAULT_MODEL,
            "prefect_flow_run_id": str(flow_run.id) if flow_run.id else None,
        }

    def remember(self, items: list[Scored], accepted: set[str]) -> None:
        """Record what was written (and what was not) for the runs that follow."""
        name = self.opts.score_name
        by_day: LedgerRows = {}
        for s in items:
            p = s.pair
            day = p.start_time.astimezone(UTC).date()
            if p.key in accepted:
                self.accepted[p.key] = (score_id(p.trace_id, name, p.observation_id), day)
            by_day.setdefault(day, {})[p.key] = (s.score, s.explanation, p.key not in accepted)
        self.write_ledger(by_day)

    def write_ledger(self, by_day: LedgerRows) -> None:
        if self.ledger is None:
            return
        self.ledger_writes += 1
        try:
            self.ledger.write(by_day, run_id=self.run_id, chunk=self.ledger_writes)
        except Exception as err:
            self.logger.warning("could not write the score ledger: %s", describe(err))
            self.report.warnings.append(f"score ledger not written: {describe(err)}")

    # --- after the chunks ---------------------------------------------------------------------

    def review(self) -> None:
        """Queue the low-trust units for human review, once."""
        r, o = self.report, self.opts
        if not o.review_queue or o.dry_run or not self.low:
            return
        objects = [
            (x.object_id, x.object_type)
            for x in review_order(list(self.low.values()), o.review_lowest_n)
        ]
        # a run that only scored fresh units cannot have queued them before; anything scored
        # earlier (a re-run, a rescore, a crash after upload) is checked against the queue
        earlier = o.rescore or any(k in self.values for k in self.low)
        with stage("adding traces to the review queue"):
            result = review_task(
                self.lf_cfg, o.review_queue, list(self.config_ids.values()), objects, earlier,
                self.tuning,
            )  # fmt: skip
        r.langfuse_requests += result.requests
        r.queued_for_review = result.added
        r.already_in_review = result.already_queued

    def failed(self, err: Exception) -> None:
        """Whatever failed, the report of what landed comes back with the error."""
        known = isinstance(err, StageError | ConfigError)
        self.report.errors.append(str(err) if known else f"unexpected {describe(err)}")
        self.report.errors += [e for e in self.late_errors if e not in self.report.errors]

    def finish(self) -> EvalReport:
        """Read the scores back, rank the lowest, check the accounting."""
        r = self.report
        try:
            self.verify()
        except Exception as err:
            r.warnings.append(f"reading the scores back failed: {describe(err)}")
        r.lowest = self.lowest.rows(self.link)
        if self.project_id:
            r.langfuse_traces_url = f"{self.ui_base()}/project/{self.project_id}/traces"
        price = self.tuning.price_per_1k_tokens
        if r.dry_run and price is not None:
            r.estimated_cost_usd = round(r.would_score_chars / 4 / 1000 * price, 4)
        if r.accounted() != r.fetched:  # the invariant; a bug if it ever trips
            r.errors.append(f"accounting error: {r.accounted()} outcomes for {r.fetched} traces")
        self.logger.info(
            "window %s → %s: %s", r.window_start.isoformat(timespec="seconds"),
            r.window_end.isoformat(timespec="seconds"),
            ", ".join(f"{k} {v}" for k, v in r.counts().items() if v),
        )  # fmt: skip
        return r

    def link(self, trace_id: str, observation_id: str | None = None) -> str | None:
        if not self.project_id:
            return None
        url = f"{self.ui_base()}/project/{self.project_id}/traces/{trace_id}"
        return f"{url}?observation={observation_id}" if observation_id else url

    def ui_base(self) -> str:
        return (self.tuning.langfuse_ui_url or self.lf_cfg.base_url).rstrip("/")

    def verify(self) -> None:
        """Read this run's scores back until all show or ``verify_wait_s`` is up; the missing
        ones are marked in the ledger so the next run re-sends them without paying TLM."""
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
        if not missing:
            return
        self.logger.warning(
            "%d of %d accepted scores did not show in Langfuse within %.0f s: the next run "
            "re-sends them", len(missing), len(self.accepted), wait,
        )  # fmt: skip
        if self.ledger is None:
            return
        days = {self.accepted[k][1] for k in missing}
        entries = self.ledger.read(sorted(days))
        by_day: LedgerRows = {}
        for key in missing:
            e = entries.get(key)
            if e is not None:
                by_day.setdefault(self.accepted[key][1], {})[key] = (e.value, e.comment, True)
        self.write_ledger(by_day)
