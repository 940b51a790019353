"""The TLM sandbox's FastAPI app: the three endpoints, auth, the request capture, the concurrency
ceiling and the fault hooks (see the package docstring for the wire contract)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.faults import Fault, FaultState, install
from sandbox.runner import sandbox_app
from sandbox.tlm.load import Load, Span
from sandbox.tlm.markers import parse_markers
from sandbox.tlm.presets import (
    EXPLANATION,
    EXPLANATION_REFUSED,
    explanation_refused,
    preset_of,
)
from sandbox.tlm.scores import synthetic_explanation
from sandbox.tlm.wire import (
    EXPLAIN,
    RAG_SCORE,
    TLM_SCORE,
    BadBody,
    CallRecord,
    check_common,
    check_rag,
    check_tlm,
    rag_answer,
    record_of,
    tlm_answer,
)

SCORE_PATH = "/api/v0/trustworthy_llm/get_confidence_score"
RAG_SCORE_PATH = "/api/v1/rag_trustworthy_llm/score"
EXPLAIN_PATH = "/api/v1/tlm_explanation/get_explanation"
ENDPOINTS: dict[str, str] = {
    SCORE_PATH: TLM_SCORE,
    RAG_SCORE_PATH: RAG_SCORE,
    EXPLAIN_PATH: EXPLAIN,
}

# The shapes a 401 can take (``TLMSandbox.auth_shape``), each read differently by the client.
AUTH_SHAPES = ("invalid_api_key", "error", "detail", "text")
AUTH_DESCRIPTION = "Invalid API key. Check https://tlm.cleanlab.ai/ for your current API key."


class NanJSONResponse(JSONResponse):
    """JSON that may carry NaN/Infinity (as the bare tokens Python's json module reads back)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(
            content, ensure_ascii=False, allow_nan=True, separators=(",", ":")
        ).encode()


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def auth_body(shape: str, *, injected: bool = False) -> dict[str, Any]:
    """The JSON body of a 401 of ``shape`` ("text" is rewritten to plain text on the way out)."""
    if shape == "error":
        return {"error": "Unauthorized"}
    if shape == "detail":
        return {"detail": "Not authenticated"}
    if injected:
        return {"code": "invalid_api_key", "description": "Invalid API key (injected fault)."}
    return {"code": "invalid_api_key", "description": AUTH_DESCRIPTION}


def error_body(status: int) -> dict[str, Any]:
    """The JSON body of an error injected by the fault middleware, shaped like the TLM API's
    (a 401 in the default ``invalid_api_key`` shape; the app itself follows ``auth_shape``)."""
    if status == 401:
        return auth_body("invalid_api_key", injected=True)
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
        self.rag_calls: list[dict[str, Any]] = []
        self.explain_calls: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.records: list[CallRecord] = []
        self.fail_status = 500
        self.rich_explanations = False
        self.auth_shape = "invalid_api_key"
        self.in_flight = 0
        self.default_load = load or Load()
        self.load = self.default_load
        self.scoring = 0  # score calls past the ceiling check, not yet answered
        self.holding = 0  # score calls held by Fault.hold_items right now
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
            self.rag_calls.clear()
            self.explain_calls.clear()
            self.headers.clear()
            self.records.clear()
            self.spans.clear()
            self.fail_status = 500
            self.rich_explanations = False
            self.auth_shape = "invalid_api_key"
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


class _PlainText401:
    """ASGI middleware: with ``auth_shape == "text"``, every 401 (auth refusal or injected fault)
    leaves as ``text/plain`` ``Unauthorized`` (a proxy's answer, not the API's JSON)."""

    BODY = b"Unauthorized"

    def __init__(self, app: ASGIApp, recorder: Recorder) -> None:
        self.app = app
        self.rec = recorder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.rec.auth_shape != "text":
            await self.app(scope, receive, send)
            return
        rewriting = False

        async def send_wrapper(message: Message) -> None:
            nonlocal rewriting
            if message["type"] == "http.response.start" and message["status"] == 401:
                rewriting = True
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(self.BODY)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": self.BODY, "more_body": False})
                return
            if rewriting:
                return  # the JSON body it replaced
            await send(message)

        await self.app(scope, receive, send_wrapper)


