"""One CLI call around its run: the Prefect server it chose, Langfuse asked before anything
waits for Prefect, a large run confirmed, SIGTERM taken as Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from types import FrameType
from typing import TYPE_CHECKING

from flows import prefect_server
from flows.options import EvalOptions
from tasks.config import LangfuseSettings, Tuning, no_ceiling_here
from tasks.errors import ConfigError, TrustEvalError
from tasks.windows import LONG_SPAN

if TYPE_CHECKING:
    from tasks.langfuse_api import Access

LOG = logging.getLogger("flows.cli")


class Session:
    """One CLI call: when it started, what it prints, the Prefect server it chose."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.prefect: prefect_server.PrefectApi | None = None

    @staticmethod
    def say(text: str) -> None:
        print(text, flush=True)

    def start_prefect(self, tuning: Tuning) -> prefect_server.PrefectApi:
        """Choose the server; an embedded one starts while Langfuse is asked."""
        limit = tuning.tlm_concurrency_limit
        self.prefect = prefect_server.choose(
            tuning.local_prefect_api or None, self.say,
            no_embedded=no_ceiling_here(limit) if limit else None,
        )  # fmt: skip
        return self.prefect

    def ready(self) -> None:
        assert self.prefect is not None
        self.prefect.ready(self.say)

    def reach_langfuse(
        self, cfg: LangfuseSettings, tuning: Tuning, tags: list[str], score_name: str
    ) -> Access:
        """Langfuse's version and the keys' project, before anything waits for Prefect (a
        shared limit lives on the Prefect server: then it is checked first)."""
        if tuning.langfuse_rate_limit or tuning.tlm_concurrency_limit:
            self.ready()
            from tasks.budgets import check_limits

            tuning = check_limits(tuning)
        from flows.settings import open_stream
        from tasks.langfuse_api import Access

        access = Access(cfg, tuning)
        first = time.monotonic() - self.started
        server, stream = open_stream(access, tags, score_name, LOG)
        took = time.monotonic() - self.started - first
        self.say(
            f"{server.label} at {cfg.base_url} (project {stream.project}): first call "
            f"{first:.1f} s after start, answered in {took:.1f} s"
        )
        return access

    def confirm(self, args: argparse.Namespace, access: Access, start: datetime, end: datetime,
                tags: list[str], opts: EvalOptions, days: int = 1) -> None:  # fmt: skip
        """A large run asks first: a count of the tagged traces, not a dry run."""
        limit = access.tuning.confirm_items
        if opts.dry_run or args.yes:
            return
        from tasks.estimate import count_traces

        traces = count_traces(access.calls(LOG), start, end, tags, opts.environment)
        items = math.ceil(traces * opts.sample_rate)
        if opts.max_traces is not None:
            items = min(items, opts.max_traces * days)
        if items <= limit:
            return
        what = (
            f"this run may send up to {items:,} traces to TLM at preset "
            f"{opts.quality_preset} ({traces:,} carry the tag(s) in the range; those already "
            f"scored are not paid again), over TRUST_EVAL_CONFIRM_ITEMS={limit:,}"
        )
        if sys.stdin is None or not sys.stdin.isatty():
            raise ConfigError(
                f"{what}: add --yes to go ahead (or --dry-run to see the cost); nobody can be "
                "asked, stdin is not a terminal"
            )
        answer = input(f"{what[0].upper()}{what[1:]}. Go ahead? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            raise Declined("nothing was sent to TLM")

    def warn_span(self, start: datetime, end: datetime) -> None:
        if end - start >= LONG_SPAN:
            self.say(
                f"warning: {(end - start).days} days at once: a large run (--dry-run shows "
                "what it would cost; a backfill runs the days as separate runs)"
            )


class Declined(TrustEvalError):
    """The user answered no."""


@contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM stops the CLI as Ctrl-C does (a run in progress maps both itself)."""

    def handle(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


@contextmanager
def signals_ignored() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait while the CLI hands its logs to the server and stops it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
