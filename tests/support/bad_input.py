"""The bad-input catalogue's vocabulary (tests/flow/test_bad_input.py): what each case expects,
and the odd inputs the cases are made of."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

TAG = "TLM_eval_pipeline"
BUDGET = 20_000  # TRUST_EVAL_MAX_PROMPT_CHARS for the run
MS = timedelta(milliseconds=1)
LONG_SYSTEM = "You answer questions about the solar system, briefly and precisely. " * 5
TOOL_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}


# --------------------------------------------------------------------------- expectations


@dataclass(frozen=True)
class Scored:
    """Sent to TLM: exactly ``prompt``/``response`` when given, else containing the parts."""

    prompt: str | None = None
    response: str | None = None
    prompt_has: tuple[str, ...] = ()
    response_has: tuple[str, ...] = ()
    prompt_in: tuple[str, ...] = ()  # one of these (duplicate rows: either row)


@dataclass(frozen=True)
class Skipped:
    reasons: frozenset[str]

    def __init__(self, *reasons: str) -> None:
        object.__setattr__(self, "reasons", frozenset(reasons))


@dataclass(frozen=True)
class NotFetched:
    pass


Expect = Scored | Skipped | NotFetched


@dataclass(frozen=True)
class Case:
    id: str
    what: str  # one line for docs/RELIABILITY.md
    expect: Expect
    input: Any = None
    output: Any = "Fine."
    metadata: dict[str, Any] | None = None
    tags: tuple[str, ...] = (TAG,)
    at: timedelta | None = None  # start time offset from the window start (default: spread)
    name: str | None = None
    xfail: str | None = None  # "needs: ..." when pairs.py disagrees with the expectation


def chat(*turns: tuple[str, Any], **extra: Any) -> list[dict[str, Any]]:
    return [{"role": role, "content": content, **extra} for role, content in turns]


HUGE_CHAT = [
    {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}"} for i in range(601)
]
HUGE_CHAT_PROMPT = (
    "\n\n".join(
        ("User: " if i % 2 == 0 else "Assistant: ") + f"turn {i}" for i in range(len(HUGE_CHAT))
    )
    + "\n\nAssistant:"
)
NESTED_50: dict[str, Any] = {"leaf": "Where is Lima?"}
for _ in range(50):
    NESTED_50 = {"a": NESTED_50}
NESTED_INPUT_6: dict[str, Any] = {"input": "Where is Lima?"}
for _ in range(5):
    NESTED_INPUT_6 = {"input": NESTED_INPUT_6}
TOO_DEEP_JSON = '{"a":' * 2000 + '"Where is Lima?"' + "}" * 2000  # beyond json's recursion limit
AT_BUDGET_Q = "Q" * (BUDGET - len("Fine."))  # prompt + response == the budget: still scored
