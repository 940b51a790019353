"""A local, Cleanlab-TLM-compatible sandbox server (wire-compatible with cleanlab-tlm 1.1.39).

The SCORES ARE SYNTHETIC. This server is not a trust model and knows nothing about correctness:

* a handful of well-known demo prompt/response pairs (:data:`KNOWN_PAIRS`, the seed's trivia
  questions) get hand-picked scores and explanations, matched by case-insensitive substrings of
  the prompt and of the response, so that demos show a believable spread;
* every other pair gets a score derived from a SHA-256 hash of ``(prompt, response)``, mapped into
  ``[0.02, 0.98]``. The same pair always gets the same score, across runs and machines.

Endpoints (under ``/api``, the value for ``CLEANLAB_API_BASE_URL``):

* ``POST /api/v0/trustworthy_llm/get_confidence_score`` (fault endpoint ``"tlm.score"``):
  ``{"prompt", "response": {"response": str, ...}, "quality", "task", "options"}`` ->
  ``{"confidence_score": float, "log": {"explanation": str}}``; ``log`` is present whenever
  ``options.log`` is non-empty (unless ``Fault.missing_log``).
* ``POST /api/v1/tlm_explanation/get_explanation`` (fault endpoint ``"tlm.explain"``):
  ``{"prompt", "response": {"response": str, "trustworthiness_score": float, ...}, "options"}``
  -> ``{"explanation": str}``. Used by ``TLM.get_explanation()``.

Auth is ``Authorization: bearer <key>``; a wrong or missing key is a 401
``{"code": "invalid_api_key", "description": ...}`` (cleanlab-tlm raises ``AuthError`` and does
not retry). Every answer, errors included, is ``application/json`` (the client calls
``resp.json()`` before looking at the status); other errors are ``{"error": "..."}``. A
malformed body is a 422 (not 400: cleanlab-tlm retries a 400 four times, but not a 422).

Faults (see :mod:`sandbox.faults`): status/latency/hang faults apply as usual. ``Fault.fail_items``
makes a score call whose prompt contains one of the substrings answer ``fail_status`` (500 by
default: the client retries it 4 times over 1+2+4 s, then the item's slot carries the error; set
:attr:`TLMSandbox.fail_status` to 422 for a fast, non-retried per-item failure).
``Fault.missing_log`` drops ``log`` from answers.

Load knobs (constructor arguments, setters, restored by ``reset``): ``latency`` (a
:class:`Latency`: fixed, or log-normal from a mean and a p99, drawn per item from a seeded hash)
and a concurrency ceiling (``max_in_flight``: above it a score call is answered ``over_status``,
429 with ``Retry-After`` or 503, as the real service does when pushed). Every score call's start,
end and status are kept (:meth:`TLMSandbox.spans`) to chart requests in flight over time.

IMPORTANT: cleanlab-tlm reads ``CLEANLAB_API_BASE_URL`` ONCE, when
``cleanlab_tlm.internal.api.api`` is first imported (module globals ``base_url``,
``tlm_base_url``, ``tlm_explanation_base_url``...). A process can therefore point it at one
sandbox only: use :func:`session_tlm_sandbox` early (before anything imports ``cleanlab_tlm``)
and :meth:`TLMSandbox.reset` between tests.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import math
import os
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from sandbox.faults import Fault, FaultState, install
from sandbox.runner import ServerThread

SCORE_PATH = "/api/v0/trustworthy_llm/get_confidence_score"
EXPLAIN_PATH = "/api/v1/tlm_explanation/get_explanation"
ENDPOINTS: dict[str, str] = {SCORE_PATH: "tlm.score", EXPLAIN_PATH: "tlm.explain"}

# Appended to explanations when ``rich_explanations`` is on: characters a UI or a Langfuse
# comment must escape or render safely.
RICH_SUFFIX = (
    " Markup check: <b>bold</b> & <script>alert(1)</script> | pipe | *emphasis* "
    "`code` [link](http://example.invalid) \u2713 \u00e9"
)


@dataclass(frozen=True)
class KnownPair:
    """A demo prompt/response pair with a hand-picked synthetic score.

    Matches when the case-folded prompt contains every ``prompt_has`` substring and the
    case-folded response contains every ``response_has`` substring (empty: any response).
    """

    prompt_has: tuple[str, ...]
    response_has: tuple[str, ...]
    score: float
    explanation: str


KNOWN_PAIRS: tuple[KnownPair, ...] = (
    KnownPair(
        ("3rd month of the year in alphabetical order",),
        ("december",),
        0.94,
        "Sorted alphabetically the months run April, August, December, February, January, "
        "July, June, March, May, November, October, September. The third entry is December, "
        "which is what the response says, so the answer is consistent with a careful "
        "re-derivation and is rated as likely correct.",
    ),
    KnownPair(
        ("3rd month of the year in alphabetical order",),
        (),
        0.09,
        "The question asks for the third month in alphabetical order, not in calendar order. "
        "Sorted alphabetically the months run April, August, December, February, and so on, so "
        "the third one is December. The response appears to give the third calendar month "
        "(March) instead, which answers a different question. This response is likely wrong.",
    ),
    KnownPair(
        ("seconds are in 100 years",),
        ("3,153,600,000",),
        0.31,
        "The response multiplies 60 x 60 x 24 x 365 = 31,536,000 seconds per year by 100, "
        "which ignores leap years. A century contains about 24 or 25 leap days, so the true "
        "figure is closer to 3,155,673,600 to 3,155,760,000 seconds. The arithmetic is right "
        "for 365-day years, but the stated total is not exact, so the answer is doubtful.",
    ),
    KnownPair(
        ("seconds are in 100 years",),
        ("3153600000",),
        0.31,
        "The response multiplies 31,536,000 seconds per year by 100, which ignores leap years. "
        "A century contains about 24 or 25 leap days, so the true figure is closer to "
        "3,155,673,600 to 3,155,760,000 seconds. The stated total is therefore not exact.",
    ),
    KnownPair(
        ("capital of france",),
        ("paris",),
        0.985,
        "Paris has been the capital of France for centuries and this is uncontroversial, widely "
        "documented general knowledge. The response states it directly and without hedging, "
        "and alternative answers sampled for the same question agree with it, so the response "
        "is rated as very likely correct.",
    ),
    # NB: with the relations stated in the sandbox's own question (Alice = 2 x Bob,
    # Bob = 3 x Charlie, total $72) this answer is CORRECT: 7.20 + 21.60 + 43.20 = 72.
    KnownPair(
        ("alice", "bob", "charlie", "twice", "three times"),
        ("7.20", "21.60", "43.20"),
        0.88,
        "Let Charlie's share be c. Then Bob has 3c and Alice has 2 x 3c = 6c, so 10c = 72 and "
        "c = 7.20. Bob therefore gets 21.60 and Alice 43.20, which add up to 72. The response "
        "matches this derivation, so it is rated as likely correct, with a small margin for "
        "possible misreadings of who gets a multiple of whom.",
    ),
    KnownPair(
        ("alice", "bob", "charlie", "72"),
        ("7.20", "21.60", "43.20"),
        0.18,
        "The split 7.20 / 21.60 / 43.20 follows from 'Alice pays twice Bob and Bob pays three "
        "times Charlie', but the question as asked does not state those relations in that form. "
        "Re-deriving the shares from the stated conditions gives different amounts, so the "
        "response likely answers a different problem than the one posed.",
    ),
    KnownPair(
        ("declaration of independence",),
        ("august 2",),
        0.9,
        "The Continental Congress adopted the Declaration on July 4, 1776, and most delegates "
        "signed the engrossed copy on August 2, 1776, with a few signing later. The response "
        "reflects the signing date correctly, so it is rated as likely correct.",
    ),
    KnownPair(
        ("declaration of independence",),
        ("july 4, 1776",),
        0.42,
        "July 4, 1776 is the date the Continental Congress adopted the Declaration, and it is "
        "the date printed on it, but most delegates actually signed the engrossed copy on "
        "August 2, 1776, and some signed even later. The response conflates adoption with "
        "signing, so it is only partly correct.",
    ),
)


def _fold(text: str) -> str:
    return " ".join(text.casefold().split())


def _digest(prompt: str, response: str) -> bytes:
    return hashlib.sha256(prompt.encode() + b"\x00" + response.encode()).digest()


def known_pair(prompt: str, response: str) -> KnownPair | None:
    """The :data:`KNOWN_PAIRS` entry a prompt/response pair matches (first match), if any."""
    p, r = _fold(prompt), _fold(response)
    for pair in KNOWN_PAIRS:
        if all(s in p for s in pair.prompt_has) and all(s in r for s in pair.response_has):
            return pair
    return None


def synthetic_score(prompt: str, response: str) -> float:
    """The sandbox's deterministic, SYNTHETIC score for a pair (a known pair's, else a hash)."""
    pair = known_pair(prompt, response)
    if pair is not None:
        return pair.score
    x = int.from_bytes(_digest(prompt, response)[:8], "big") / 2**64
    return round(0.02 + 0.96 * x, 4)


# the hand-picked demo explanations read like a model's: say plainly where they come from
SYNTHETIC_LABEL = "[Synthetic: hand-written for the sandbox demo, not TLM output] "


def synthetic_explanation(
    prompt: str, response: str, score: float | None = None, *, rich: bool = False
) -> str:
    """The sandbox's deterministic explanation for a pair (plain text unless ``rich``)."""
    pair = known_pair(prompt, response)
    if pair is not None:
        text = SYNTHETIC_LABEL + pair.explanation
    else:
        s = synthetic_score(prompt, response) if score is None else score
        ref = _digest(prompt, response).hex()[:12]
        verdict = (
            "likely correct"
            if s >= 0.8
            else "uncertain"
            if s >= 0.5
            else "doubtful, and worth a human review"
        )
        text = (
            f"Synthetic explanation from the local TLM sandbox (ref {ref}). The sandbox is not a "
            f"trust model: the score {s:.3f} was derived deterministically from a hash of the "
            f"prompt ({len(prompt)} characters) and the response ({len(response)} characters), "
            f"so it carries no information about correctness. Read as a real score it would "
            f"mean the response is {verdict}."
        )
    return text + RICH_SUFFIX if rich else text


