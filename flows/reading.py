"""What a window run reads: its traces, a page at a time (newest first), each trace once and in
the window where its first root observation began; and the child observations (generations,
retrieved documents) of the traces it is about to pair, never of those already scored.

A page too heavy for Langfuse (422 "Request timed out") is asked for again at half the size,
from the same cursor, down to ``tasks.fetch.MIN_PAGE``; the pages after it keep the size that
passed. A window that comes back empty is checked once against the server's legacy tables (a
server left writing only those)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from flows.options import EvalOptions
from flows.publish import Progress
from flows.scoring import bulk
from tasks.config import RunLogger
from tasks.errors import ConfigError, stage
from tasks.fetch import Page, children_task, fetch_page_task, legacy_traces, roots_before_task
from tasks.langfuse_api import Access, CursorGuard, Server
from tasks.models import TraceRecord, Window
from tasks.report import EvalReport
from tasks.scorebook import ScoreBook
from tasks.select import first_sight


class Reader:
    def __init__(
        self,
        lf: Access,
        window: Window,
        opts: EvalOptions,
        server: Server,
        book: ScoreBook,
        report: EvalReport,
        progress: Progress,
        logger: RunLogger,
    ) -> None:
        self.lf, self.window, self.opts, self.server = lf, window, opts, server
        self.book, self.report, self.progress, self.logger = book, report, progress, logger
        self.limit = lf.tuning.page_size  # traces a page (halved while Langfuse times out)
        self.kinds: dict[str, Any] | None = None  # how children are found: the first asks
        self.seen: set[str] = set()  # trace ids: a row repeated across pages counts once
        self.earlier: set[str] | None = None  # traces that began before the window

    def pages(self) -> Iterator[list[TraceRecord]]:
        """The window's new traces, a page at a time."""
        o = self.opts
        guard, cursor = CursorGuard("reading traces"), None
        lookup = self.book.names if not self.server.batch_scores and not o.rescore else None
        for no in itertools.count(1):
            page = self.page(cursor, no, lookup)
            if no == 1 and not page.records:
                self.legacy_check()
            self.book.saw_all(page.scored or {})
            yield self.own(first_sight(page.records, self.seen))
            self.progress.update(min((rec.start_time for rec in page.records), default=None))
            with stage(f"reading traces (page {no})"):
                cursor = guard.next(page.cursor, page.rows, [r.trace_id for r in page.records])
            if cursor is None:
                return

    def page(self, cursor: str | None, no: int, lookup: tuple[str, ...] | None) -> Page:
        o = self.opts
        with stage(f"reading traces (page {no})"):
            page = fetch_page_task(
                self.lf, self.window, cursor, no, self.server, self.limit, o.environment,
                self.kinds, lookup, o.observations,
            )  # fmt: skip
        self.limit = page.limit  # the next pages start at the size that passed
        self.found(page.kinds)
        return page

    def children(self, records: list[TraceRecord], no: int) -> list[TraceRecord]:
        """The traces about to be paired, with their child observations (in observation scope
        they came with their page)."""
        if self.opts.observations or not records:
            return records
        with stage(f"reading child observations (chunk {no})"):
            records, kinds = children_task(
                self.lf, self.window, bulk(records), self.kinds, no, self.opts.environment
            )
        self.found(kinds)
        return records

    def found(self, kinds: dict[str, Any] | None) -> None:
        self.kinds = kinds if kinds is not None else self.kinds
        self.report.generations_by_trace_id = (self.kinds or {}).get("GENERATION") == "trace_ids"

    def own(self, records: list[TraceRecord]) -> list[TraceRecord]:
        """The records whose trace began in the window: a trace with a root observation before
        the window's start (roots either side of a midnight) belongs to the earlier window, so
        it is paid for once, and has one score."""
        near = self.window.start + timedelta(seconds=self.lf.tuning.trace_max_duration_s)
        if not any(r.start_time < near for r in records):
            return records
        if self.earlier is None:
            with stage("reading traces that began before the window"):
                self.earlier = roots_before_task(self.lf, self.window, self.opts.environment)
        mine = [r for r in records if r.trace_id not in self.earlier]
        if len(mine) < len(records):
            self.logger.info(
                "%d traces began before the window: their earlier window scores them",
                len(records) - len(mine),
            )
        return mine

    def legacy_check(self) -> None:
        """An empty window, on a server that writes only its legacy tables, is an error."""
        n = legacy_traces(self.lf.calls(self.logger), self.window)
        if n:
            raise ConfigError(
                f"{self.server.label} at {self.lf.cfg.shown_url} holds {n} traces of this "
                "window in its legacy tables but none in the v4 tables that "
                "/api/public/v2/observations reads: the server runs with "
                "LANGFUSE_MIGRATION_V4_WRITE_MODE=legacy; set it to dual (then backfill the "
                "events tables) to evaluate its traces"
            )
