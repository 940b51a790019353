"""Fault injection and request logging shared by the sandbox servers.

Every route of a sandbox app has an endpoint name (e.g. ``"observations"``, ``"scores.create"``,
``"tlm.score"``). A test sets ``faults[endpoint] = Fault(...)`` on the app's state; the
middleware applies it before the handler runs, and records every request in ``requests``.

Endpoint-specific knobs (207 rejections, repeated rows, per-item TLM failures, a missing
``log``) are fields of :class:`Fault` too, read by the handlers themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response


@dataclass
class Fault:
    """What to do to calls of one endpoint.

    status faults: the call is answered with ``status`` (and ``Retry-After`` when set) instead of
    being handled. ``every=N`` hits every Nth call (1 = all); ``first=N`` hits only the first N
    calls (a transient fault); both may combine.
    """

    latency: float = 0.0  # seconds added before handling
    status: int | None = None  # e.g. 429, 500, 503
    retry_after: float | None = None  # seconds, sent as Retry-After with ``status``
    every: int = 1
    first: int | None = None
    hang: bool = False  # hold the request until the server stops (or ``hang_seconds``)
    hang_seconds: float = 3600.0
    lose_response: int = 0  # handle the next N calls fully, then answer 502 (answer lost)
    # Langfuse specific
    reject_trace_ids: set[str] = field(default_factory=set)  # scores.create answers 207
    repeat_rows: int = 0  # observations: repeat the last N rows of a page on the next page
    loop_pages: bool = False  # observations: every page again, under a fresh cursor each time
    # TLM specific
    fail_items: set[str] = field(default_factory=set)  # prompts containing one of these -> 500
    hold_items: set[str] = field(default_factory=set)  # prompts containing one wait like ``hang``
    missing_log: bool = False  # answer without ``log`` even when explanation was asked
    calls: int = 0  # calls seen so far (maintained by the middleware)

    def status_hit(self) -> bool:
        if self.status is None:
            return False
        if self.first is not None and self.calls > self.first:
            return False
        return self.calls % max(self.every, 1) == 0


@dataclass
class RateLimit:
    """A sliding-window request limit shared by a group of endpoints (Langfuse Cloud style)."""

    limit: int  # requests per window
    window_s: float = 60.0
    endpoints: frozenset[str] | None = None  # None: every endpoint of the app
    _hits: deque[float] = field(default_factory=deque)

    def check(self, now: float) -> float | None:
        """Record a hit; return seconds to wait when over the limit, else None."""
        while self._hits and now - self._hits[0] >= self.window_s:
            self._hits.popleft()
        if len(self._hits) >= self.limit:
            return max(self.window_s - (now - self._hits[0]), 0.001)
        self._hits.append(now)
        return None

    def refusal(self, wait: float, error_body: Any) -> Response:
        """The 429 answer once :meth:`check` said to wait ``wait`` seconds."""
        return JSONResponse(
            error_body(429),
            status_code=429,
            headers={
                "Retry-After": str(max(1, math.ceil(wait))),  # whole seconds, as Langfuse
                "X-RateLimit-Limit": str(self.limit),
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(int(time.time() + wait)),
            },
        )


@dataclass
class FixedWindowRateLimit(RateLimit):
    """Langfuse's limiter (rate-limiter-flexible's RateLimiterRedis, as used by
    web/src/features/public-api/server/RateLimitService.ts at v4.16.0): a FIXED window of
    ``window_s`` that opens with the first request after the previous one expired; every request
    consumes a point, refused ones included; a request is refused when it leaves no point
    (``remainingPoints < 1``), so ``limit`` points serve ``limit - 1`` requests a window (Hobby's
    30 a minute on the general API serve 29)."""

    _window_end: float = 0.0
    _consumed: int = 0

    def check(self, now: float) -> float | None:
        if now >= self._window_end:
            self._window_end = now + self.window_s
            self._consumed = 0
        self._consumed += 1
        if self.limit - self._consumed < 1:
            return max(self._window_end - now, 0.001)
        return None

    @property
    def remaining(self) -> int:
        """Points left in the current window (0 once spent)."""
        return max(self.limit - self._consumed, 0)

    def refusal(self, wait: float, error_body: Any) -> Response:
        """RateLimitHelper.sendRestResponseIfLimited: the rate_limited error contract
        (unstable-public-api-error-contract.ts) and createHttpHeaderFromRateLimit's headers."""
        retry_after = math.ceil(wait)
        reset = time.time() + wait
        body = {
            "message": "Rate limit exceeded",
            "code": "rate_limited",
            "details": {
                "retryAfterSeconds": retry_after,
                "limit": self.limit,
                "remaining": 0,
                "resetAt": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(reset))
                + f".{int(reset * 1000) % 1000:03d}Z",
            },
        }
        return JSONResponse(
            body,
            status_code=429,
            headers={
                "Retry-After": str(retry_after),
                "X-RateLimit-Limit": str(self.limit),
                "X-RateLimit-Remaining": "0",
                # JavaScript's Date.prototype.toString() on a UTC server
                "X-RateLimit-Reset": time.strftime(
                    "%a %b %d %Y %H:%M:%S GMT+0000 (Coordinated Universal Time)",
                    time.gmtime(reset),
                ),
            },
        )