Z99 = NormalDist().inv_cdf(0.99)


@dataclass(frozen=True, slots=True)
class Latency:
    """Per-item service time: ``fixed(s)`` or ``lognormal(mean, p99)``, reproducible by ``seed``.

    An item's latency is the distribution's quantile at a hash of (seed, prompt, response): the
    same item waits the same time in every run and for every contender.
    """

    mean_s: float = 0.0
    p99_s: float | None = None  # None: fixed at mean_s
    seed: int = 0

    @classmethod
    def fixed(cls, seconds: float) -> Latency:
        return cls(mean_s=seconds)

    @classmethod
    def lognormal(cls, mean_s: float, p99_s: float, seed: int = 0) -> Latency:
        return cls(mean_s=mean_s, p99_s=p99_s, seed=seed)

    def __post_init__(self) -> None:
        if self.mean_s < 0:
            raise ValueError("latency mean must be >= 0")
        if self.p99_s is not None:
            if not 0 < self.mean_s < self.p99_s:
                raise ValueError("log-normal latency needs 0 < mean < p99")
            if 2 * math.log(self.p99_s / self.mean_s) > Z99**2:
                raise ValueError("log-normal latency: p99 can be at most ~15x the mean")

    @property
    def params(self) -> tuple[float, float]:
        """(mu, sigma) of the log-normal: mean = exp(mu + sigma²/2), p99 = exp(mu + z99·sigma)."""
        assert self.p99_s is not None
        gap = math.log(self.p99_s / self.mean_s)
        sigma = Z99 - math.sqrt(Z99**2 - 2 * gap)
        return math.log(self.mean_s) - sigma**2 / 2, sigma

    def quantile(self, u: float) -> float:
        if self.p99_s is None:
            return self.mean_s
        mu, sigma = self.params
        return math.exp(mu + sigma * NormalDist().inv_cdf(min(max(u, 1e-12), 1 - 1e-12)))

    def for_item(self, prompt: str, response: str) -> float:
        if self.p99_s is None:
            return self.mean_s
        digest = hashlib.sha256(
            f"{self.seed}".encode() + b"\x00" + _digest(prompt, response)
        ).digest()
        return self.quantile((int.from_bytes(digest[:8], "big") + 0.5) / 2**64)

    def describe(self) -> str:
        if self.p99_s is None:
            return f"{self.mean_s * 1000:g} ms fixed"
        return f"log-normal mean {self.mean_s:g} s, p99 {self.p99_s:g} s (seed {self.seed})"


