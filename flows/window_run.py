"""The stages of one window run, in order; the flow (flows/evaluate_traces.py) calls them. Each
stage is a Prefect task in tasks/, called here with the options it uses. What the run knows of
the stream's scores is its ScoreBook; where paid work goes, its Landing; what it found, its
Tally."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from datetime import timedelta
from uuid import UUID

from prefect import get_run_logger
from prefect.runtime import flow_run

from flows.landing import Landing, confirm, queue_for_review, score_spec
from flows.options import EvalOptions
from flows.publish import Progress
from flows.reading import Reader
from flows.scoring import Chunk, Scoring, TLMHealth, bulk, chunks_at_tlm, make_engine
from flows.settings import Settings, open_stream
from flows.spending import Spending
from flows.window_lock import Held, window_lock
from tasks.clock import SYSTEM, Clock
from tasks.config import without_credentials
from tasks.errors import StageError, TrustEvalError, stage
from tasks.fetch import find_scored_task, scores_in_range
from tasks.langfuse_api import Access, RequestCount
from tasks.models import Pair, TraceRecord, Window
from tasks.pairs import build_pairs_task
from tasks.report import EvalReport, Tally, trace_url
from tasks.retry import describe
from tasks.review import ensure_configs_task
from tasks.score import TLMEngine
from tasks.scorebook import ScoreBook
from tasks.select import cap, sampled, units_in
from tasks.stream import Stream
from tasks.windows import days_touched, whole_days


def new_report(window: Window, opts: EvalOptions, run_id: str | None) -> EvalReport:
    return EvalReport(
        window_start=window.start,
        window_end=window.end,
        tags=list(window.tags),
        score_name=opts.score_name,
        scope=opts.scope,
        dry_run=opts.dry_run,
        low_trust_threshold=opts.low_trust_threshold,
        flow_run_id=run_id,
        rag_evals=opts.rag_evals,
    )


class WindowRun:
    """One window run: the stages in order, and the report they fill."""

    def __init__(
        self, window: Window, settings: Settings, opts: EvalOptions, clock: Clock = SYSTEM
    ) -> None:
        self.window, self.settings, self.opts, self.clock = window, settings, opts, clock
        self.tuning = settings.tuning
        self.lf = Access(settings.langfuse, settings.tuning, RequestCount(), clock)
        self.run_id = str(flow_run.id) if flow_run.id else None
        self.report = new_report(window, opts, self.run_id)
        self.logger = get_run_logger()
        self.tally = Tally(self.report, self.tuning.lowest_n)
        self.progress = Progress(window)
        self.health = TLMHealth(self.tuning.tlm_down_after_chunks)
        self.spend = Spending(opts, self.tuning, self.report)  # budget; cost per stage
        self.stream: Stream | None = None  # these once connected
        self.book: ScoreBook
        self.landing: Landing
        self.reader: Reader
        self.sent = 0  # units sent (or, in a dry run, that would be sent) to TLM
        self.late_errors: list[str] = []  # failures while landing after the run had failed
        self.engine: TLMEngine | None = None
        self.stopping: str | None = None  # why the run must stop sending (a lost lock)

    def warn(self, text: str) -> None:
        self.logger.warning("%s", text)
        self.report.warnings.append(text)

    # --- before any TLM call ---------------------------------------------------------------

    def connect(self) -> Stream:
        """The server (its version picks the write path) and the stream (its project)."""
        o, t = self.opts, self.tuning
        server, self.stream = open_stream(self.lf, self.window.tags, o.score_name, self.logger)
        self.report.langfuse_server = server.label
        run = self.run_id or "local"
        self.book = ScoreBook.open(
            self.stream.scores_key, o.score_name, t, run_id=run, warn=self.warn, clock=self.clock,
            plan=o.plan,
        )  # fmt: skip
        spec = score_spec(o, {}, self.run_id, t.comment_max_chars)
        self.landing = Landing(
            self.lf, spec, server, self.book, self.tally, self.health, self.logger
        )
        self.reader = Reader(self.lf, self.window, o, server, self.book, self.report,
                             self.progress, self.logger)  # fmt: skip
        self.logger.info("%s (%s) takes %s", server.label, self.lf.cfg.shown_url, server.how)
        return self.stream

    def locked(self) -> AbstractContextManager[Held | None]:
        """The window lock (none for a dry run: it pays nothing)."""
        if self.opts.dry_run or self.stream is None:
            return nullcontext(None)
        t = self.tuning
        return window_lock(
            self.stream,
            self.window.start,
            self.window.end,
            lease_s=t.lock_lease_s,
            timeout_s=t.lock_timeout_s,
            clock=self.clock,
            on_lost=self.stop,
        )

    def stop(self, why: str) -> None:
        """Stop sending at once (from any thread); the loop then fails the run with ``why``."""
        self.stopping = self.stopping or why
        if self.engine is not None:
            self.engine.halt(why, self.tuning.stop_grace_s)

    def prepare(self) -> None:
        """The score configs, and what is already scored (the ledger, then Langfuse)."""
        o, t, w = self.opts, self.tuning, self.window
        self.progress.update(w.end)
        review = o.review_score if o.review_queue else None  # its queue offers the verdict
        if not o.dry_run and (o.score_config or o.label_score or review):
            with stage("ensuring the score configs"):
                name = o.score_name if o.score_config else None
                plan = o.plan if o.score_config else None
                ids = ensure_configs_task(self.lf, name, o.label_name, review, plan)
            self.landing.spec = score_spec(o, ids, self.run_id, t.comment_max_chars)
        end = w.end + timedelta(seconds=t.trace_max_duration_s if o.observations else 0)
        if o.rescore and not o.review_queue:  # a re-run's review needs the values
            return
        self.book.load(days_touched(w.start, end))
        if not self.landing.server.batch_scores:  # it stamps scores: looked up by id, per page
            return
        if whole_days(w.start, end) == days_touched(w.start, end) and self.book.agrees(
            lambda: scores_in_range(self.lf.calls(self.logger), o.score_name, w.start, end)
        ):
            return  # Langfuse holds what the ledger says runs wrote: no look-up needed
        with stage("reading existing scores"):
            self.book.saw_all(
                find_scored_task(self.lf, self.book.names, w.start, end, o.observations)
            )

    # --- per chunk ---------------------------------------------------------------------------

    def pages(self) -> Iterator[list[TraceRecord]]:
        """The window's new traces, a page (one chunk) at a time, newest first."""
        return self.reader.pages()

    def select(self, records: list[TraceRecord]) -> list[TraceRecord]:
        """The units of a page that are not scored yet (or are re-scored), sampled."""
        if self.stopping:
            raise StageError(self.stopping)
        o = self.opts
        units, none, n = units_in(records, o.observations)
        self.report.fetched += n
        self.tally.add(none)
        triage = self.book.triage(
            units, rescore=o.rescore, keep=lambda k: sampled(k, o.sample_rate)
        )
        self.tally.values |= triage.values
        self.tally.add(triage.outcomes)
        return triage.todo

    def pair(
        self, records: list[TraceRecord], no: int, at_tlm: Scoring | None = None
    ) -> tuple[Chunk, list[Pair]]:
        """Prompt and response per unit; what TLM needs to score, within ``max_traces`` and
        the budget (``at_tlm``: the chunks a budget may wait for)."""
        r, o = self.report, self.opts
        records = self.reader.children(records, no)
        paired = build_pairs_task(bulk(records), self.tuning, no) if records else None
        pairs = paired.pairs if paired else []
        if paired:
            self.tally.add(paired.skipped)
            r.count_sources(p.source for p in pairs)
        again, fresh, done = self.book.split(pairs, rescore=o.rescore)
        self.tally.values |= done.values
        self.tally.add(done.outcomes)
        fresh, over = cap(fresh, None if o.max_traces is None else o.max_traces - self.sent)
        r.capped = r.capped or bool(over)
        self.tally.add(over)
        fresh, left = self.spend.admit(fresh, no, at_tlm)
        self.tally.add(left)
        self.sent += len(fresh)
        r.count_sent(fresh, again, o.plan)
        return Chunk(no, len(fresh), again), fresh

    def scoring(self) -> AbstractContextManager[Scoring]:
        """One TLM engine for the run (its concurrency carries over from chunk to chunk); on
        the way out every chunk still at TLM lands, whatever stopped the loop."""
        cfg, t = self.settings.tlm, self.tuning
        if not self.opts.dry_run and cfg is not None:
            run = UUID(self.run_id) if self.run_id else None
            self.engine = make_engine(cfg, t, self.opts.quality_preset, run, self.logger,
                                      self.opts.plan, self.opts.explain_below)  # fmt: skip
            if self.stopping:
                self.engine.halt(self.stopping)
        return chunks_at_tlm(
            self.engine,
            self.spend.landing(self.landing.land, self.book),
            t.chunks_in_flight,
            self.health,
            self.report,
            self.late_errors,
            t.stop_grace_s,
        )

    # --- after the chunks ---------------------------------------------------------------------

    def review(self) -> None:
        if self.stopping:  # the loop may have ended before the stop: say why nonetheless
            raise StageError(self.stopping)
        queue_for_review(self.opts, self.tally, self.landing.spec.config_ids, self.lf)

    def failed(self, err: Exception) -> None:
        """Whatever failed, the report of what landed comes back with the error."""
        named = isinstance(err, TrustEvalError)
        self.report.errors.append(str(err) if named else f"unexpected {describe(err)}")
        self.report.errors += [e for e in self.late_errors if e not in self.report.errors]

    def finish(self) -> EvalReport:
        """Read the scores back, rank the lowest, check the accounting."""
        r, t, stream = self.report, self.tuning, self.stream
        if stream is not None and self.book.accepted and t.verify_wait_s > 0:
            confirm(self.book, self.lf.calls(self.logger), t.verify_wait_s, r)
        ui = without_credentials(t.langfuse_ui_url or self.lf.cfg.base_url).rstrip("/")
        if stream is not None:
            r.lowest = self.tally.lowest.rows(lambda *ids: trace_url(ui, stream.project, *ids))
            r.langfuse_traces_url = f"{ui}/project/{stream.project}/traces"
        r.close(self.lf.count.value, t.price_per_1k_tokens, t.preset_cost(self.opts.quality_preset))
        self.spend.close(r)
        counts = ", ".join(f"{k} {v}" for k, v in r.counts().items() if v)
        self.logger.info("window %s → %s: %s", r.window_start, r.window_end, counts)
        return r
