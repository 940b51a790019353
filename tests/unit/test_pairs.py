"""The pair builder on every shape of trace io we read, and the skips it records."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from tasks.failures import SkipError
from tasks.models import GenerationRecord, TraceRecord
from tasks.pairs import build_pair, build_pairs

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
KEYS = ("system_prompt", "system")


def rec(
    inp: Any,
    out: Any,
    *,
    metadata: dict[str, Any] | None = None,
    raw: bool = False,
    generations: list[GenerationRecord] | None = None,
) -> TraceRecord:
    """A trace as Langfuse v2 returns it: io as JSON text (or ``raw`` strings as given)."""
    enc = (lambda v: v) if raw else (lambda v: None if v is None else json.dumps(v))
    return TraceRecord(
        trace_id="t1",
        observation_id="o1",
        start_time=T0,
        name="n",
        input=enc(inp),
        output=enc(out),
        metadata=metadata,
        environment="default",
        generations=generations or [],
    )


def pair(r: TraceRecord, budget: int = 250_000) -> tuple[str, str]:
    p = build_pair(r, system_prompt_keys=KEYS, max_prompt_chars=budget)
    return p.prompt, p.response


def skip_reason(r: TraceRecord, budget: int = 250_000) -> str:
    with pytest.raises(SkipError) as info:
        build_pair(r, system_prompt_keys=KEYS, max_prompt_chars=budget)
    return info.value.reason


# --- shapes that pair ------------------------------------------------------------------------


def test_seed_shape_system_prompt_in_metadata_and_observe_args() -> None:
    r = rec(
        {"args": ["What is the capital of France?"], "kwargs": {}},
        "The capital of France is Paris.",
        metadata={"system_prompt": "You are a trivia master."},
    )
    assert pair(r) == (
        "System: You are a trivia master.\n\nUser: What is the capital of France?\n\nAssistant:",
        "The capital of France is Paris.",
    )


def test_metadata_value_json_encoded_as_the_sdk_propagates_it() -> None:
    r = rec({"args": ["Q?"], "kwargs": {}}, "A.", metadata={"system_prompt": '"Be brief."'})
    assert pair(r)[0] == "System: Be brief.\n\nUser: Q?\n\nAssistant:"


def test_observe_kwargs_question() -> None:
    r = rec({"args": [], "kwargs": {"question": "Why is the sky blue?"}}, "Rayleigh scattering.")
    assert pair(r) == ("Why is the sky blue?", "Rayleigh scattering.")


def test_plain_string_input_and_output() -> None:
    assert pair(rec("hello?", "hi")) == ("hello?", "hi")


def test_io_strings_that_are_not_json_are_plain_text() -> None:
    assert pair(rec("what is 2+2", "4, of course", raw=True)) == ("what is 2+2", "4, of course")


def test_chat_messages_with_history_and_content_parts() -> None:
    msgs = [
        {"role": "system", "content": "You answer in French."},
        {"role": "user", "content": [{"type": "text", "text": "Hello"}]},
        {"role": "assistant", "content": "Bonjour"},
        {"role": "user", "content": "How are you?"},
    ]
    prompt, response = pair(rec(msgs, {"role": "assistant", "content": "Ça va bien."}))
    assert prompt == (
        "System: You answer in French.\n\nUser: Hello\n\nAssistant: Bonjour\n\n"
        "User: How are you?\n\nAssistant:"
    )
    assert response == "Ça va bien."


def test_chat_metadata_system_prompt_added_only_when_chat_has_none() -> None:
    msgs = [{"role": "system", "content": "Own"}, {"role": "user", "content": "Q"}]
    assert pair(rec(msgs, "A", metadata={"system_prompt": "Meta"}))[0] == (
        "System: Own\n\nUser: Q\n\nAssistant:"
    )
    msgs2 = [{"role": "user", "content": "Q"}]
    assert pair(rec(msgs2, "A", metadata={"system_prompt": "Meta"}))[0] == (
        "System: Meta\n\nUser: Q\n\nAssistant:"
    )


def test_tool_turns_are_part_of_the_prompt() -> None:
    msgs = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "18C, sunny"},
    ]
    prompt, response = pair(rec(msgs, {"role": "assistant", "content": "18C and sunny."}))
    assert "User: Weather in Paris?" in prompt
    assert '"name": "weather"' in prompt and '"city": "Paris"' in prompt
    assert "18C, sunny" in prompt and prompt.endswith("Assistant:")
    assert response == "18C and sunny."


def test_assistant_tool_call_with_no_content_as_response() -> None:
    out = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
        ],
    }
    _, response = pair(rec("Find it", out))
    assert "<tool_call>" in response and '"name": "lookup"' in response


def test_dict_inputs_with_prompt_like_keys() -> None:
    for key in ("prompt", "query", "question", "input"):
        assert pair(rec({key: "Q?"}, "A"))[0] == "Q?"
    assert pair(rec({"messages": [{"role": "user", "content": "Q?"}]}, "A"))[0] == "Q?"


def test_completion_shaped_and_dict_outputs() -> None:
    completion = {"id": "x", "choices": [{"message": {"role": "assistant", "content": "A1"}}]}
    assert pair(rec("Q", completion))[1] == "A1"
    assert pair(rec("Q", {"choices": [{"text": "A2"}]}))[1] == "A2"
    assert pair(rec("Q", {"output": "A3"}))[1] == "A3"
    assert pair(rec("Q", {"answer": "A4"}))[1] == "A4"


def test_generation_observation_wins_over_root_io() -> None:
    gen = GenerationRecord(
        observation_id="g1",
        start_time=T0,
        model="gpt-4o-mini",
        input=json.dumps([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]),
        output=json.dumps({"role": "assistant", "content": "R"}),
    )
    r = rec({"args": ["U"], "kwargs": {}}, "R (root)", generations=[gen])
    assert pair(r) == ("System: S\n\nUser: U\n\nAssistant:", "R")


def test_unicode_emoji_rtl_survive_and_control_characters_are_dropped() -> None:
    q = "¿Qué es 😀? مرحبا 你好\x00\x07 tab\tand\nnewline"
    prompt, _ = pair(rec(q, "ok"))
    assert prompt == "¿Qué es 😀? مرحبا 你好 tab\tand\nnewline"


# --- skips -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inp", "out", "reason"),
    [
        (None, "A", "missing_input"),
        ("", "A", "empty_input"),
        ("   ", "A", "empty_input"),
        ({}, "A", "missing_input"),
        ([], "A", "missing_input"),
        ({"args": [], "kwargs": {}}, "A", "missing_input"),
        (42, "A", "unsupported_input"),
        ([1, 2, 3], "A", "unrecognised_input"),
        ({"foo": "bar"}, "A", "unrecognised_input"),
        ("Q", None, "missing_output"),
        ("Q", "", "empty_output"),
        ("Q", 3.14, "unsupported_output"),
        ("Q", {"foo": 1}, "unrecognised_output"),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            "A",
            "unsupported_content",
        ),
    ],
)
def test_unpairable_traces_are_skipped_with_a_reason(inp: Any, out: Any, reason: str) -> None:
    assert skip_reason(rec(inp, out)) == reason


def test_too_large_is_skipped_with_its_budget() -> None:
    assert skip_reason(rec("x" * 500, "y" * 600), budget=1000) == "too_large"


def test_build_pairs_accounts_for_every_record() -> None:
    records = [rec("Q", "A"), rec(None, "A"), rec("Q", None)]
    result = build_pairs(records, system_prompt_keys=KEYS, max_prompt_chars=10_000)
    assert len(result.pairs) == 1
    assert sorted(o.reason or "" for o in result.skipped) == ["missing_input", "missing_output"]
