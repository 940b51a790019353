"""A local, OpenAI-compatible chat completions server (for the ``openai`` client and
``langfuse.openai``).

Answers are RECORDED, not generated: the last user message is looked up in :data:`TRIVIA` (the
seed's five demo questions, matched after case-folding and collapsing whitespace); any other
question gets a deterministic templated answer derived from a hash of it. Usage figures are
estimates (about 4 characters per token), ids are fresh per call.

Routes (under ``/v1``, the value for ``OPENAI_BASE_URL``):

* ``POST /v1/chat/completions`` (fault endpoint ``"openai.chat"``): non-streaming, and streaming
  (SSE ``chat.completion.chunk`` events, ``stream_options.include_usage`` honoured, then
  ``data: [DONE]``). ``n``, ``max_tokens``/``max_completion_tokens`` (truncation, then
  ``finish_reason="length"``) are honoured.
* ``GET /v1/models`` and ``GET /v1/models/{id}`` (fault endpoint ``"openai.models"``).

Auth is ``Authorization: Bearer <key>``; errors use OpenAI's shape
``{"error": {"message", "type", "param", "code"}}`` and are ``application/json``.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from sandbox.faults import FaultState, install
from sandbox.runner import ServerThread, sandbox_app

CHAT_PATH = "/v1/chat/completions"
DEFAULT_MODEL = "gpt-4.1-mini"
MODELS: tuple[str, ...] = ("gpt-4.1-mini", "gpt-4.1", "gpt-4.1-nano", "gpt-4o-mini", "gpt-4o")
SYSTEM_FINGERPRINT = "fp_sandbox"

ALICE_QUESTION = (
    "Alice, Bob, and Charlie share $72: Alice gets twice Bob's share and Bob gets three times "
    "Charlie's share. How much does each get?"
)

#: The seed's demo questions and their recorded answers (some deliberately wrong or imprecise).
TRIVIA: dict[str, str] = {
    "What is the 3rd month of the year in alphabetical order?": "March",
    "What is the capital of France?": "The capital of France is Paris.",
    "How many seconds are in 100 years?": (
        "There are 31,536,000 seconds in a year (60 seconds x 60 minutes x 24 hours x 365 "
        "days). Therefore, in 100 years, there would be 3,153,600,000 seconds."
    ),
    ALICE_QUESTION: (
        "Let Charlie's share be C. Then Bob gets 3C and Alice gets 2 x 3C = 6C, so "
        "C + 3C + 6C = 10C = $72 and C = $7.20. Charlie gets $7.20, Bob gets $21.60 and "
        "Alice gets $43.20."
    ),
    "When was the Declaration of Independence signed?": (
        "The Declaration of Independence was signed on July 4, 1776."
    ),
}


def _norm(text: str) -> str:
    return " ".join(text.casefold().split())


_TRIVIA_BY_KEY: dict[str, str] = {_norm(q): a for q, a in TRIVIA.items()}


def estimate_tokens(text: str) -> int:
    """The sandbox's token estimate: about one token per 4 characters, at least 1."""
    return max(1, (len(text) + 3) // 4)


def message_text(content: Any) -> str:
    """Text of a message ``content``: a string, or a list of parts (``text`` parts joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def last_user_message(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            return message_text(m.get("content"))
    return ""


def answer_for(question: str) -> str:
    """The recorded answer for a question (:data:`TRIVIA`), else a deterministic templated one."""
    known = _TRIVIA_BY_KEY.get(_norm(question))
    if known is not None:
        return known
    digest = hashlib.sha256(question.encode()).hexdigest()
    openers = (
        "Here is a short answer",
        "In brief",
        "The answer, in a sentence",
        "Put simply",
    )
    shown = " ".join(question.split())
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return (
        f"{openers[int(digest[:2], 16) % len(openers)]}: this is a synthetic reply from the local "
        f'OpenAI sandbox to "{shown}" (ref {digest[:10]}).'
    )


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """Estimated prompt tokens: the messages' text plus 4 tokens of framing per message."""
    return sum(estimate_tokens(message_text(m.get("content"))) + 4 for m in messages) + 3


def _err(status: int, message: str, type_: str, code: str | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": type_, "param": None, "code": code}},
        status_code=status,
    )


def error_body(status: int) -> dict[str, Any]:
    """OpenAI-shaped body of an error injected by the fault middleware."""
    err: tuple[str, str, str | None]
    if status == 401:
        err = (
            "Incorrect API key provided (injected fault).",
            "invalid_request_error",
            "invalid_api_key",
        )
    elif status == 429:
        err = ("Rate limit reached (injected fault).", "requests", "rate_limit_exceeded")
    elif status >= 500:
        err = ("The server had an error (injected fault).", "server_error", None)
    else:
        err = (f"Injected error {status}.", "invalid_request_error", None)
    return {"error": {"message": err[0], "type": err[1], "param": None, "code": err[2]}}


def _usage(p: int, c: int) -> dict[str, Any]:
    return {
        "prompt_tokens": p,
        "completion_tokens": c,
        "total_tokens": p + c,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def create_app(api_key: str) -> FastAPI:
    """A FastAPI app emulating OpenAI's chat completions and models routes."""
    app = sandbox_app("OpenAI sandbox")
    lock = threading.Lock()
    bodies: list[dict[str, Any]] = []
    app.state.lock = lock
    app.state.bodies = bodies

    def endpoint_of(request: Request) -> str | None:
        if request.url.path == CHAT_PATH:
            return "openai.chat"
        if request.url.path.startswith("/v1/models"):
            return "openai.models"
        return None

    install(app, endpoint_of, error_body)

    def authorized(request: Request) -> bool:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and secrets.compare_digest(key.strip(), api_key)

    def auth_error() -> JSONResponse:
        return _err(
            401,
            "Incorrect API key provided. You can find your API key in the sandbox's env().",
            "invalid_request_error",
            "invalid_api_key",
        )

    @app.post(CHAT_PATH)
    async def chat_completions(request: Request) -> Response:
        if not authorized(request):
            return auth_error()
        try:
            body = await request.json()
        except ValueError:
            return _err(
                400, "We could not parse the JSON body of your request.", "invalid_request_error"
            )
        if not isinstance(body, dict):
            return _err(400, "The request body must be a JSON object.", "invalid_request_error")
        with lock:
            bodies.append(body)
        model = body.get("model")
        messages = body.get("messages")
        if not isinstance(model, str) or not model:
            return _err(400, "you must provide a model parameter", "invalid_request_error")
        if (
            not isinstance(messages, list)
            or not messages
            or not all(isinstance(m, dict) for m in messages)
        ):
            return _err(
                400, "'messages' must be a non-empty array of objects.", "invalid_request_error"
            )
        content = answer_for(last_user_message(messages))
        finish = "stop"
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(limit, int) and limit > 0 and estimate_tokens(content) > limit:
            content, finish = content[: limit * 4], "length"
        n = body.get("n") or 1
        if not isinstance(n, int) or not 1 <= n <= 8:
            return _err(400, "'n' must be an integer between 1 and 8.", "invalid_request_error")
        p_tok, c_tok = prompt_tokens(messages), estimate_tokens(content) * n
        cid = f"chatcmpl-{secrets.token_urlsafe(21).replace('-', 'a').replace('_', 'b')}"
        created = int(time.time())
        if body.get("stream"):
            opts = body.get("stream_options") or {}
            include_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
            return StreamingResponse(
                _stream(cid, created, model, content, finish, n, include_usage, p_tok, c_tok),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        return JSONResponse(
            {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": i,
                        "message": {
                            "role": "assistant",
                            "content": content,
                            "refusal": None,
                            "annotations": [],
                        },
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                    for i in range(n)
                ],
                "usage": _usage(p_tok, c_tok),
                "service_tier": "default",
                "system_fingerprint": SYSTEM_FINGERPRINT,
            }
        )

    @app.get("/v1/models")
    async def list_models(request: Request) -> JSONResponse:
        if not authorized(request):
            return auth_error()
        return JSONResponse({"object": "list", "data": [_model(m) for m in MODELS]})

    @app.get("/v1/models/{model_id}")
    async def get_model(model_id: str, request: Request) -> JSONResponse:
        if not authorized(request):
            return auth_error()
        if model_id not in MODELS:
            return _err(
                404,
                f"The model '{model_id}' does not exist",
                "invalid_request_error",
                "model_not_found",
            )
        return JSONResponse(_model(model_id))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _err(exc.status_code, str(exc.detail), "invalid_request_error")

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        return _err(500, f"OpenAI sandbox internal error: {type(exc).__name__}", "server_error")

    return app


def _model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 1_700_000_000, "owned_by": "sandbox"}


async def _stream(
    cid: str,
    created: int,
    model: str,
    content: str,
    finish: str,
    n: int,
    include_usage: bool,
    p_tok: int,
    c_tok: int,
) -> AsyncIterator[str]:
    def chunk(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> str:
        data: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": choices,
        }
        if include_usage:
            data["usage"] = usage
        return f"data: {json.dumps(data)}\n\n"

    words = content.split(" ")
    pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
    for i in range(n):
        yield chunk(
            [
                {
                    "index": i,
                    "delta": {"role": "assistant", "content": "", "refusal": None},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ]
        )
        for piece in pieces:
            yield chunk(
                [{"index": i, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}]
            )
        yield chunk([{"index": i, "delta": {}, "logprobs": None, "finish_reason": finish}])
    if include_usage:
        yield chunk([], _usage(p_tok, c_tok))
    yield "data: [DONE]\n\n"


class OpenAISandbox(ServerThread):
    """The OpenAI sandbox served on 127.0.0.1 from a background thread."""

    def __init__(self, port: int | None = None, api_key: str | None = None) -> None:
        self.api_key = api_key or f"sk-sandbox-{secrets.token_hex(16)}"
        app = create_app(self.api_key)
        self._lock: threading.Lock = app.state.lock
        self._bodies: list[dict[str, Any]] = app.state.bodies
        self.faults: FaultState = app.state.faults
        super().__init__(app, port=port)

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def requests_bodies(self) -> list[dict[str, Any]]:
        """Bodies of the authenticated chat completion requests that reached the handler."""
        with self._lock:
            return list(self._bodies)

    def env(self) -> dict[str, str]:
        return {"OPENAI_BASE_URL": self.base_url, "OPENAI_API_KEY": self.api_key}

    def reset(self) -> None:
        """Clear faults, the request log and the captured bodies; release hangs."""
        self.faults.clear()
        self.faults.reset_log()
        with self._lock:
            self._bodies.clear()

    def start(self) -> OpenAISandbox:
        super().start()
        return self

    def __enter__(self) -> OpenAISandbox:
        return self.start()
