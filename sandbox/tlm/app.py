"""The TLM sandbox's FastAPI app: the two endpoints, auth, the request capture, the concurrency
ceiling and the fault hooks (see the package docstring for the wire contract)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import time
from typing import Any

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from sandbox.faults import Fault, FaultState, install
from sandbox.tlm.load import Load, Span
from sandbox.tlm.scores import synthetic_explanation, synthetic_score

SCORE_PATH = "/api/v0/trustworthy_llm/get_confidence_score"
EXPLAIN_PATH = "/api/v1/tlm_explanation/get_explanation"
ENDPOINTS: dict[str, str] = {SCORE_PATH: "tlm.score", EXPLAIN_PATH: "tlm.explain"}


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


class Recorder:
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

    def __init__(self, app: ASGIApp, recorder: Recorder) -> None:
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
    rec = Recorder(load)
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
        delay = 0.0 if load.latency is None else load.latency.for_item(prompt, response)
        f = fault("tlm.score")
        if f is not None and any(key in prompt for key in f.hold_items):
            await faults.hang(f.hang_seconds)
        if delay > 0:
            await sleep(delay)
        with rec.lock:
            rec.prompts.append(prompt)
            rec.calls.append(body)
            rec.headers.append(dict(request.headers))
            fail_status, rich = rec.fail_status, rec.rich_explanations
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
