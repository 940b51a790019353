"""Score stage: TLM scores with explanations, a timeout on every item.

:class:`TLMEngine` keeps ONE TLM client for a whole run, on its own thread and event loop, so
that the client's adaptive concurrency carries over from chunk to chunk and a chunk's items run
alongside the slow tail of the chunks before it. A per-item TLM error becomes a recorded failure,
never a score; ``ScoreResult.fatal`` is set only when TLM refused the key or the call as a whole
failed, and ``all_failed`` lets the flow decide when TLM is down.

Two of TLM's answers the client mishandles are corrected where every call passes, the client's
rate handler (:func:`paced_handler`, installed in place of its own): a 429 without
``Retry-After`` (which the client reads as "retry now", without end) pauses every call of the
run for at least ``TRUST_EVAL_TLM_RATE_LIMIT_WAIT_S`` (:class:`Pacing`); and a 401 in any other
shape than the API's own ``{"code": "invalid_api_key"}`` is raised as the client's
``AuthError``, so it is a refused key (not retried, fatal) like the API's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any
from uuid import UUID

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from tasks.budgets import TLMSlots
from tasks.config import RunLogger, TLMSettings, check_preset
from tasks.evals import EvalPlan, make_rag, rag_cause, read_criteria, read_rag, tlm_options
from tasks.explain import ExplainCount, explain
from tasks.failures import Reason
from tasks.models import Bucket, Outcome, Pair, Scored, outcome_for
from tasks.retry import JITTER

if TYPE_CHECKING:  # imported at run time only where used: it reads its base URL at import
    from cleanlab_tlm import TLM
    from cleanlab_tlm.tlm import TLMScore

MAX_IN_FLIGHT = 512  # cleanlab-tlm's own cap (TlmRateHandler.MAX_CONCURRENT_REQUESTS)
# an item that timed out on the client keeps its slot (of the run, and of the shared ceiling)
# this much longer: TLM stops working on it at the same timeout, sent as options.max_timeout,
# but the server's clock started a little after the client's
TIMEOUT_SETTLE_S = 1.0
DOWN_AFTER = 8  # at least this many items in a row timed out or ran out of retries: TLM is down
REFUSED_KEY = "Cleanlab TLM refused the API key: check CLEANLAB_TLM_API_KEY"
FAILED = Bucket.FAILED_TO_SCORE
logger = logging.getLogger("trust.score")


@dataclass(slots=True)
class ScoreResult:
    scored: list[Scored]
    failed: list[Outcome]
    tlm_requests: int  # items sent to TLM (client retries not counted)
    fatal: str | None = None  # TLM refused the key, or the call as a whole failed
    all_failed: bool = False  # pairs were given and none scored (per-item errors)
    explained: ExplainCount = field(default_factory=ExplainCount)  # explain=low_trust calls


def make_tlm(
    cfg: TLMSettings,
    *,
    quality_preset: str,
    timeout_s: float,
    plan: EvalPlan | None = None,
    logged: bool = True,
) -> TLM:
    """The client; ``logged``: every score logs its explanation (else none is asked for)."""
    check_preset(quality_preset, logged)
    # imported here: cleanlab_tlm reads CLEANLAB_API_BASE_URL once, at import
    from cleanlab_tlm import TLM

    return TLM(
        quality_preset=quality_preset,  # type: ignore[arg-type]
        api_key=cfg.api_key.get_secret_value(),
        options=tlm_options(plan, explain=logged),  # type: ignore[arg-type]
        timeout=timeout_s,
        verbose=False,
    )


_WINDOW_MISSING: list[str] = []  # warned once per process


def congestion_window(tlm: object) -> int | None:
    """How many calls the TLM client lets run at once now: its own congestion window (AIMD: 4
    at first, up to 512, halved on 429/503), read from its private rate handler. None when the
    client no longer has it (a warning, once): the engine then sends up to 512 at once."""
    window = getattr(getattr(tlm, "_rate_handler", None), "_congestion_window", None)
    if isinstance(window, int) and window > 0:
        return window
    if tlm is not None and not _WINDOW_MISSING:
        _WINDOW_MISSING.append(type(tlm).__name__)
        logger.warning(
            "cleanlab-tlm's TLM has no _rate_handler._congestion_window any more: up to %d "
            "items go out at once (the client still backs off on 429s)", MAX_IN_FLIGHT,
        )  # fmt: skip
    return None


# --------------------------------------------------------------------------- TLM's answers

PAUSE_CAP_S = 60.0  # the longest pause after 429s without Retry-After, however many in a row


@dataclass
class Pacing:
    """The pause of a run's TLM calls after 429s that carry no ``Retry-After``.

    cleanlab-tlm reads a missing header as "retry after 0 s" and retries at once, without
    limit. Each such 429 makes every call of the run wait until ``resume_at``: at least
    ``floor_s`` from that 429, doubling for each pause that ends in another 429 (up to
    ``PAUSE_CAP_S``), stretched by up to ``JITTER`` at random; a scored item ends the series.
    A 429 whose ``Retry-After`` is at least the floor is left to the client, which waits it.
    """

    floor_s: float
    clock: Callable[[], float] = time.monotonic
    jitter: Callable[[], float] = random.random
    resume_at: float = 0.0
    streak: int = 0  # pauses in a row that ended in another 429
    rate_limited: int = 0  # 429s without a usable Retry-After
    paused_s: float = 0.0  # time the run's calls were held, all pauses together

    def after_429(self, retry_after: float) -> float | None:
        """Record a 429 whose client waits ``retry_after`` s; the length of the pause it
        starts, None when it starts none (a long enough Retry-After, or a pause running)."""
        if retry_after >= self.floor_s:
            return None
        self.rate_limited += 1
        now = self.clock()
        new = now >= self.resume_at  # a pause running: the 429s of calls sent before it
        self.streak += new
        pause = min(self.floor_s * 2 ** (self.streak - 1), PAUSE_CAP_S)
        pause *= 1.0 + JITTER * self.jitter()
        before = max(self.resume_at, now)
        self.resume_at = max(self.resume_at, now + pause)  # every 429 waits at least the floor
        self.paused_s += self.resume_at - before
        return pause if new else None

    def after_answer(self) -> None:
        self.streak = 0

    def wait_s(self) -> float:
        return max(0.0, self.resume_at - self.clock())

    async def wait(self) -> None:
        """Until the pause is over (at once when none runs)."""
        while (wait := self.wait_s()) > 0:
            await asyncio.sleep(wait)


def answer_status(err: BaseException | None) -> int | None:
    """The HTTP status of the TLM answer a client error came from: aiohttp's own error
    carries it; the client's errors do not, but the answer object is a local of the frames
    that raised them."""
    import aiohttp

    if isinstance(err, aiohttp.ClientResponseError):
        return err.status
    tb = err.__traceback__ if err is not None else None
    while tb is not None:
        for value in tb.tb_frame.f_locals.values():
            if isinstance(value, aiohttp.ClientResponse):
                return value.status
        tb = tb.tb_next
    return None


@functools.cache
def paced_handler() -> type[Any]:
    """cleanlab-tlm's rate handler (its AIMD congestion window, kept), which also waits out
    :class:`Pacing` before each call and raises any 401 as ``AuthError`` (imported on first
    use: cleanlab_tlm reads its base URL at import)."""
    from cleanlab_tlm.errors import AuthError, RateLimitError
    from cleanlab_tlm.internal.concurrency import TlmRateHandler

    class PacedRateHandler(TlmRateHandler):
        def __init__(self, pacing: Pacing) -> None:
            super().__init__()
            self.pacing = pacing

        async def __aenter__(self) -> None:
            await self.pacing.wait()
            await super().__aenter__()  # a pause may have begun while this call queued
            await self.pacing.wait()

        async def __aexit__(
            self,
            exc_type: type[BaseException] | None,
            exc: BaseException | None,
            tb: TracebackType | None,
        ) -> bool:
            if isinstance(exc, RateLimitError):
                pause = self.pacing.after_429(exc.retry_after)
                if pause is not None:
                    logger.warning(
                        "TLM answered 429 without Retry-After: its calls pause %.1f s", pause
                    )
            elif exc is None:
                self.pacing.after_answer()
            swallow = bool(await super().__aexit__(exc_type, exc, tb))
            if exc is not None and not isinstance(exc, AuthError) and answer_status(exc) == 401:
                raise AuthError(f"TLM answered HTTP 401 ({type(exc).__name__})") from None
            return swallow

    return PacedRateHandler


def install_pacing(tlm: object, pacing: Pacing) -> bool:
    """Put the paced handler in place of the client's own; False (a warning, once) when the
    client no longer has one where it used to."""
    if not hasattr(tlm, "_rate_handler"):
        if not _HANDLER_MISSING:
            _HANDLER_MISSING.append(type(tlm).__name__)
            logger.warning(
                "cleanlab-tlm's TLM has no _rate_handler any more: a 429 without Retry-After "
                "is retried at once, and a 401 not shaped as the API's own is not a refused key"
            )
        return False
    tlm._rate_handler = paced_handler()(pacing)
    return True


_HANDLER_MISSING: list[str] = []  # warned once per process


def interpret(pair: Pair, result: TLMScore | object) -> Scored | Outcome:
    """One TLM answer as a score, or as a failure when it carries no valid score (the client
    returns a ``TLMScore``; anything else it might hand back is a failure, not a crash)."""
    data: dict[str, Any] = dict(result) if isinstance(result, dict) else {}
    log = data.get("log") if isinstance(data.get("log"), dict) else {}
    assert isinstance(log, dict)
    error = log.get("error")
    score = data.get("trustworthiness_score")
    if error is not None or not isinstance(score, int | float) or isinstance(score, bool):
        message = error.get("message") if isinstance(error, dict) else None
        return outcome_for(pair, FAILED, Reason.TLM_ERROR, message or "no score returned")
    value = float(score)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        return outcome_for(pair, FAILED, Reason.TLM_ERROR, f"score {value!r} outside [0, 1]")
    explanation = log.get("explanation")
    return Scored(
        pair=pair,
        score=value,
        explanation=explanation if isinstance(explanation, str) and explanation else None,
    )


def _auth_error() -> type[BaseException]:
    from cleanlab_tlm.errors import AuthError

    return AuthError


def _timeouts() -> tuple[type[BaseException], ...]:
    from cleanlab_tlm.errors import APITimeoutError

    return (APITimeoutError, TimeoutError)


def _service_errors() -> tuple[type[BaseException], ...]:
    # timeouts, and 5xx or connection errors after the client's retries (not 4xx item errors)
    from cleanlab_tlm.errors import APIError, APITimeoutError

    return (APITimeoutError, APIError, TimeoutError)


def _error_detail(err: BaseException) -> str:
    # the message the client itself puts in a list call's error slot
    message = getattr(err, "message", None)
    text = str(message) if message is not None else str(err)
    return (text or type(err).__name__)[:500]


def _split(outs: list[Scored | Outcome], result: ScoreResult) -> None:
    for out in outs:
        if isinstance(out, Outcome):
            result.failed.append(out)
        else:
            result.scored.append(out)


# --------------------------------------------------------------------------- the engine


@dataclass(frozen=True, slots=True)
class SharedLimit:
    """A Prefect global concurrency limit whose slots every TLM call in flight takes."""

    name: str
    block: int  # slots asked for at a time
    lease_s: float
    flow_run_id: UUID | None = None  # recorded as the holder of the leases
    logger: RunLogger | None = None


@dataclass(eq=False)
class _Chunk:
    pairs: list[Pair]
    future: Future[ScoreResult]
    outs: list[Scored | Outcome | None] = field(init=False)
    left: int = field(init=False)
    requests: int = 0
    fatal: str | None = None
    explained: ExplainCount = field(default_factory=ExplainCount)

    def __post_init__(self) -> None:
        self.outs = [None] * len(self.pairs)
        self.left = len(self.pairs)


class TLMEngine:
    """One TLM client for a run, owned by a background thread running its own event loop.

    ``submit(pairs)`` returns a Future at once; items are started first come, first served,
    chunk after chunk, as many at a time as the client's congestion window allows (so an item's
    ``timeout_s`` counts its service time, not a wait behind thousands of others). The very
    first item is sent alone: a refused key fails the run after one request, and every item
    after that fails without a request. When a whole window of items in a row (at least
    ``DOWN_AFTER``) times out or exhausts its retries, TLM is taken as down: what is still
    queued fails without a request (not fatal: ``all_failed``); the next chunk tries again.

    With a ``shared`` limit, items in flight also stay within the slots the engine holds of
    it, so all runs together never have more calls at TLM than the limit; an item's timeout
    starts when it is sent, not while it waits for a slot.
    """

    def __init__(
        self,
        cfg: TLMSettings,
        *,
        quality_preset: str,
        timeout_s: float,
        shared: SharedLimit | None = None,
        rate_limit_wait_s: float = 1.0,
        plan: EvalPlan | None = None,
        explain_below: float | None = None,
    ) -> None:
        check_preset(quality_preset, explain_below is None)
        self._cfg, self._preset, self._timeout_s = cfg, quality_preset, timeout_s
        self._plan = plan
        self._rag: Any = None  # TrustworthyRAG, with rag evals
        self._explain_below = explain_below  # explain=low_trust: explain the scores below it
        self._shared = shared
        self.pacing = Pacing(rate_limit_wait_s)
        self._slots: TLMSlots | None = None
        self._tlm: TLM | None = None
        self._pending: deque[tuple[_Chunk, int]] = deque()
        self._running: set[asyncio.Task[None]] = set()
        self._chunks: set[_Chunk] = set()
        self._wake = asyncio.Event()
        self._probed = False
        self._probing = False
        self._refused: str | None = None
        self._failed_in_row = 0  # timeouts and exhausted retries since the last score
        self._down: str | None = None
        self._halted: str | None = None  # why the run stopped sending (halt)
        self._dispatcher: asyncio.Task[None] | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        # the caller's context (Prefect's settings and run) goes along to the engine's thread
        run = contextvars.copy_context().run
        self._thread = threading.Thread(
            target=run, args=(self._run,), name="tlm-engine", daemon=True
        )
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=60)
        except BaseException:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            if not self._thread.is_alive():
                self._loop.close()
            raise

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    async def _start(self) -> None:
        # built on the loop thread: the client binds to the running loop
        self._tlm = make_tlm(self._cfg, quality_preset=self._preset, timeout_s=self._timeout_s,
                             plan=self._plan, logged=self._explain_below is None)  # fmt: skip
        install_pacing(self._tlm, self.pacing)
        if self._plan is not None and self._plan.rag:
            self._rag = make_rag(
                self._plan, api_key=self._cfg.api_key.get_secret_value(),
                quality_preset=self._preset, timeout_s=self._timeout_s,
            )  # fmt: skip
            install_pacing(self._rag, self.pacing)
        if (sh := self._shared) is not None:
            self._slots = TLMSlots(
                sh.name, block=sh.block, lease_s=sh.lease_s, flow_run_id=sh.flow_run_id,
                on_change=self._wake.set, logger=sh.logger,
            )  # fmt: skip
        self._dispatcher = asyncio.create_task(self._dispatch())

    # ------------------------------------------------------------------ caller side

    def submit(self, pairs: list[Pair]) -> Future[ScoreResult]:
        """Score ``pairs``; the Future's result has one score or failure per pair."""
        future: Future[ScoreResult] = Future()
        future.set_running_or_notify_cancel()
        with self._lock:
            if self._closed:
                raise RuntimeError("the TLM engine is closed")
            if not pairs:
                future.set_result(ScoreResult([], [], 0))
            else:
                self._loop.call_soon_threadsafe(self._enqueue, _Chunk(list(pairs), future))
        return future

    def halt(self, reason: str, grace_s: float = 0.0) -> None:
        """Stop sending, from any thread (a stopped run, a lost lock): what is queued fails
        as not sent; what is at TLM has ``grace_s`` to come back (and land), then is given up
        as not scored. Returns at once."""
        with self._lock:
            if self._closed:
                return
        asyncio.run_coroutine_threadsafe(self._halt(reason, grace_s), self._loop)

    async def _halt(self, reason: str, grace_s: float) -> None:
        self._halted = self._halted or reason
        self._wake.set()
        if self._running and grace_s > 0:
            await asyncio.wait(list(self._running), timeout=grace_s)
        for t in list(self._running):
            t.cancel()

    def stats(self) -> dict[str, int]:
        """A snapshot (racy, for logs): congestion window, items in flight and queued, slots
        held of the shared limit."""
        return {
            "window": self._window(),
            "in_flight": len(self._running),
            "queued": len(self._pending),
            "slots": self._slots.held if self._slots else 0,
        }

    @property
    def slot_wait_s(self) -> float:
        """Seconds spent waiting for slots of the shared limit that other runs held."""
        return self._slots.waited_s if self._slots else 0.0

    def close(self) -> None:
        """Cancel what is in flight (its chunks resolve, marked fatal) and join the thread."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("TLMEngine.close() called from the engine's own thread")
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            with contextlib.suppress(TimeoutError):  # stuck: stop the loop all the same
                asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=30)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            if not self._thread.is_alive():
                self._loop.close()

    def __enter__(self) -> TLMEngine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ loop side

    def _window(self) -> int:
        """The clients' congestion window; with TrustworthyRAG too, the larger of the two (each
        client still holds its own calls to its own window)."""
        window = congestion_window(self._tlm) or MAX_IN_FLIGHT
        if self._rag is not None:
            window = max(window, congestion_window(self._rag) or MAX_IN_FLIGHT)
        return window

    def _room(self) -> int:
        """How many items may be in flight now: the congestion window, within the slots held
        of the shared limit (asking for more while items wait, giving back the unneeded)."""
        window = self._window()
        if self._slots is None:
            return window
        self._slots.want(min(window, len(self._running) + len(self._pending)))
        return min(window, self._slots.held)

    def _trim(self) -> None:
        if self._slots is not None:
            waiting = len(self._running) + len(self._pending)
            self._slots.trim(max(len(self._running), min(self._window(), waiting)))

    def _enqueue(self, chunk: _Chunk) -> None:
        self._down, self._failed_in_row = None, 0  # a new chunk gives TLM another try
        self._chunks.add(chunk)
        self._pending.extend((chunk, i) for i in range(len(chunk.pairs)))
        self._wake.set()

    async def _dispatch(self) -> None:
        try:
            while True:
                slots_error = self._slots.error if self._slots else None
                if self._pending and slots_error is not None:
                    chunk, i = self._pending.popleft()
                    chunk.fatal = chunk.fatal or slots_error
                    self._finish(
                        chunk, i, outcome_for(chunk.pairs[i], FAILED, Reason.NOT_SENT, slots_error)
                    )
                    continue
                if self._pending and self._halted is not None:
                    chunk, i = self._pending.popleft()
                    out = outcome_for(chunk.pairs[i], FAILED, Reason.NOT_SENT, self._halted)
                    self._finish(chunk, i, out)
                    continue
                if self._pending and not self._probing and len(self._running) < self._room():
                    chunk, i = self._pending.popleft()
                    if self._refused is not None:
                        chunk.fatal = chunk.fatal or self._refused
                        pair = chunk.pairs[i]
                        self._finish(
                            chunk,
                            i,
                            outcome_for(pair, FAILED, Reason.NOT_SENT, "TLM refused the API key"),
                        )
                        continue
                    if self._down is not None:
                        out = outcome_for(chunk.pairs[i], FAILED, Reason.NOT_SENT, self._down)
                        self._finish(chunk, i, out)
                        continue
                    probe = not self._probed
                    if probe:  # the first item goes alone
                        self._probed = self._probing = True
                    self._running.add(asyncio.create_task(self._score(chunk, i, probe)))
                    continue
                self._trim()  # nothing to start: blocks the run cannot use go back
                self._wake.clear()
                await self._wake.wait()
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a bug here must not leave callers waiting forever
            self._fail_all(f"the TLM engine failed: {type(err).__name__}: {err}")
            raise

    async def _score(self, chunk: _Chunk, i: int, probe: bool) -> None:
        pair = chunk.pairs[i]
        chunk.requests += 1
        assert self._tlm is not None  # made before the first item is dispatched
        try:
            out = await self._ask(pair)
            if self._explain_below is not None and isinstance(out, Scored) and not out.rag:
                out = await explain(self._tlm, pair, out, self._explain_below, chunk.explained)
        except asyncio.CancelledError:  # halted, or the engine closed: TLM never answered
            why = self._halted or "the TLM engine was closed"
            out = outcome_for(pair, FAILED, Reason.NOT_SCORED, why)
        except _auth_error() as err:
            out = outcome_for(pair, FAILED, Reason.TLM_ERROR, _error_detail(err))
            self._refused = self._refused or f"{REFUSED_KEY} ({out.why})"
            chunk.fatal = chunk.fatal or self._refused
        except Exception as err:  # timeouts, exhausted retries, bad answers: this item only
            out = outcome_for(pair, FAILED, Reason.TLM_ERROR, _error_detail(err))
            if isinstance(err, _timeouts()):  # TLM stops at the same max_timeout, near enough:
                await asyncio.sleep(TIMEOUT_SETTLE_S)  # the item keeps its slot that long yet
            if isinstance(err, _service_errors()):
                self._failed_in_row += 1
                if self._down is None and self._failed_in_row >= max(self._window(), DOWN_AFTER):
                    self._down = f"TLM failed {self._failed_in_row} items in a row ({out.why})"
        finally:
            task = asyncio.current_task()
            if task is not None:
                self._running.discard(task)
            if probe:
                self._probing = False
            self._wake.set()
        if isinstance(out, Scored):
            self._failed_in_row = 0
        self._finish(chunk, i, out)

    async def _ask(self, pair: Pair) -> Scored | Outcome:
        """One item, one score call: TrustworthyRAG for a unit with context (with rag evals),
        else TLM (criteria as custom_eval_criteria)."""
        assert self._tlm is not None
        plan = self._plan
        if plan is None or not plan.extra:
            answer = await self._tlm.get_trustworthiness_score_async(pair.prompt, pair.response)
            return interpret(pair, answer)
        if self._rag is not None and pair.context is not None:
            return await self._ask_rag(plan, pair)
        answer = await self._tlm.get_trustworthiness_score_async(pair.prompt, pair.response)
        out = interpret(pair, answer)
        if isinstance(out, Scored) and plan.criteria:
            log = answer.get("log") if isinstance(answer, dict) else None
            extra = read_criteria(plan, log if isinstance(log, dict) else {})
            out.extra, out.failed_evals = extra.scores, extra.failed
        return out

    async def _ask_rag(self, plan: EvalPlan, pair: Pair) -> Scored | Outcome:
        """TrustworthyRAG with the full prompt the model saw; a low-trust answer not explained
        by its preset is explained by one get_explanation call."""
        query, context = pair.query or pair.prompt, pair.context or ""
        answer = await self._rag.score_async(
            response=pair.response, query=query, context=context, prompt=pair.prompt
        )
        answer = answer if isinstance(answer, dict) else {}
        trust = answer.get("trustworthiness")
        trust = trust if isinstance(trust, dict) else {}
        out = interpret(
            pair, {"trustworthiness_score": trust.get("score"), "log": trust.get("log") or {}}
        )
        if not isinstance(out, Scored):
            return out
        extra = read_rag(plan, answer)
        out.extra, out.failed_evals, out.rag = extra.scores, extra.failed, True
        cause = rag_cause(plan, out.score, extra.scores)
        if cause is not None and plan.cause_name:
            out.labels[plan.cause_name] = cause
        if out.score < plan.threshold and out.explanation is None:
            try:
                text = await self._rag.get_explanation_async(
                    response=pair.response, query=query, context=context, tlm_result=answer,
                    prompt=pair.prompt,
                )  # fmt: skip
                out.explanation = text if isinstance(text, str) and text else None
            except asyncio.CancelledError:
                raise
            except Exception as err:  # the scores stand; the comment says why it is missing
                logger.warning("TLM explained no low-trust RAG answer: %s", _error_detail(err))
        return out

    def _finish(self, chunk: _Chunk, i: int, out: Scored | Outcome) -> None:
        if chunk.future.done():
            return
        chunk.outs[i] = out
        chunk.left -= 1
        if chunk.left == 0:
            self._resolve(chunk)

    def _resolve(self, chunk: _Chunk) -> None:
        self._chunks.discard(chunk)
        result = ScoreResult([], [], chunk.requests, chunk.fatal, explained=chunk.explained)
        _split([o for o in chunk.outs if o is not None], result)
        result.all_failed = not result.scored
        if not chunk.future.done():
            chunk.future.set_result(result)

    def _fail_all(self, reason: str) -> None:
        for chunk in list(self._chunks):
            for i, out in enumerate(chunk.outs):
                if out is None:
                    pair = chunk.pairs[i]
                    chunk.outs[i] = outcome_for(pair, FAILED, Reason.NOT_SCORED, reason)
            chunk.fatal = chunk.fatal or reason
            self._resolve(chunk)
        self._pending.clear()

    async def _shutdown(self) -> None:
        tasks = [t for t in (self._dispatcher, *self._running) if t is not None]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        if self._slots is not None:
            await self._slots.close()
        self._fail_all("the TLM engine was closed")


# --------------------------------------------------------------------------- Prefect task


def _log(chunk_no: int, result: ScoreResult) -> None:
    get_run_logger().info(
        "chunk %d: %d scored, %d failed to score (%d TLM items, %d explanation calls)",
        chunk_no,
        len(result.scored),
        len(result.failed),
        result.tlm_requests,
        result.explained.calls,
    )


@task(name="score-with-tlm", task_run_name="score chunk {chunk_no}", cache_policy=NO_CACHE)
def score_task(pairs: list[Pair], engine: TLMEngine, chunk_no: int) -> ScoreResult:
    """Submit the chunk to the run's engine and wait for it (``.submit()`` this task so chunks
    overlap; pass the engine as ``quote(engine)``)."""
    try:
        result = engine.submit(pairs).result()
    except Exception as err:  # e.g. the engine was closed: every pair still gets an outcome
        detail = _error_detail(err)
        failed = [outcome_for(p, FAILED, Reason.TLM_ERROR, detail) for p in pairs]
        result = ScoreResult(
            [],
            failed,
            0,
            f"the TLM call failed: {failed[0].why if failed else detail}",
            bool(pairs),
        )
    _log(chunk_no, result)
    return result