@dataclass
class RequestRecord:
    endpoint: str
    method: str
    path: str
    query: str
    status: int
    started: float
    duration: float
    body_bytes: int


class FaultState:
    """Faults, rate limit and the request log of one sandbox app (``app.state.faults``)."""

    def __init__(self) -> None:
        self.faults: dict[str, Fault] = {}
        self.rate_limit: RateLimit | None = None  # the general bucket
        # further named buckets (e.g. Langfuse's "annotation-queues"), checked before the general
        # one: a call counts against the first bucket that covers its endpoint, and only that one
        self.rate_limits: dict[str, RateLimit] = {}
        self.requests: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._hang_events: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def set(self, endpoint: str, fault: Fault | None) -> None:
        if fault is None:
            self.faults.pop(endpoint, None)
        else:
            self.faults[endpoint] = fault

    def clear(self) -> None:
        self.faults.clear()
        self.rate_limit = None
        self.rate_limits.clear()
        self.release_hangs()

    def count(self, endpoint: str | None = None, *, status: int | None = None) -> int:
        with self._lock:
            return sum(
                1
                for r in self.requests
                if (endpoint is None or r.endpoint == endpoint)
                and (status is None or r.status == status)
            )

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def release_hangs(self) -> None:
        for loop, ev in list(self._hang_events):
            loop.call_soon_threadsafe(ev.set)
        self._hang_events.clear()

    async def hang(self, seconds: float) -> None:
        ev = asyncio.Event()
        self._hang_events.append((asyncio.get_running_loop(), ev))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ev.wait(), timeout=seconds)

    def record(self, rec: RequestRecord) -> None:
        with self._lock:
            self.requests.append(rec)


def install(app: Any, endpoint_of: Any, error_body: Any) -> FaultState:
    """Attach a FaultState and its middleware to a Starlette/FastAPI ``app``.

    ``endpoint_of(request) -> str | None`` names the endpoint of a request (None: not faulted,
    not logged). ``error_body(status) -> dict`` is the JSON body of an injected error, in the
    shape the emulated service uses.
    """
    state = FaultState()
    app.state.faults = state
    app.state.release_hangs = state.release_hangs

    async def _faults(request: Request, call_next: Any) -> Response:
        endpoint = endpoint_of(request)
        if endpoint is None:
            response: Response = await call_next(request)
            return response
        started = time.time()
        body = await request.body()
        fault = state.faults.get(endpoint)
        response = await _apply(state, endpoint, fault, request, call_next)
        state.record(
            RequestRecord(
                endpoint=endpoint,
                method=request.method,
                path=request.url.path,
                query=request.url.query,
                status=response.status_code,
                started=started,
                duration=time.time() - started,
                body_bytes=len(body),
            )
        )
        return response

    async def _apply(
        state: FaultState, endpoint: str, fault: Fault | None, request: Request, call_next: Any
    ) -> Response:
        rl = next(
            (
                b
                for b in (*state.rate_limits.values(), state.rate_limit)
                if b is not None and (b.endpoints is None or endpoint in b.endpoints)
            ),
            None,
        )
        if rl is not None:
            wait = rl.check(time.monotonic())
            if wait is not None:
                return rl.refusal(wait, error_body)
        if fault is None:
            response: Response = await call_next(request)
            return response
        fault.calls += 1
        if fault.latency:
            await asyncio.sleep(fault.latency)
        if fault.hang:
            await state.hang(fault.hang_seconds)
        if fault.status_hit():
            assert fault.status is not None
            headers = {}
            if fault.retry_after is not None:
                ra = fault.retry_after
                headers["Retry-After"] = str(int(ra)) if float(ra).is_integer() else str(ra)
            return JSONResponse(error_body(fault.status), status_code=fault.status, headers=headers)
        response = await call_next(request)
        if fault.lose_response > 0:
            fault.lose_response -= 1
            # the work is done; the caller only sees a gateway error
            return JSONResponse(error_body(502), status_code=502)
        return response

    app.middleware("http")(_faults)  # (not a decorator: ``app`` is untyped here)
    return state