def create_app(api_key: str, load: Load | None = None) -> FastAPI:
    """A FastAPI app emulating the TLM endpoints, accepting only ``api_key``."""
    app = sandbox_app("Cleanlab TLM sandbox")
    rec = Recorder(load)
    app.state.recorder = rec

    def endpoint_of(request: Request) -> str | None:
        return ENDPOINTS.get(request.url.path)

    def injected_body(status: int) -> dict[str, Any]:
        if status == 401:
            return auth_body(rec.auth_shape, injected=True)
        return error_body(status)

    faults: FaultState = install(app, endpoint_of, injected_body)

    def release_all() -> None:  # what ServerThread.stop() calls: hangs and latency sleeps
        faults.release_hangs()
        rec.wake_sleepers()

    app.state.release_hangs = release_all
    app.add_middleware(_PlainText401, recorder=rec)
    app.add_middleware(_InFlight, recorder=rec)  # outermost: counts every request

    def fault(endpoint: str) -> Fault | None:
        return faults.faults.get(endpoint)

    def authorized(request: Request) -> bool:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and secrets.compare_digest(key.strip(), api_key)

    def auth_error() -> Response:
        if rec.auth_shape == "text":
            return PlainTextResponse(_PlainText401.BODY.decode(), status_code=401)
        return JSONResponse(auth_body(rec.auth_shape), status_code=401)

    async def read_body(
        request: Request, check: Callable[[Any], dict[str, Any]]
    ) -> dict[str, Any] | JSONResponse:
        try:
            return check(await request.json())
        except BadBody as exc:
            return _error(422, str(exc))
        except ValueError:
            return _error(422, "Request body must be a JSON object.")

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

    async def ceiling(request: Request, endpoint: str) -> Response:
        """Auth, then the concurrency ceiling (shared by both score endpoints), then scoring."""
        if not authorized(request):
            return auth_error()
        started = time.time()
        with rec.lock:
            load = rec.load
            over = load.max_in_flight is not None and rec.scoring >= load.max_in_flight
            if over:
                rec.spans.append(Span(started, started, load.over_status, endpoint))
            else:
                rec.scoring += 1
        if over:
            headers = {} if load.retry_after is None else {"Retry-After": str(load.retry_after)}
            return JSONResponse(
                error_body(load.over_status), status_code=load.over_status, headers=headers
            )
        status = 500
        try:
            answer = await score(request, endpoint, load)
            status = answer.status_code
            return answer
        finally:
            with rec.lock:
                rec.scoring -= 1
                rec.spans.append(Span(started, time.time(), status, endpoint))

    async def score(request: Request, endpoint: str, load: Load) -> Response:
        rag = endpoint == RAG_SCORE
        body = await read_body(request, check_rag if rag else check_tlm)
        if isinstance(body, JSONResponse):
            return body
        started = time.time()
        prompt: str = body["prompt"]
        response: str = body["response"]["response"]
        options: dict[str, Any] = body.get("options", {})
        texts = (prompt, body["query"], body["context"]) if rag else (prompt,)
        marks = parse_markers(*texts, response)
        preset = body.get("quality")
        delay = 0.0
        if load.latency is not None:
            delay = load.latency.for_item(prompt, response) * preset_of(preset).latency_x

        def done(answer: Response) -> Response:
            """Capture the call as answered (after any hold and service time) and answer."""
            record = record_of(
                endpoint, body, status=answer.status_code, delay_s=delay, started=started
            )
            with rec.lock:
                (rec.rag_calls if rag else rec.calls).append(body)
                if not rag:
                    rec.prompts.append(prompt)
                rec.headers.append(dict(request.headers))
                rec.records.append(record)
            return answer

        # what the real service refuses on sight, before any service time
        if marks.invalid:
            return done(_error(422, f"TLM sandbox: unreadable marker(s) {marks.invalid}."))
        if explanation_refused(options, preset, rag=rag):
            return done(_error(422, EXPLANATION_REFUSED))
        f = fault(endpoint)
        if f is not None and any(key in text for key in f.hold_items for text in texts):
            with rec.lock:
                rec.holding += 1
            try:
                await faults.hang(f.hang_seconds)
            finally:
                with rec.lock:
                    rec.holding -= 1
        # the service stops working on an item at the client's timeout, which the client sends
        # as options.max_timeout (cleanlab-tlm's changelog: "Add server side max_timeout")
        limit = options.get("max_timeout")
        if isinstance(limit, int | float) and not isinstance(limit, bool) and delay > limit:
            await sleep(float(limit))
            return done(_error(504, "TLM sandbox: the item ran past options.max_timeout."))
        if delay > 0:
            await sleep(delay)
        with rec.lock:
            fail_status, rich = rec.fail_status, rec.rich_explanations
        if f is not None and any(s in text for s in f.fail_items for text in texts):
            return done(_error(fail_status, "TLM sandbox: injected failure for this item."))
        if marks.status is not None:
            return done(_error(marks.status, f"TLM sandbox: status {marks.status} by marker."))
        missing_log = f is not None and f.missing_log
        build = rag_answer if rag else tlm_answer
        return done(NanJSONResponse(build(body, marks, rich=rich, missing_log=missing_log)))

    @app.post(SCORE_PATH)
    async def get_confidence_score(request: Request) -> Response:
        return await ceiling(request, TLM_SCORE)

    @app.post(RAG_SCORE_PATH)
    async def rag_score(request: Request) -> Response:
        return await ceiling(request, RAG_SCORE)

    @app.post(EXPLAIN_PATH)
    async def get_explanation(request: Request) -> Response:
        if not authorized(request):
            return auth_error()
        body = await read_body(request, check_common)
        if isinstance(body, JSONResponse):
            return body
        started = time.time()
        prompt: str = body["prompt"]
        response: str = body["response"]["response"]
        raw_score = body["response"].get("trustworthiness_score")
        score = float(raw_score) if isinstance(raw_score, int | float) else None
        with rec.lock:
            load = rec.load
        delay = 0.0  # no preset is sent: served like one medium call (presets.EXPLANATION)
        if load.latency is not None:
            delay = load.latency.for_item(prompt, response) * EXPLANATION.latency_x
            await sleep(delay)
        with rec.lock:
            rec.explain_calls.append(body)
            rich = rec.rich_explanations
            rec.records.append(record_of(EXPLAIN, body, status=200, delay_s=delay, started=started))
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
