"""Build the (prompt, response) pair TLM judges, from whatever shape a trace's io has.

The prompt is everything the model saw: system prompt, chat history, tool turns, context. A
trace whose io cannot be read as a prompt and a response becomes a recorded skip with a reason
(:class:`SkipError`); the builder never guesses.

Shapes read, in order of preference:
- a GENERATION observation of the trace (``langfuse.openai`` records the full message list)
- the root observation's input: OpenAI-style message lists (string or content-part content,
  tool calls and tool turns), ``@observe`` ``{"args": [...], "kwargs": {...}}``, dicts with
  ``messages`` / ``prompt`` / ``query`` / ``question`` / ``input``, and plain strings;
  plus a system prompt kept in trace metadata (the seed's shape)
- outputs as strings, assistant message dicts, completion-shaped dicts (``choices``), or dicts
  with ``content`` / ``output`` / ``response`` / ``answer`` / ``text``.
"""

from __future__ import annotations

import json
import re
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from tasks.config import RunLogger, Tuning
from tasks.failures import Part, Reason, SkipError, unreadable, unrecognised
from tasks.models import (
    Bucket,
    Outcome,
    Pair,
    TraceRecord,
    last_user_turn,
    outcome_for,
    safe_text,
)

PROMPT_KEYS = ("messages", "prompt", "query", "question", "input", "text", "user_input", "content")
RESPONSE_KEYS = ("content", "output", "response", "answer", "text", "completion", "result")
CHAT_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def parse_io(raw: Any, what: Part = "input") -> Any:
    """Langfuse returns io as raw strings, usually JSON text. Non-JSON text is plain text."""
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except RecursionError:
        raise SkipError(unrecognised(what), f"{what} nested too deeply to read") from None
    except ValueError:
        return raw


def clean_text(text: str) -> str:
    """Drop control characters (keeping tab and newlines) and lone surrogates."""
    return safe_text(_CONTROL.sub("", text))


@contextmanager
def reading(where: Part) -> Iterator[None]:
    """Any failure while reading one part of a trace becomes that trace's skip, saying where."""
    try:
        yield
    except SkipError:
        raise
    except RecursionError:
        raise SkipError(unrecognised(where), f"{where} nested too deeply to read") from None
    except Exception as err:
        raise SkipError(
            unreadable(where), f"{type(err).__name__} in {where}: {str(err)[:200]}"
        ) from None


# --- content ---------------------------------------------------------------------------------


def content_text(content: Any, *, where: str) -> str:
    """Text of a message's content: a string, or a list of content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict):
                kind = part.get("type")
                if kind in ("text", "input_text", "output_text") and isinstance(
                    part.get("text"), str
                ):
                    texts.append(part["text"])
                elif kind in ("image_url", "input_image", "image", "input_audio", "file"):
                    # TLM judges text only: a score without what the model saw would mislead
                    raise SkipError(Reason.UNSUPPORTED_CONTENT, f"{where} has a {kind} part")
                elif isinstance(part.get("text"), str):
                    texts.append(part["text"])
                else:
                    raise SkipError(
                        Reason.UNSUPPORTED_CONTENT, f"{where} has a part of type {kind!r}"
                    )
            else:
                raise SkipError(
                    Reason.UNSUPPORTED_CONTENT, f"{where} has a {type(part).__name__} part"
                )
        return "\n".join(texts)
    raise SkipError(Reason.UNSUPPORTED_CONTENT, f"{where} content is a {type(content).__name__}")


def is_chat(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(isinstance(m, dict) and m.get("role") in CHAT_ROLES for m in value)
    )


def tool_calls(calls: Any, *, where: str) -> list[dict[str, Any]]:
    """Function tool calls in the chat-completions shape, their arguments checked as JSON."""
    out: list[dict[str, Any]] = []
    for call in calls if isinstance(calls, list) else [calls]:
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise SkipError(Reason.BAD_TOOL_CALL, f"{where} has a malformed tool call")
        args = fn.get("arguments")
        if isinstance(args, dict | list):
            args = json.dumps(args)
        if args:
            try:
                json.loads(args)
            except ValueError:
                raise SkipError(Reason.BAD_TOOL_CALL, f"{where}: arguments are not JSON") from None
        out.append(
            {
                "id": str(call.get("id") or f"call_{len(out)}"),
                "type": "function",
                "function": {"name": fn["name"], "arguments": args or ""},
            }
        )
    return out


def normalise_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages with text content, in the shape ``form_prompt_string`` reads."""
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        role = m["role"]
        msg: dict[str, Any] = {
            "role": role,
            "content": content_text(m.get("content"), where=f"{role} message {i}"),
        }
        if role == "assistant" and m.get("tool_calls"):
            msg["tool_calls"] = tool_calls(m["tool_calls"], where=f"assistant message {i}")
        elif role in ("tool", "function"):
            msg["role"] = "tool"
            msg["tool_call_id"] = str(m.get("tool_call_id") or m.get("name") or "tool")
        out.append(msg)
    return out


