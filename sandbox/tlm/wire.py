"""The TLM sandbox's request bodies and answers, as pure functions: what each endpoint accepts,
what it answers (synthetic scores, markers applied) and what is recorded of each call.

See the package docstring for the wire contract and :mod:`sandbox.tlm.markers` for markers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sandbox.tlm.markers import Markers
from sandbox.tlm.presets import EXPLANATION, PRESETS, estimate_tokens
from sandbox.tlm.scores import (
    criteria_score,
    eval_score,
    synthetic_explanation,
    synthetic_score,
)

TLM_SCORE = "tlm.score"
RAG_SCORE = "tlm.rag_score"
EXPLAIN = "tlm.explain"


class BadBody(ValueError):
    """A request body the endpoint refuses (answered 422 ``{"error": str(exc)}``)."""


def check_common(body: Any) -> dict[str, Any]:
    """The fields every endpoint needs: ``prompt``, ``response.response``, ``options``."""
    if not isinstance(body, dict):
        raise BadBody("Request body must be a JSON object.")
    if not isinstance(body.get("prompt"), str):
        raise BadBody("'prompt' must be a string.")
    resp = body.get("response")
    if not isinstance(resp, dict) or not isinstance(resp.get("response"), str):
        raise BadBody("'response' must be an object with a string 'response'.")
    options = body.get("options", {})
    if not isinstance(options, dict):
        raise BadBody("'options' must be an object.")
    quality = body.get("quality")
    if quality is not None and quality not in PRESETS:
        raise BadBody(f"'quality' must be one of {', '.join(PRESETS)}.")
    log = options.get("log")
    if log is not None and not (isinstance(log, list) and all(isinstance(x, str) for x in log)):
        raise BadBody("'options.log' must be a list of strings.")
    return body


def check_tlm(raw: Any) -> dict[str, Any]:
    body = check_common(raw)
    criteria = body.get("options", {}).get("custom_eval_criteria")
    if criteria is not None and not (
        isinstance(criteria, list)
        and all(
            isinstance(c, dict)
            and isinstance(c.get("name"), str)
            and isinstance(c.get("criteria"), str)
            for c in criteria
        )
    ):
        raise BadBody("'options.custom_eval_criteria' must be a list of {name, criteria} strings.")
    return body


def check_rag(raw: Any) -> dict[str, Any]:
    body = check_common(raw)
    for key in ("query", "context"):
        if not isinstance(body.get(key), str):
            raise BadBody(f"'{key}' must be a string.")
    evals = body.get("evals", [])
    if not isinstance(evals, list) or not all(
        isinstance(e, dict)
        and isinstance(e.get("name"), str)
        and isinstance(e.get("criteria"), str)
        for e in evals
    ):
        raise BadBody("'evals' must be a list of objects with a string 'name' and 'criteria'.")
    if "custom_eval_criteria" in body.get("options", {}):
        raise BadBody("custom_eval_criteria is not supported for TrustworthyRAG: use 'evals'.")
    return body


def _explanation_score(score: float | None) -> float | None:
    return score if score is not None and math.isfinite(score) else None


def tlm_answer(
    body: dict[str, Any], marks: Markers, *, rich: bool, missing_log: bool
) -> dict[str, Any]:
    """The answer of ``get_confidence_score`` to a checked body."""
    prompt: str = body["prompt"]
    response: str = body["response"]["response"]
    options: dict[str, Any] = body.get("options", {})
    base = (
        None
        if options.get("disable_trustworthiness") is True
        else synthetic_score(prompt, response)
    )
    score = marks.score("trustworthiness", base)
    answer: dict[str, Any] = {}
    if "trustworthiness" not in marks.missing:
        answer["confidence_score"] = score
    wanted: list[str] = options.get("log") or []
    criteria: list[dict[str, str]] | None = options.get("custom_eval_criteria")
    # the client reads ``log`` whenever options.log is non-empty or custom_eval_criteria is set
    if (wanted or criteria is not None) and not missing_log:
        log: dict[str, Any] = {}
        if "explanation" in wanted:
            log["explanation"] = synthetic_explanation(
                prompt, response, _explanation_score(score), rich=rich
            )
        if "perplexity" in wanted:
            log["perplexity"] = body["response"].get("perplexity")
        if criteria is not None:
            log["custom_eval_criteria"] = [
                {
                    "name": c["name"],
                    "score": marks.score(c["name"], criteria_score(c["name"], prompt, response)),
                }
                for c in criteria
                if c["name"] not in marks.missing
            ]
        answer["log"] = log
    if marks.deberta_success is not None:
        answer["deberta_success"] = marks.deberta_success
    return answer


def rag_answer(
    body: dict[str, Any], marks: Markers, *, rich: bool, missing_log: bool
) -> dict[str, Any]:
    """The answer of ``rag_trustworthy_llm/score`` to a checked body: ``trustworthiness`` and one
    ``{"score": ...}`` per eval asked, keyed by the eval's name."""
    prompt: str = body["prompt"]
    response: str = body["response"]["response"]
    query: str = body["query"]
    context: str = body["context"]
    options: dict[str, Any] = body.get("options", {})
    base = (
        None
        if options.get("disable_trustworthiness") is True
        else synthetic_score(prompt, response)
    )
    answer: dict[str, Any] = {}
    if "trustworthiness" not in marks.missing:
        score = marks.score("trustworthiness", base)
        trust: dict[str, Any] = {"score": score}
        wanted: list[str] = options.get("log") or []
        if wanted and not missing_log:
            log: dict[str, Any] = {}
            if "explanation" in wanted:
                log["explanation"] = synthetic_explanation(
                    prompt, response, _explanation_score(score), rich=rich
                )
            trust["log"] = log
        answer["trustworthiness"] = trust
    for ev in body.get("evals", []):
        name: str = ev["name"]
        if name in marks.missing or name in ("trustworthiness", "response"):
            continue
        default = eval_score(
            name,
            query=query if ev.get("query_identifier") else None,
            context=context if ev.get("context_identifier") else None,
            response=response if ev.get("response_identifier") else None,
        )
        answer[name] = {"score": marks.score(name, default)}
    if marks.deberta_success is not None:
        answer["deberta_success"] = marks.deberta_success
    return answer


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One request a TLM sandbox handler read (every endpoint), as tests count them.

    Requests answered before the handler read them (auth refusals, injected fault statuses, the
    concurrency ceiling's 429/503, unreadable bodies) are not recorded here: see
    ``faults.requests`` and ``spans()`` for those.
    """

    endpoint: str  # "tlm.score", "tlm.rag_score" or "tlm.explain"
    status: int  # what the handler answered (200, an injected per-item status, 422...)
    preset: str | None  # body["quality"]; None on tlm.explain (the client sends no preset)
    model: str | None  # options.model
    log: tuple[str, ...]  # options.log
    evals: tuple[str, ...]  # RAG: the names of the evals asked, in order
    criteria: tuple[str, ...]  # TLM: the names of options.custom_eval_criteria, in order
    prompt: str
    query: str | None  # RAG only
    chars: int  # characters the estimate counts (see sandbox.tlm.presets)
    tokens: int  # estimate_tokens(chars, preset); ceil(chars / 4) x 4 on tlm.explain
    delay_s: float  # service time served (latency model x the preset's multiplier; x 1 on
    # tlm.explain)
    started: float  # time.time() when the handler read it


def chars_of(endpoint: str, body: dict[str, Any]) -> int:
    n = len(body["prompt"]) + len(body["response"]["response"])
    options = body.get("options", {})
    if endpoint == RAG_SCORE:
        n += len(body["query"]) + len(body["context"])
        n += sum(len(e["criteria"]) for e in body.get("evals", []))
    elif endpoint == TLM_SCORE:
        n += sum(
            len(c["name"]) + len(c["criteria"]) for c in options.get("custom_eval_criteria") or []
        )
    return n


def record_of(
    endpoint: str, body: dict[str, Any], *, status: int, delay_s: float, started: float
) -> CallRecord:
    options: dict[str, Any] = body.get("options", {})
    preset = body.get("quality") if endpoint != EXPLAIN else None
    chars = chars_of(endpoint, body)
    model = options.get("model")
    return CallRecord(
        endpoint=endpoint,
        status=status,
        preset=preset if isinstance(preset, str) else None,
        model=model if isinstance(model, str) else None,
        log=tuple(options.get("log") or ()),
        evals=tuple(e["name"] for e in body.get("evals", [])) if endpoint == RAG_SCORE else (),
        criteria=tuple(c["name"] for c in options.get("custom_eval_criteria") or ())
        if endpoint == TLM_SCORE
        else (),
        prompt=body["prompt"],
        query=body.get("query") if endpoint == RAG_SCORE else None,
        chars=chars,
        tokens=estimate_tokens(chars, preset)
        if endpoint != EXPLAIN
        else -(-chars // 4) * EXPLANATION.tokens_x,
        delay_s=delay_s,
        started=started,
    )