@dataclass(frozen=True, slots=True)
class Span:
    """One score call as the server saw it (``time.time()`` seconds)."""

    start: float
    end: float
    status: int


def in_flight_series(spans: list[Span], *, accepted_only: bool = True) -> list[tuple[float, int]]:
    """Step series (time, requests in flight from then on) from spans, in time order."""
    events: list[tuple[float, int]] = []
    for s in spans:
        if accepted_only and s.status in (429, 503):
            continue
        events.append((s.start, 1))
        events.append((s.end, -1))
    events.sort(key=lambda e: (e[0], e[1]))
    out: list[tuple[float, int]] = []
    n = 0
    for t, d in events:
        n += d
        if out and out[-1][0] == t:
            out[-1] = (t, n)
        else:
            out.append((t, n))
    return out


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _auth_error() -> JSONResponse:
    return JSONResponse(
        {
            "code": "invalid_api_key",
            "description": (
                "Invalid API key. Check https://tlm.cleanlab.ai/ for your current API key."
            ),
        },
        status_code=401,
    )


def error_body(status: int) -> dict[str, Any]:
    """The JSON body of an error injected by the fault middleware, shaped like the TLM API's."""
    if status == 401:
        return {"code": "invalid_api_key", "description": "Invalid API key (injected fault)."}
    if status == 429:
        return {"error": "Rate limit exceeded (injected fault). Retry after the given delay."}
    if status >= 500:
        return {"error": f"TLM sandbox injected server error {status}."}
    return {"error": f"TLM sandbox injected error {status}."}


