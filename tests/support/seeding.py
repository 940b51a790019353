"""Seeding the Langfuse sandbox with traces, shared by the flow tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sandbox.langfuse_app import LangfuseSandbox

DAY = datetime(2026, 11, 28, tzinfo=UTC)
WINDOW: dict[str, Any] = {"window_start": DAY, "window_end": DAY + timedelta(days=1)}
TAG = "TLM_eval_pipeline"


def seed(
    lf: LangfuseSandbox,
    n: int,
    *,
    tags: tuple[str, ...] = (TAG,),
    start: datetime = DAY,
    step: timedelta = timedelta(minutes=7),
    **kw: Any,
) -> list[str]:
    """``n`` traces of the seed app's shape, ``step`` apart from ``start``; their ids."""
    return [
        lf.store.add_trace(
            name=f"q{i}",
            tags=tags,
            start_time=start + i * step,
            input=kw.get("input", {"args": [f"Question {i}?"], "kwargs": {}}),
            output=kw.get("output", f"Answer {i}."),
            metadata=kw.get("metadata", {"system_prompt": "You are a trivia master."}),
        )
        for i in range(n)
    ]


def scores_by_trace(lf: LangfuseSandbox) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for s in lf.store.all_scores():
        out.setdefault(s.trace_id or "", []).append(s)
    return out
