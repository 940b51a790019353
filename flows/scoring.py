"""The chunks of a window run at TLM: one engine for the run, several chunks in flight, each
landed as soon as TLM has finished it, and the rule that says TLM is down."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TypeVar, cast
from uuid import UUID

from prefect import get_run_logger
from prefect.futures import PrefectFuture, as_completed
from prefect.utilities.annotations import quote

from flows.stopping import critical
from tasks.config import RunLogger, TLMSettings, Tuning
from tasks.errors import StageError
from tasks.evals import EvalPlan
from tasks.models import Bucket, Pair, Scored
from tasks.report import EvalReport
from tasks.retry import describe
from tasks.score import ScoreResult, SharedLimit, TLMEngine, score_task

T = TypeVar("T")


def bulk(value: T) -> T:
    """A big task input that Prefect passes through without walking it (~15% of CPU saved)."""
    return cast(T, quote(value))


def make_engine(
    cfg: TLMSettings,
    tuning: Tuning,
    preset: str,
    run_id: UUID | None,
    logger: RunLogger,
    plan: EvalPlan | None = None,
    explain_below: float | None = None,
) -> TLMEngine:
    """The run's TLM engine; with a shared ceiling, its slots are leased to this run."""
    shared = None
    if tuning.tlm_concurrency_limit:
        shared = SharedLimit(
            tuning.tlm_concurrency_limit, tuning.tlm_slot_block, tuning.tlm_slot_lease_s,
            run_id, logger,
        )  # fmt: skip
    return TLMEngine(
        cfg, quality_preset=preset, timeout_s=tuning.tlm_timeout_s, shared=shared,
        rate_limit_wait_s=tuning.tlm_rate_limit_wait_s, plan=plan, explain_below=explain_below,
    )  # fmt: skip


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
    land: Callable[[Chunk, ScoreResult | None], None]
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
            self.land_one(ready)

    def land_all(self) -> None:
        """Land every chunk at TLM now (a budget waits for what they cost)."""
        while self.at_tlm:
            self.land_one(self.at_tlm[0])

    def drain(self) -> list[str]:
        """Land every chunk still at TLM (the scores paid for still land); their errors."""
        errors: list[str] = []
        while self.at_tlm:
            chunk = self.at_tlm[0]
            try:
                self.land_one(chunk)
            except Exception as err:
                errors.append(str(err) if isinstance(err, StageError) else describe(err))
                get_run_logger().warning("landing chunk %d failed: %s", chunk.no, errors[-1])
        return list(dict.fromkeys(errors))

    def land_one(self, chunk: Chunk) -> None:
        """Wait for the chunk's scores (a signal may cut that wait: the chunk then stays, and
        lands in the drain), then land it whole and let it go (``critical``: a signal waits)."""
        result = chunk.future.result() if chunk.future is not None else None
        with critical():
            try:
                self.land(chunk, result)
            finally:
                self.at_tlm.remove(chunk)


@contextmanager
def chunks_at_tlm(
    engine: TLMEngine | None,
    land: Callable[[Chunk, ScoreResult | None], None],
    limit: int,
    health: TLMHealth,
    report: EvalReport,
    late_errors: list[str],
    grace_s: float,
) -> Iterator[Scoring]:
    """The chunks at TLM for one run; on the way out every chunk still there lands, whatever
    stopped the loop (its errors join ``late_errors`` when something else already failed).
    When the run is stopped (Ctrl-C, SIGTERM, a cancel), nothing more is sent, and what is at
    TLM has ``grace_s`` to come back before it is given up: what came back lands."""
    with engine if engine is not None else nullcontext():
        at_tlm = Scoring(engine, land, limit)
        try:
            yield at_tlm
            errors = at_tlm.drain()  # (a signal may cut in between two chunks: see below)
        except BaseException as err:
            if engine is not None and not isinstance(err, Exception):
                engine.halt(f"the run was stopped ({type(err).__name__})", grace_s)
            late_errors += at_tlm.drain()  # listed after the failure on its way
            raise
        finally:
            report.tlm_slot_wait_s = round(engine.slot_wait_s, 1) if engine else 0.0
            if engine is not None and engine.pacing.rate_limited:
                report.warnings.append(
                    f"TLM answered {engine.pacing.rate_limited} calls 429 without Retry-After: "
                    f"its calls paused {engine.pacing.paused_s:.0f} s in all "
                    "(TRUST_EVAL_TLM_RATE_LIMIT_WAIT_S)"
                )
        if errors:
            raise StageError("; ".join(errors))
    if report.tlm_requests and health.scored_any is False:
        groups = report.failed_to_score
        reasons = sorted(groups, key=lambda k: -len(groups[k]))
        why = report.why(Bucket.FAILED_TO_SCORE, reasons[0]) if reasons else "?"
        raise StageError(f"TLM scored none of {report.tlm_requests} items: {why}")


@dataclass
class TLMHealth:
    """A refused key or a failed call stops the run; so do ``down_after`` chunks in a row in
    which TLM scored nothing."""

    down_after: int
    failed_chunks: int = 0  # chunks in a row in which TLM scored nothing
    scored_any: bool | None = None  # None: TLM not asked yet

    def check(self, result: ScoreResult, n: int, logger: RunLogger) -> None:
        if result.fatal:
            raise StageError(result.fatal)
        any_scored = not result.all_failed
        fatal = result.failed[0].why if result.all_failed and result.failed else None
        self.scored_any = bool(self.scored_any) or any_scored
        self.failed_chunks = 0 if any_scored else self.failed_chunks + 1
        if self.failed_chunks >= self.down_after:
            raise StageError(
                f"TLM scored nothing in {self.failed_chunks} chunks in a row "
                f"({fatal or 'every item failed'}): stopping"
            )
        if not any_scored:
            logger.warning("TLM scored none of the %d items of this chunk; going on", n)