@dataclass(slots=True)
class Load:
    """The load knobs: per-item latency and the concurrency ceiling."""

    latency: Latency | None = None
    max_in_flight: int | None = None  # None: no ceiling
    over_status: int = 429  # answered above the ceiling: 429 (with Retry-After) or 503
    retry_after: int = 1  # whole seconds (the client parses it with int())

    def __post_init__(self) -> None:
        if self.over_status not in (429, 503):
            raise ValueError("over_status must be 429 or 503")
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")


class _Recorder:
    """Thread-safe request capture shared by the app handlers and the test thread."""

    def __init__(self, load: Load | None = None) -> None:
        self.lock = threading.Lock()
        self.prompts: list[str] = []
        self.calls: list[dict[str, Any]] = []
        self.explain_calls: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.fail_status = 500
        self.rich_explanations = False
        self.in_flight = 0
        self.default_load = load or Load()
        self.load = self.default_load
        self.scoring = 0  # score calls past the ceiling check, not yet answered
        self.spans: list[Span] = []
        # latency sleeps in progress: reset() cuts them short
        self.sleepers: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def wake_sleepers(self) -> None:
        with self.lock:
            for loop, wake in self.sleepers:
                loop.call_soon_threadsafe(wake.set)

    def clear(self) -> None:
        with self.lock:
            self.prompts.clear()
            self.calls.clear()
            self.explain_calls.clear()
            self.headers.clear()
            self.spans.clear()
            self.fail_status = 500
            self.rich_explanations = False
            self.load = self.default_load


class _InFlight:
    """ASGI middleware counting the HTTP requests being served (so ``reset`` can drain them)."""

    def __init__(self, app: ASGIApp, recorder: _Recorder) -> None:
        self.app = app
        self.rec = recorder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with self.rec.lock:
            self.rec.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            with self.rec.lock:
                self.rec.in_flight -= 1


