"""Pure rules that keep one bad trace or string from costing a run: poison traces become skips,
every string sent is valid UTF-8 and bounded, markdown cannot be injected, cursors cannot loop."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from tasks.langfuse_api import CursorGuard, server_of
from tasks.models import Pair, Scored, TraceRecord, safe_text
from tasks.pairs import build_pairs
from tasks.report import EvalReport, LowTrustRow, lowest_table, summary_markdown
from tasks.upload import ScoreSpec, body_bytes, comment_text, pack, score_bodies

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
DEEP = "[" * 100_000 + "]" * 100_000  # past any JSON parser's recursion limit


def trace(trace_id: str, **kw: Any) -> TraceRecord:
    return TraceRecord(
        trace_id=trace_id,
        observation_id=trace_id,
        start_time=T0,
        name="q",
        input=kw.get("input", json.dumps({"args": ["Why?"], "kwargs": {}})),
        output=kw.get("output", "Because."),
        metadata=kw.get("metadata"),
        environment="default",
    )


def pairs_of(records: list[TraceRecord]) -> tuple[set[str], dict[str, str | None]]:
    out = build_pairs(
        records,
        system_prompt_keys=("system_prompt",),
        max_prompt_chars=10_000_000,
        context_keys=("context",),
    )
    return {p.trace_id for p in out.pairs}, {o.trace_id: o.reason for o in out.skipped}


def test_each_poison_trace_is_its_own_skip_saying_where() -> None:
    records = [
        trace("ok-1"),
        trace("deep-context", metadata={"context": DEEP}),
        trace("deep-system", metadata={"system_prompt": DEEP}),
        trace(
            "tool-args-5",
            output=json.dumps(
                {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": 5}}]}
            ),
        ),
        trace("deep-input", input=DEEP),
        trace("deep-output", output=DEEP),
        trace("ok-2"),
    ]
    paired, skipped = pairs_of(records)
    assert paired == {"ok-1", "ok-2"}
    assert skipped == {
        "deep-context": "unrecognised_metadata",
        "deep-system": "unrecognised_metadata",
        "tool-args-5": "unreadable_output",
        "deep-input": "unrecognised_input",
        "deep-output": "unrecognised_output",
    }


def test_any_exception_in_pairing_is_a_skip_not_a_crash() -> None:
    class Exploding(dict[str, Any]):
        def get(self, *_: Any, **__: Any) -> Any:
            raise KeyError("boom")

    paired, skipped = pairs_of([trace("ok"), trace("bad", metadata=Exploding(x=1))])
    assert paired == {"ok"} and skipped == {"bad": "unreadable_metadata"}


def test_lone_surrogates_are_replaced_everywhere_we_send_text() -> None:
    assert safe_text("fine ✓") == "fine ✓"
    assert safe_text("a\ud800b\udfffc") == "a\ufffdb\ufffdc"
    records = [trace("s", input=json.dumps({"args": ["Why\ud800?"], "kwargs": {}}))]
    out = build_pairs(records, system_prompt_keys=(), max_prompt_chars=10_000)
    assert out.pairs and "\ufffd" in out.pairs[0].prompt
    out.pairs[0].prompt.encode("utf-8")  # would raise on a lone surrogate


def scored(explanation: str, trace_id: str = "t\ud800") -> Scored:
    pair = Pair(trace_id, T0, "q", "env\udfff", "prompt", "response", "text")
    return Scored(pair=pair, score=0.25, explanation=explanation)


def test_a_score_body_is_valid_utf8_and_its_comment_bounded() -> None:
    spec = ScoreSpec("trust_score", {"evaluator": "x"}, comment_max_chars=20_000)
    (body,) = score_bodies(scored("because \ud83d of \udc00 this"), spec)
    json.dumps(body, default=str).encode("utf-8")
    assert "\ufffd" in body["comment"] and "\ufffd" in body["trace_id"]
    (huge,) = score_bodies(scored("x" * 1_200_000), spec)
    assert len(huge["comment"]) == 20_000 and huge["comment"].endswith("[truncated]")
    assert body_bytes(huge) < 100_000  # far under Langfuse's 1 MB body limit
    batches = pack([[huge], [body]] * 30, 900_000)
    assert all(sum(body_bytes(b) for b in batch) < 900_000 for batch in batches)
    assert comment_text(None, 100) is None and comment_text("short", 100) == "short"


EVIL = "abc)[x](https://evil.example `code` <b>"


def test_markdown_ids_and_links_render_as_plain_text() -> None:
    report = EvalReport(
        window_start=T0, window_end=T0, tags=["t`ag"], score_name="trust`](x)", uploaded=1
    )
    report.skipped = {"unreadable_output": [EVIL]}
    report.lowest = [
        LowTrustRow(
            trace_id=EVIL, name=EVIL, score=0.1, explanation=EVIL, start_time=T0,
            url=f"https://lf.example/project/p/traces/{EVIL}", question=EVIL, answer=EVIL,
        )
    ]  # fmt: skip
    md = summary_markdown(report)
    cells = " ".join(str(v) for row in lowest_table(report.lowest) for v in row.values())
    link_target = re.compile(r"(?<!\\)\]\(([^)]*)\)")  # a ] that markdown would not take as text
    assert link_target.findall(md) == []
    (target,) = link_target.findall(cells)  # ours, and only ours
    assert target.startswith("https://lf.example/project/p/traces/abc%29%5Bx%5D%28")
    assert " " not in target and ")" not in target
    for text in (md, cells):
        assert not re.search(r"(?<!\\)`(?!``)", text.replace("```", ""))  # no code span opens
        assert "<b>" not in text


def test_cursor_guard_stops_repeats_and_empty_pages() -> None:
    guard = CursorGuard("reading traces")
    assert guard.next("c1", rows=5) == "c1"
    assert guard.next("c2", rows=0) is None  # an empty page ends the listing
    assert guard.next(None, rows=5) is None
    with pytest.raises(RuntimeError, match="same cursor twice"):
        guard.next("c1", rows=5)


@pytest.mark.parametrize(
    ("version", "route"),
    [("4.16.0", "ingestion"), ("v4.16.0", "ingestion"), ("4.58.9", "ingestion"),
     ("4.59.0", "list"), ("5.1.0", "list"), (None, "list"), ("dev", "list")],
)  # fmt: skip
def test_the_write_path_follows_the_server_version(version: str | None, route: str) -> None:
    server = server_of(version)
    assert server.write == route
    # every batched route keeps our timestamps: the window's time range finds the scores
    assert server.batch_scores is True
    assert server_of(version, "single").write == "single"
    assert server_of(version, "single").batch_scores is False
    assert server_of(version, "batch").write == "list"
    assert server_of(version, "ingestion").write == "ingestion"