def chat_prompt(
    messages: list[dict[str, Any]], *, system_prompt: str | None, tools: Any = None
) -> str:
    msgs = normalise_messages(messages)
    # the model answers the last user/tool turn: trailing assistant turns are the response
    while msgs and msgs[-1]["role"] == "assistant":
        msgs.pop()
    if not msgs:
        raise SkipError(Reason.MISSING_INPUT, "the message list has no user turn")
    if system_prompt and not any(m["role"] in ("system", "developer") for m in msgs):
        msgs.insert(0, {"role": "system", "content": system_prompt})
    if not any(m["content"].strip() or m.get("tool_calls") for m in msgs if m["role"] != "system"):
        raise SkipError(Reason.EMPTY_INPUT, "every message is empty")
    tool_list = tools if isinstance(tools, list) and tools else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # imported on first use: importing cleanlab_tlm fixes its API base URL for good
            from cleanlab_tlm.utils.chat import form_prompt_string

            return form_prompt_string(msgs, tools=tool_list, use_responses=False)
        except (KeyError, TypeError, ValueError) as err:
            raise SkipError(Reason.UNREADABLE_CHAT, f"{type(err).__name__}: {err}") from None


# --- prompt ----------------------------------------------------------------------------------


def _text_prompt(text: str, system_prompt: str | None) -> str:
    if not text.strip():
        raise SkipError(Reason.EMPTY_INPUT, "the input text is empty")
    if system_prompt:
        return chat_prompt([{"role": "user", "content": text}], system_prompt=system_prompt)
    return text


def prompt_from_input(value: Any, *, system_prompt: str | None, depth: int = 0) -> tuple[str, str]:
    """(prompt, source shape) from a parsed input value."""
    if depth > 4:
        raise SkipError(Reason.UNRECOGNISED_INPUT, "input nested too deeply")
    if value is None:
        raise SkipError(Reason.MISSING_INPUT, "the trace has no input")
    if isinstance(value, str):
        return _text_prompt(value, system_prompt), "text"
    if isinstance(value, bool | int | float):
        raise SkipError(Reason.UNSUPPORTED_INPUT, f"input is a {type(value).__name__}")
    if isinstance(value, list):
        if not value:
            raise SkipError(Reason.MISSING_INPUT, "input is an empty list")
        if is_chat(value):
            return chat_prompt(value, system_prompt=system_prompt), "chat"
        if len(value) == 1:
            return prompt_from_input(value[0], system_prompt=system_prompt, depth=depth + 1)
        raise SkipError(Reason.UNRECOGNISED_INPUT, "input is a list that is not a chat")
    if isinstance(value, dict):
        if not value:
            raise SkipError(Reason.MISSING_INPUT, "input is an empty object")
        if "args" in value or "kwargs" in value:  # @observe
            return _observe_prompt(value, system_prompt=system_prompt, depth=depth)
        if "role" in value and "content" in value:  # a single message
            return chat_prompt([value], system_prompt=system_prompt), "chat"
        sp = value.get("system_prompt") or value.get("system") or value.get("instructions")
        sp = sp if isinstance(sp, str) and sp.strip() else system_prompt
        msgs = value.get("messages")
        if isinstance(msgs, list) and is_chat(msgs):
            return chat_prompt(msgs, system_prompt=sp, tools=value.get("tools")), "chat"
        for key in PROMPT_KEYS:
            if key in value and value[key] not in (None, "", [], {}):
                prompt, src = prompt_from_input(value[key], system_prompt=sp, depth=depth + 1)
                return prompt, f"{key}:{src}"
        raise SkipError(Reason.UNRECOGNISED_INPUT, f"no prompt among keys {sorted(value)[:8]}")
    raise SkipError(Reason.UNSUPPORTED_INPUT, f"input is a {type(value).__name__}")


