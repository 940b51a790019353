"""The bad-input catalogue (docs/RELIABILITY.md): odd traces in one window, ONE flow run.

Each case is then checked on its own (``test_case[<id>]``): ``Scored`` (TLM got exactly the
expected prompt and response; one score), ``Skipped`` (the expected reason; no score) or
``NotFetched`` (in no bucket; nothing sent). The whole-window checks are tests of their own.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from flows.evaluate_traces import evaluate_traces
from sandbox.langfuse import LangfuseSandbox
from sandbox.tlm import TLMSandbox, session_tlm_sandbox
from tasks.report import WHY_CHARS, EvalReport, md_escape, short_id
from tests.support.bad_input import (
    AT_BUDGET_Q,
    BUDGET,
    HUGE_CHAT,
    HUGE_CHAT_PROMPT,
    LONG_SYSTEM,
    MS,
    NESTED_50,
    NESTED_INPUT_6,
    TAG,
    TOO_DEEP_JSON,
    TOOL_CALL,
    Case,
    NotFetched,
    Scored,
    Skipped,
    chat,
)
from tests.support.env import guard_network
from tests.support.seeding import seed

DAY = datetime(2026, 11, 28, tzinfo=UTC)
END = DAY + timedelta(days=1)


CASES: list[Case] = [
    # --- missing, null, empty
    Case("input_missing", "input is absent (null)", Skipped("missing_input"), input=None),
    Case("output_missing", "output is absent (null)", Skipped("missing_output"), "Q?", None),
    Case("input_json_null", 'input is the JSON text "null"', Skipped("missing_input"), "null"),
    Case(
        "output_json_null",
        'output is the JSON text "null"',
        Skipped("missing_output"),
        "Q?",
        "null",
    ),
    Case("input_empty_string", "input is an empty string", Skipped("empty_input"), ""),
    Case("output_empty_string", "output is an empty string", Skipped("empty_output"), "Q?", ""),
    Case("input_whitespace", "input is only whitespace", Skipped("empty_input"), " \n\t "),
    Case("output_whitespace", "output is only whitespace", Skipped("empty_output"), "Q?", "  \n"),
    Case("input_empty_list", "input is []", Skipped("missing_input"), []),
    Case("input_empty_object", "input is {}", Skipped("missing_input"), {}),
    Case("output_empty_object", "output is {}", Skipped("missing_output"), "Q?", {}),
    Case(
        "observe_no_args",
        "@observe input with no arguments",
        Skipped("missing_input"),
        {"args": [], "kwargs": {}},
    ),
    # --- not JSON, JSON of the wrong kind
    Case(
        "input_not_json",
        "input text that is not JSON (looks like broken JSON)",
        Scored("What is 2+2? {not json", "4 [unclosed"),
        "What is 2+2? {not json",
        "4 [unclosed",
    ),
    Case(
        "input_json_string",
        "input is a JSON-encoded string",
        Scored("Quoted question?", "Fine."),
        '"Quoted question?"',
    ),
    Case("input_number", "input is a JSON number", Skipped("unsupported_input"), 42),
    Case("output_number", "output is a JSON number", Skipped("unsupported_output"), "Q?", 42),
    Case("input_bool", "input is a JSON boolean", Skipped("unsupported_input"), True),
    Case(
        "input_list_numbers", "input is a list of numbers", Skipped("unrecognised_input"), [1, 2, 3]
    ),
    Case(
        "output_list_numbers",
        "output is a list of numbers",
        Skipped("unrecognised_output"),
        "Q?",
        [1.5, 2.5],
    ),
    Case(
        "input_unknown_keys",
        "input object with no prompt-like key",
        Skipped("unrecognised_input"),
        {"foo": "bar", "n": 1},
    ),
    Case(
        "output_unknown_keys",
        "output object with no response-like key",
        Skipped("unrecognised_output"),
        "Q?",
        {"foo": "bar"},
    ),
    # --- content parts
    Case(
        "image_part",
        "a user message with an image content part",
        Skipped("unsupported_content"),
        chat(
            (
                "user",
                [
                    {"type": "text", "text": "What is in this picture?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                    },
                ],
            )
        ),
    ),
    Case(
        "unknown_part",
        "a content part of an unknown type",
        Skipped("unsupported_content"),
        chat(("user", [{"type": "refusal", "refusal": "no"}])),
    ),
    Case(
        "text_parts",
        "a user message made of several text parts",
        Scored("Part one.\nPart two.", "Fine."),
        chat(
            ("user", [{"type": "text", "text": "Part one."}, {"type": "text", "text": "Part two."}])
        ),
    ),
    # --- chat shapes
    Case(
        "tool_call_no_content",
        "history: an assistant turn with a tool call and no content, then the tool's answer",
        Scored(
            prompt_has=(
                "System: Use tools.",
                "User: Weather in Paris?",
                '"name": "get_weather"',
                '"city": "Paris"',
                "18C and sunny",
            ),
            response="It is 18C and sunny in Paris.",
        ),
        [
            {"role": "system", "content": "Use tools."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"},
        ],
        "It is 18C and sunny in Paris.",
    ),
    Case(
        "output_tool_call_only",
        "output: an assistant message with a tool call and no content",
        Scored(prompt="Weather in Paris?", response_has=("<tool_call>", '"get_weather"', "Paris")),
        chat(("user", "Weather in Paris?")),
        {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
    ),
    Case(
        "tool_args_invalid_json",
        "history: a tool call whose arguments are not valid JSON",
        Skipped("bad_tool_call"),
        [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {**TOOL_CALL, "function": {"name": "get_weather", "arguments": '{"city": Par'}}
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        ],
        "18C.",
    ),
    Case(
        "output_tool_args_invalid_json",
        "output: a tool call whose arguments are not valid JSON",
        Skipped("bad_tool_call"),
        chat(("user", "Weather in Paris?")),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {**TOOL_CALL, "function": {"name": "get_weather", "arguments": '{"city": Par'}}
            ],
        },
    ),
    Case(
        "only_system_message",
        "a message list holding only a system message",
        Skipped("missing_input", "empty_input"),
        chat(("system", "You are helpful.")),
    ),
    Case(
        "output_chat_no_assistant",
        "output messages without an assistant turn",
        Skipped("missing_output"),
        "Q?",
        chat(("user", "Q?")),
    ),
    Case(
        "trailing_assistant_in_input",
        "input chat ending with the assistant's answer (not part of the prompt)",
        Scored("System: Be terse.\n\nUser: 2+2?\n\nAssistant:", "4"),
        chat(("system", "Be terse."), ("user", "2+2?"), ("assistant", "4")),
        {"role": "assistant", "content": "4"},
    ),
    Case(
        "huge_number_of_messages",
        "601 chat turns (under the budget): every turn in the prompt",
        Scored(HUGE_CHAT_PROMPT, "Fine."),
        HUGE_CHAT,
    ),
    # --- size
    Case(
        "too_large",
        f"prompt beyond the budget (TRUST_EVAL_MAX_PROMPT_CHARS={BUDGET})",
        Skipped("too_large"),
        "Q" * (BUDGET + 1),
    ),
    Case(
        "output_too_large",
        "response beyond the budget",
        Skipped("too_large"),
        "Q?",
        "A" * (BUDGET + 1),
    ),
    Case(
        "at_budget",
        "prompt + response exactly at the budget",
        Scored(AT_BUDGET_Q, "Fine."),
        AT_BUDGET_Q,
    ),
    # --- text
    Case(
        "unicode_emoji_rtl",
        "accents, emoji, Arabic and Hebrew (right-to-left) text",
        Scored("¿Qué hora es? 🕐 كم الساعة؟ מה השעה?", "Son las 3 🕒 — الساعة الثالثة"),
        "¿Qué hora es? 🕐 كم الساعة؟ מה השעה?",
        "Son las 3 🕒 — الساعة الثالثة",
    ),
    Case(
        "control_characters",
        "NUL, BEL, ESC and vertical tab (dropped); tab and newline kept",
        Scored("Hello world[0m?\tTab\nLine", "Fine."),
        "Hello\x00 wor\x07ld\x1b[0m?\tTab\nLine",
        "Fi\x0bne.",
    ),
    Case(
        "markdown_html",
        "markdown and HTML in the input (sent as is; escaped in the artifacts)",
        Scored(
            "<script>alert('x')</script> **What** is `2+2`? | a | b |",
            "<b>4</b> [link](javascript:alert(1))",
        ),
        "<script>alert('x')</script> **What** is `2+2`? | a | b |",
        "<b>4</b> [link](javascript:alert(1))",
        name="<img src=x onerror=alert(1)>",
    ),
    # --- metadata system prompt
    Case(
        "long_system_prompt",
        "a system prompt of 340 characters in metadata (over the 200-character truncation)",
        Scored(f"System: {LONG_SYSTEM}\n\nUser: How many moons has Mars?\n\nAssistant:", "Two."),
        {"args": ["How many moons has Mars?"], "kwargs": {}},
        "Two.",
        metadata={"system_prompt": LONG_SYSTEM},
    ),
    Case(
        "system_prompt_not_string",
        "a metadata system prompt that is an object (ignored)",
        Scored("How far is the Moon?", "About 384,400 km."),
        {"args": ["How far is the Moon?"], "kwargs": {}},
        "About 384,400 km.",
        metadata={"system_prompt": {"text": "Be brief."}},
    ),
    Case(
        "system_prompt_number",
        "a metadata system prompt that is a number (ignored)",
        Scored("How far is the Sun?", "About 150 million km."),
        {"args": ["How far is the Sun?"], "kwargs": {}},
        "About 150 million km.",
        metadata={"system_prompt": 42},
    ),
    # --- nesting
    Case(
        "nested_50_no_prompt",
        "JSON nested 50 levels deep with no prompt-like key",
        Skipped("unrecognised_input"),
        NESTED_50,
    ),
    Case(
        "nested_prompt_too_deep",
        "a prompt nested 6 levels deep under prompt-like keys",
        Skipped("unrecognised_input"),
        NESTED_INPUT_6,
    ),
    Case(
        "nested_beyond_parser",
        "JSON nested 2000 levels deep (beyond the JSON parser's recursion limit)",
        Skipped("unrecognised_input"),
        TOO_DEEP_JSON,
    ),
    # --- which traces are in the window
    Case("no_tags", "a trace with no tags", NotFetched(), "Untagged?", tags=()),
    Case("other_tag", "a trace with another tag only", NotFetched(), "Other?", tags=("other",)),
    Case(
        "at_window_start",
        "starts exactly at the window start (inclusive)",
        Scored("At the start?", "Fine."),
        "At the start?",
        at=timedelta(0),
    ),
    Case(
        "before_window_start",
        "starts 1 ms before the window",
        NotFetched(),
        "Before the start?",
        at=-MS,
    ),
    Case(
        "before_window_end",
        "starts 1 ms before the window end",
        Scored("Just before the end?", "Fine."),
        "Just before the end?",
        at=timedelta(days=1) - MS,
    ),
    Case(
        "at_window_end",
        "starts exactly at the window end (exclusive)",
        NotFetched(),
        "At the end?",
        at=timedelta(days=1),
    ),
    Case(
        "observe_kwargs",
        "@observe input with the question as a keyword argument",
        Scored("Where is Lima?", "In Peru."),
        {"args": [], "kwargs": {"question": "Where is Lima?"}},
        "In Peru.",
    ),
]
DUPLICATE = Case(
    "duplicate_rows",
    "one trace, two root rows (an unmerged store): scored once",
    Scored(prompt_in=("Duplicate row one?", "Duplicate row two?")),
    "Duplicate row one?",
)
CASES.append(DUPLICATE)
BY_ID = {c.id: c for c in CASES}
assert len(BY_ID) == len(CASES), "case ids must be unique"


# --------------------------------------------------------------------------- the one run


@dataclass
class Run:
    report: EvalReport
    ids: dict[str, str]  # case id -> trace id
    calls: list[dict[str, Any]]  # what TLM received
    scores: list[Any]  # what Langfuse stored
    artifacts: list[Any]
    sent_for: dict[str, tuple[str, str]] = field(default_factory=dict)  # trace id -> pair

    def bucket_of(self, trace_id: str) -> list[str]:
        r = self.report
        found = [f"skipped:{k}" for k, v in r.skipped.items() if trace_id in v]
        found += [f"failed_to_score:{k}" for k, v in r.failed_to_score.items() if trace_id in v]
        found += [f"failed_to_upload:{k}" for k, v in r.failed_to_upload.items() if trace_id in v]
        found += [f"scored:{s.id}" for s in self.scores if s.trace_id == trace_id]
        return found


_REF = re.compile(r"\(ref ([0-9a-f]{12})\)")


def _ref(prompt: str, response: str) -> str:
    import hashlib

    return hashlib.sha256(prompt.encode() + b"\x00" + response.encode()).hexdigest()[:12]


def seed_cases(lf: LangfuseSandbox) -> dict[str, str]:
    ids: dict[str, str] = {}
    for i, case in enumerate(CASES):
        at = case.at if case.at is not None else timedelta(hours=1, minutes=i)
        (ids[case.id],) = seed(
            lf,
            1,
            tags=case.tags,
            start=DAY + at,
            name=case.name or case.id,
            input=case.input,
            output=case.output,
            metadata=case.metadata,
        )
    # the second root row of the same trace, newer than the first
    lf.store.add_trace(
        trace_id=ids[DUPLICATE.id],
        name=DUPLICATE.id,
        tags=(TAG,),
        start_time=DAY + timedelta(hours=3),
        input="Duplicate row two?",
        output="Fine.",
    )
    return ids


async def _read_artifacts(flow_run_id: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    only_this_run = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)]))
    async with get_client() as client:
        return list(await client.read_artifacts(artifact_filter=only_this_run))


@pytest.fixture(scope="module")
def catalogue(prefect_harness: None) -> Iterator[Run]:
    """Seed every case into one window, run the flow once, keep what every layer recorded."""
    mp = pytest.MonkeyPatch()
    tlm: TLMSandbox = session_tlm_sandbox()
    tlm.reset()
    try:
        for name in ("LANGFUSE_HOST", "LANGFUSE_TRACING_ENVIRONMENT", "HTTP_PROXY", "HTTPS_PROXY"):
            mp.delenv(name, raising=False)
        mp.setenv("NO_PROXY", "127.0.0.1,localhost")
        guard_network(mp)
        env = {
            **tlm.env(),
            "LANGFUSE_TIMEOUT": "5",
            "TRUST_EVAL_RETRIES": "2",
            "TRUST_EVAL_RETRY_BASE_DELAY_S": "0.01",
            "TRUST_EVAL_RETRY_MAX_DELAY_S": "1",
            "TRUST_EVAL_TLM_TIMEOUT_S": "20",
            "TRUST_EVAL_SETTLE_LAG_S": "0",
            "TRUST_EVAL_MAX_PROMPT_CHARS": str(BUDGET),
            "TRUST_EVAL_LOWEST_N": "1000",  # every upload in the lowest-trust artifact
        }
        for k, v in env.items():
            mp.setenv(k, v)
        with LangfuseSandbox() as lf:
            for k, v in lf.env().items():
                mp.setenv(k, v)
            ids = seed_cases(lf)
            tlm.rich_explanations = True  # explanations carry markup too
            report = evaluate_traces(window_start=DAY, window_end=END, tags=[TAG])
            run = Run(
                report=report,
                ids=ids,
                calls=tlm.calls,
                scores=lf.store.all_scores(),
                artifacts=asyncio.run(_read_artifacts(str(report.flow_run_id))),
            )
        by_ref = {
            _ref(c["prompt"], c["response"]["response"]): (c["prompt"], c["response"]["response"])
            for c in run.calls
        }
        for s in run.scores:
            m = _REF.search(s.comment or "")
            if m and m.group(1) in by_ref:
                run.sent_for[s.trace_id] = by_ref[m.group(1)]
        yield run
    finally:
        tlm.reset()
        mp.undo()


# --------------------------------------------------------------------------- per case


def _param(case: Case) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_case(catalogue: Run, case: Case) -> None:
    trace_id = catalogue.ids[case.id]
    where = catalogue.bucket_of(trace_id)
    exp = case.expect
    if isinstance(exp, NotFetched):
        assert where == [], f"{case.id}: outside the window or tags, yet {where}"
        return
    assert len(where) == 1, f"{case.id}: must be in exactly one bucket, is in {where or 'none'}"
    if isinstance(exp, Skipped):
        reasons = {k for k, v in catalogue.report.skipped.items() if trace_id in v}
        assert reasons, f"{case.id}: expected a skip {sorted(exp.reasons)}, got {where}"
        assert reasons <= exp.reasons, f"{case.id}: skipped as {reasons}, expected {exp.reasons}"
        return
    assert where[0].startswith("scored:"), f"{case.id}: expected a score, got {where}"
    assert trace_id in catalogue.sent_for, f"{case.id}: its score matches no TLM request"
    prompt, response = catalogue.sent_for[trace_id]
    if exp.prompt is not None:
        assert prompt == exp.prompt, f"{case.id}: TLM got prompt {prompt[:300]!r}"
    if exp.response is not None:
        assert response == exp.response, f"{case.id}: TLM got response {response[:300]!r}"
    for part in exp.prompt_has:
        assert part in prompt, f"{case.id}: {part!r} not in prompt {prompt[:500]!r}"
    for part in exp.response_has:
        assert part in response, f"{case.id}: {part!r} not in response {response[:500]!r}"
    if exp.prompt_in:
        assert prompt in exp.prompt_in, f"{case.id}: TLM got prompt {prompt[:300]!r}"


# --------------------------------------------------------------------------- the whole window


def test_every_fetched_trace_in_exactly_one_bucket(catalogue: Run) -> None:
    report = catalogue.report
    in_window = [c for c in CASES if not isinstance(c.expect, NotFetched)]
    assert report.fetched == len(in_window), report.counts()
    assert report.accounted() == report.fetched, report.counts()
    everywhere = [t for v in report.skipped.values() for t in v]
    everywhere += [t for v in report.failed_to_score.values() for t in v]
    everywhere += [t for v in report.failed_to_upload.values() for t in v]
    everywhere += [s.trace_id for s in catalogue.scores]
    twice = {t: n for t, n in Counter(everywhere).items() if n > 1}
    assert not twice, f"traces counted twice: {twice}"
    assert not report.failed_to_score and not report.failed_to_upload


def test_no_duplicate_and_no_unscored_score(catalogue: Run) -> None:
    keys = Counter((s.trace_id, s.name) for s in catalogue.scores)
    assert all(n == 1 for n in keys.values()), f"duplicates: {keys.most_common(3)}"
    scored_cases = {catalogue.ids[c.id] for c in CASES if isinstance(c.expect, Scored)}
    landed = {s.trace_id for s in catalogue.scores}
    xfailed = {catalogue.ids[c.id] for c in CASES if c.xfail}
    unscorable = landed - xfailed - scored_cases
    assert not unscorable, f"scores for traces that must not be scored: {unscorable}"
    # one TLM item per scored trace, none for a skipped or unfetched one
    assert len(catalogue.calls) == len(landed) == catalogue.report.uploaded
    assert len(catalogue.sent_for) == len(landed), "a score that matches no TLM request"


def test_markup_is_escaped_in_the_artifacts(catalogue: Run) -> None:
    table = next(a for a in catalogue.artifacts if (a.key or "").startswith("trust-lowest-"))
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert len(rows) == catalogue.report.uploaded  # TRUST_EVAL_LOWEST_N covers every upload
    raw = re.compile(r"(?<!\\)[<>|`*\[\]]")
    for row in rows:
        for col in ("question", "answer", "explanation"):
            bare = raw.findall(row[col] or "")
            assert not bare, f"unescaped {bare} in {col} of row {row['rank']}: {row[col][:200]!r}"
        label = row["trace"].split("](", 1)[0].removeprefix("[")
        assert not raw.findall(label), f"unescaped markup in the trace label: {row['trace']!r}"
    markup = next(r for r in rows if "script" in r["question"])
    assert "\\<script\\>" in markup["question"] and "\\*\\*What\\*\\*" in markup["question"]
    # explanations carry markup (tlm.rich_explanations): each cell is the escaped explanation
    full = {r.trace_id: r.explanation or "" for r in catalogue.report.lowest}
    assert all("<script>" in e for e in full.values())
    for row, low in zip(rows, catalogue.report.lowest, strict=True):
        assert row["explanation"] == md_escape(low.explanation, WHY_CHARS)
    assert "\\<script\\>" in md_escape(next(iter(full.values())), 10_000)
    # the link text is the trace's short id, escaped: no name or id markup reaches the page
    for row, low in zip(rows, catalogue.report.lowest, strict=True):
        assert row["trace"].startswith(f"[{md_escape(short_id(low.trace_id), 80)}]")
    summary = next(a for a in catalogue.artifacts if (a.key or "").startswith("trust-summary-"))
    assert "<script>" not in summary.data and "<img" not in summary.data