def create_app(api_key: str, load: Load | None = None) -> FastAPI:
    """A FastAPI app emulating the two TLM endpoints, accepting only ``api_key``."""
    app = FastAPI(title="Cleanlab TLM sandbox", docs_url=None, redoc_url=None, openapi_url=None)
    rec = _Recorder(load)
    app.state.recorder = rec

    def endpoint_of(request: Request) -> str | None:
        return ENDPOINTS.get(request.url.path)

    faults: FaultState = install(app, endpoint_of, error_body)

    def release_all() -> None:  # what ServerThread.stop() calls: hangs and latency sleeps
        faults.release_hangs()
        rec.wake_sleepers()

    app.state.release_hangs = release_all
    app.add_middleware(_InFlight, recorder=rec)  # outermost: counts every request

    def fault(endpoint: str) -> Fault | None:
        return faults.faults.get(endpoint)

    def authorized(request: Request) -> bool:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and secrets.compare_digest(key.strip(), api_key)

    async def json_body(request: Request) -> dict[str, Any] | JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return _error(422, "Request body must be a JSON object.")
        if not isinstance(body, dict):
            return _error(422, "Request body must be a JSON object.")
        if not isinstance(body.get("prompt"), str):
            return _error(422, "'prompt' must be a string.")
        resp = body.get("response")
        if not isinstance(resp, dict) or not isinstance(resp.get("response"), str):
            return _error(422, "'response' must be an object with a string 'response'.")
        options = body.get("options", {})
        if not isinstance(options, dict):
            return _error(422, "'options' must be an object.")
        return body

    @app.post(SCORE_PATH)
    async def get_confidence_score(request: Request) -> JSONResponse:
        if not authorized(request):
            return _auth_error()
        started = time.time()
        with rec.lock:
            load = rec.load
            over = load.max_in_flight is not None and rec.scoring >= load.max_in_flight
            if over:
                rec.spans.append(Span(started, started, load.over_status))
            else:
                rec.scoring += 1
        if over:
            return JSONResponse(
                error_body(load.over_status),
                status_code=load.over_status,
                headers={"Retry-After": str(load.retry_after)},
            )
        status = 500
        try:
            answer = await score(request, load)
            status = answer.status_code
            return answer
        finally:
            with rec.lock:
                rec.scoring -= 1
                rec.spans.append(Span(started, time.time(), status))

    async def sleep(seconds: float) -> None:
        wake = asyncio.Event()
        entry = (asyncio.get_running_loop(), wake)
        with rec.lock:
            rec.sleepers.add(entry)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=seconds)
        finally:
            with rec.lock:
                rec.sleepers.discard(entry)

    async def score(request: Request, load: Load) -> JSONResponse:
        body = await json_body(request)
        if isinstance(body, JSONResponse):
            return body
        prompt: str = body["prompt"]
        response: str = body["response"]["response"]
        if load.latency is not None:
            delay = load.latency.for_item(prompt, response)
            if delay > 0:
                await sleep(delay)
        with rec.lock:
            rec.prompts.append(prompt)
            rec.calls.append(body)
            rec.headers.append(dict(request.headers))
            fail_status, rich = rec.fail_status, rec.rich_explanations
        f = fault("tlm.score")
        if f is not None and any(s in prompt for s in f.fail_items):
            return _error(fail_status, "TLM sandbox: injected failure for this item.")
        score = synthetic_score(prompt, response)
        answer: dict[str, Any] = {"confidence_score": score}
        wanted = body.get("options", {}).get("log") or []
        if wanted and not (f is not None and f.missing_log):
            log: dict[str, Any] = {}
            if "explanation" in wanted:
                log["explanation"] = synthetic_explanation(prompt, response, score, rich=rich)
            if "perplexity" in wanted:
                log["perplexity"] = body["response"].get("perplexity")
            answer["log"] = log
        return JSONResponse(answer)

    @app.post(EXPLAIN_PATH)
    async def get_explanation(request: Request) -> JSONResponse:
        if not authorized(request):
            return _auth_error()
        body = await json_body(request)
        if isinstance(body, JSONResponse):
            return body
        prompt: str = body["prompt"]
        response: str = body["response"]["response"]
        raw_score = body["response"].get("trustworthiness_score")
        score = float(raw_score) if isinstance(raw_score, int | float) else None
        with rec.lock:
            rec.explain_calls.append(body)
            rich = rec.rich_explanations
        return JSONResponse(
            {"explanation": synthetic_explanation(prompt, response, score, rich=rich)}
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"TLM sandbox internal error: {type(exc).__name__}")

    return app


def _as_latency(latency: Latency | float | None) -> Latency | None:
    if latency is None or isinstance(latency, Latency):
        return latency
    return Latency.fixed(float(latency))