def _observe_prompt(
    value: dict[str, Any], *, system_prompt: str | None, depth: int
) -> tuple[str, str]:
    args = value.get("args") or []
    kwargs = value.get("kwargs") or {}
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise SkipError(Reason.UNRECOGNISED_INPUT, "@observe input with malformed args/kwargs")
    candidates: list[Any] = [a for a in args if a not in (None, "", [], {})]
    for key in PROMPT_KEYS:
        if kwargs.get(key) not in (None, "", [], {}):
            candidates.insert(0, kwargs[key])
            break
    if not candidates:
        raise SkipError(Reason.MISSING_INPUT, "@observe call had no usable argument")
    # the first argument (or the prompt-like keyword) is what the function sent to the model
    prompt, src = prompt_from_input(candidates[0], system_prompt=system_prompt, depth=depth + 1)
    return prompt, f"observe:{src}"


# --- response --------------------------------------------------------------------------------


def response_from_output(value: Any, depth: int = 0) -> str:
    if depth > 4:
        raise SkipError(Reason.UNRECOGNISED_OUTPUT, "output nested too deeply")
    if value is None:
        raise SkipError(Reason.MISSING_OUTPUT, "the trace has no output")
    if isinstance(value, str):
        if not value.strip():
            raise SkipError(Reason.EMPTY_OUTPUT, "the output text is empty")
        return value
    if isinstance(value, bool | int | float):
        raise SkipError(Reason.UNSUPPORTED_OUTPUT, f"output is a {type(value).__name__}")
    if isinstance(value, list):
        if not value:
            raise SkipError(Reason.MISSING_OUTPUT, "output is an empty list")
        if is_chat(value):
            assistants = [m for m in value if m.get("role") == "assistant"]
            if not assistants:
                raise SkipError(Reason.MISSING_OUTPUT, "output messages hold no assistant turn")
            return response_from_output(assistants[-1], depth + 1)
        if len(value) == 1:
            return response_from_output(value[0], depth + 1)
        raise SkipError(Reason.UNRECOGNISED_OUTPUT, "output is a list that is not a chat")
    if isinstance(value, dict):
        if not value:
            raise SkipError(Reason.MISSING_OUTPUT, "output is an empty object")
        choices = value.get("choices")
        if isinstance(choices, list) and choices:
            first = choices[0]
            if isinstance(first, dict):
                if isinstance(first.get("message"), dict):
                    return response_from_output(first["message"], depth + 1)
                if isinstance(first.get("text"), str):
                    return response_from_output(first["text"], depth + 1)
            raise SkipError(Reason.UNRECOGNISED_OUTPUT, "completion choice without message or text")
        if "role" in value or "tool_calls" in value:  # an assistant message
            msg: dict[str, Any] = {
                "content": content_text(value.get("content"), where="output message")
            }
            if value.get("tool_calls"):
                msg["tool_calls"] = tool_calls(value["tool_calls"], where="output message")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from cleanlab_tlm.utils.chat import form_response_string_chat_completions_api

                text = form_response_string_chat_completions_api(msg)
            if not text.strip():
                raise SkipError(Reason.EMPTY_OUTPUT, "the assistant message has no content")
            return text
        for key in RESPONSE_KEYS:
            if key in value and value[key] not in (None, "", [], {}):
                inner = value[key]
                if key == "content" and isinstance(inner, list):
                    return response_from_output(content_text(inner, where="output"), depth + 1)
                return response_from_output(inner, depth + 1)
        raise SkipError(Reason.UNRECOGNISED_OUTPUT, f"no response among keys {sorted(value)[:8]}")
    raise SkipError(Reason.UNSUPPORTED_OUTPUT, f"output is a {type(value).__name__}")


# --- the pair --------------------------------------------------------------------------------


def first_value(metadata: dict[str, Any] | None, keys: Sequence[str]) -> Any:
    """The first of ``keys`` present in metadata (a JSON-encoded string value decoded)."""
    for key in keys:
        value = (metadata or {}).get(key)
        if isinstance(value, str) and value.startswith(('"', "[", "{")):
            value = parse_io(value, "metadata")
        if value not in (None, "", [], {}):
            return value
    return None


def system_prompt_of(metadata: dict[str, Any] | None, keys: Sequence[str]) -> str | None:
    value = first_value(metadata, keys)
    return value if isinstance(value, str) and value.strip() else None


def with_context(prompt: str, context: str) -> str:
    """Put retrieved context where the model had it: after the system turn, before the user's.

    Prompts formatted from a chat start with ``System:``/``User:`` turns; a plain prompt gets the
    context ahead of it.
    """
    block = f"Context:\n{context.strip()}"
    if prompt.startswith("System: "):
        head, sep, rest = prompt.partition("\n\nUser: ")
        if sep:
            return f"{head}\n\n{block}\n\nUser: {rest}"
    if prompt.startswith("User: "):
        return f"{block}\n\n{prompt}"
    return f"{block}\n\n{prompt}"