class TLMSandbox(ServerThread):
    """The TLM sandbox served on 127.0.0.1 from a background thread.

    ``base_url`` is the value for ``CLEANLAB_API_BASE_URL``; ``api_key`` is fresh per instance.
    ``prompts``/``calls``/``explain_calls``/``headers`` are snapshots (copies) of what the
    handlers received, in arrival order. Requests answered by the fault middleware alone
    (injected statuses) or refused by auth are not in them: see ``faults.requests`` for those.
    """

    def __init__(
        self,
        port: int | None = None,
        api_key: str | None = None,
        *,
        latency: Latency | float | None = None,
        max_in_flight: int | None = None,
        over_status: int = 429,
        retry_after: int = 1,
    ) -> None:
        self.api_key = api_key or f"tlm-sandbox-{secrets.token_hex(16)}"
        load = Load(_as_latency(latency), max_in_flight, over_status, retry_after)
        app = create_app(self.api_key, load)
        self._rec: _Recorder = app.state.recorder
        self.faults: FaultState = app.state.faults
        super().__init__(app, port=port)

    @property
    def base_url(self) -> str:
        return f"{self.url}/api"

    @property
    def prompts(self) -> list[str]:
        with self._rec.lock:
            return list(self._rec.prompts)

    @property
    def calls(self) -> list[dict[str, Any]]:
        with self._rec.lock:
            return list(self._rec.calls)

    @property
    def explain_calls(self) -> list[dict[str, Any]]:
        with self._rec.lock:
            return list(self._rec.explain_calls)

    @property
    def headers(self) -> list[dict[str, str]]:
        with self._rec.lock:
            return list(self._rec.headers)

    @property
    def fail_status(self) -> int:
        """Status answered for ``Fault.fail_items`` matches (500: retried; 422: not retried)."""
        return self._rec.fail_status

    @fail_status.setter
    def fail_status(self, status: int) -> None:
        self._rec.fail_status = status

    @property
    def rich_explanations(self) -> bool:
        """Append markup-ish characters (``<``, ``|``, ``*``...) to every explanation."""
        return self._rec.rich_explanations

    @rich_explanations.setter
    def rich_explanations(self, on: bool) -> None:
        self._rec.rich_explanations = on

    @property
    def latency(self) -> Latency | None:
        return self._rec.load.latency

    def set_latency(self, latency: Latency | float | None) -> None:
        """Per-item latency from now on (a float: fixed seconds; None: none)."""
        with self._rec.lock:
            self._rec.load = Load(
                _as_latency(latency),
                self._rec.load.max_in_flight,
                self._rec.load.over_status,
                self._rec.load.retry_after,
            )

    @property
    def max_in_flight(self) -> int | None:
        return self._rec.load.max_in_flight

    def set_ceiling(
        self, max_in_flight: int | None, *, status: int = 429, retry_after: int = 1
    ) -> None:
        """Answer ``status`` to score calls arriving while ``max_in_flight`` are being served."""
        with self._rec.lock:
            self._rec.load = Load(self._rec.load.latency, max_in_flight, status, retry_after)

    def spans(self) -> list[Span]:
        """Every score call since the last reset, as (start, end, status), in order of end."""
        with self._rec.lock:
            return list(self._rec.spans)

    @property
    def scoring(self) -> int:
        """Score calls being served right now (past the ceiling check)."""
        return self._rec.scoring

    def peak_in_flight(self) -> int:
        return max((n for _, n in in_flight_series(self.spans())), default=0)

    def env(self) -> dict[str, str]:
        return {"CLEANLAB_TLM_API_KEY": self.api_key, "CLEANLAB_API_BASE_URL": self.base_url}

    def reset(self, drain_s: float = 5.0) -> None:
        """Clear faults, the rate limit, the request log, the captures and the spans; restore
        the constructor's latency and ceiling; release hangs.

        Requests still being served (e.g. released hangs) are waited for, up to ``drain_s``, so
        that they do not land in the next test's log.
        """
        self.faults.clear()
        self._rec.wake_sleepers()
        deadline = time.monotonic() + drain_s
        while self._rec.in_flight > 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        self.faults.reset_log()
        self._rec.clear()

    def start(self) -> TLMSandbox:
        super().start()
        return self

    def __enter__(self) -> TLMSandbox:
        return self.start()


_session: TLMSandbox | None = None
_session_lock = threading.Lock()


def session_tlm_sandbox() -> TLMSandbox:
    """The process-wide TLM sandbox: started on first call, then reused (never restarted).

    Sets ``CLEANLAB_API_BASE_URL`` and ``CLEANLAB_TLM_API_KEY`` in ``os.environ``. Call it
    BEFORE anything imports ``cleanlab_tlm`` (e.g. at conftest import time): the client reads
    the base URL once, at import. Raises RuntimeError if ``cleanlab_tlm`` was already imported
    with another base URL, rather than letting the tests talk to the real service.
    """
    global _session
    with _session_lock:
        if _session is None:
            sandbox = TLMSandbox().start()
            os.environ.update(sandbox.env())
            atexit.register(sandbox.stop)
            _session = sandbox
        api = sys.modules.get("cleanlab_tlm.internal.api.api")
        current = getattr(api, "base_url", None) if api is not None else None
        if current is not None and current != _session.base_url:
            raise RuntimeError(
                f"cleanlab_tlm was imported with CLEANLAB_API_BASE_URL={current!r} before the "
                f"TLM sandbox ({_session.base_url}) was configured; call "
                "session_tlm_sandbox() before anything imports cleanlab_tlm."
            )
        return _session