def context_text(value: Any) -> str | None:
    """Retrieved documents as text: strings, or dicts carrying page_content/text/content."""
    try:
        value = parse_io(value, "context")
    except SkipError:
        return None  # unreadable context is left out, not guessed
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, dict):
        for key in ("documents", "docs", "results", "context"):
            if key in value:
                return context_text(value[key])
        for key in ("page_content", "pageContent", "text", "content"):
            if isinstance(value.get(key), str):
                return value[key].strip() or None
        return None
    if isinstance(value, list):
        parts = [t for t in (context_text(v) for v in value) if t]
        return "\n\n".join(parts) or None
    return None


def build_pair(
    trace: TraceRecord,
    *,
    system_prompt_keys: Sequence[str],
    max_prompt_chars: int,
    context_keys: Sequence[str] = (),
) -> Pair:
    """The pair TLM scores for one trace, or :class:`SkipError` saying what and where."""
    source: str
    if trace.generations:
        # the model call itself holds the full messages; with several calls (an agent), the
        # last one produced the answer
        gen = max(trace.generations, key=lambda g: g.start_time)
        with reading("input"):
            prompt, _ = prompt_from_input(parse_io(gen.input), system_prompt=None)
        with reading("output"):
            response = response_from_output(parse_io(gen.output, "output"))
        source = "generation"
    else:
        with reading("metadata"):
            system_prompt = system_prompt_of(trace.metadata, system_prompt_keys)
        with reading("input"):
            prompt, source = prompt_from_input(parse_io(trace.input), system_prompt=system_prompt)
        with reading("output"):
            response = response_from_output(parse_io(trace.output, "output"))
    with reading("context"):
        context = context_text(trace.retrieved) if trace.retrieved else None
        if context is None:
            with reading("metadata"):
                context = context_text(first_value(trace.metadata, context_keys))
    query = last_user_turn(prompt) if context else None
    if context and context.strip() not in prompt:
        prompt = with_context(prompt, context)
    prompt, response = clean_text(prompt), clean_text(response)
    size = len(prompt) + len(response)
    if size > max_prompt_chars:
        raise SkipError(
            Reason.TOO_LARGE, f"{size} characters of prompt and response, budget {max_prompt_chars}"
        )
    return Pair(
        trace_id=trace.trace_id,
        start_time=trace.start_time,
        name=trace.name,
        environment=trace.environment,
        prompt=prompt,
        response=response,
        source=source,
        observation_id=trace.score_observation,
        context=clean_text(context) if context else None,
        query=clean_text(query) if query else None,
    )


# --- the Prefect task --------------------------------------------------------------------


@dataclass(slots=True)
class PairResult:
    pairs: list[Pair]
    skipped: list[Outcome]


def build_pairs(
    records: list[TraceRecord],
    *,
    system_prompt_keys: Sequence[str],
    max_prompt_chars: int,
    context_keys: Sequence[str] = (),
    logger: RunLogger | None = None,
) -> PairResult:
    """A pair or a recorded skip for every record: one bad trace never stops the others."""
    out = PairResult([], [])
    for rec in records:
        try:
            out.pairs.append(
                build_pair(
                    rec,
                    system_prompt_keys=system_prompt_keys,
                    max_prompt_chars=max_prompt_chars,
                    context_keys=context_keys,
                )
            )
        except Exception as err:
            skip = (
                err if isinstance(err, SkipError) else SkipError(Reason.UNREADABLE_TRACE, repr(err))
            )
            out.skipped.append(outcome_for(rec, Bucket.SKIPPED, skip.reason, skip.detail))
            if logger is not None and skip.reason.unexpected:
                logger.warning("skipped trace %s: %s", rec.trace_id, skip)
    return out


@task(name="build-pairs", task_run_name="pair chunk {chunk_no}", cache_policy=NO_CACHE)
def build_pairs_task(records: list[TraceRecord], tuning: Tuning, chunk_no: int) -> PairResult:
    logger = get_run_logger()
    result = build_pairs(
        records,
        system_prompt_keys=tuning.system_prompt_keys,
        max_prompt_chars=tuning.max_prompt_chars,
        context_keys=tuning.context_keys,
        logger=logger,
    )
    reasons = Counter(o.why for o in result.skipped)
    logger.info(
        "chunk %d: %d pairs, %d skipped %s",
        chunk_no,
        len(result.pairs),
        len(result.skipped),
        dict(reasons) if reasons else "",
    )
    return result
