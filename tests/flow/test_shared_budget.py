"""One Langfuse request budget for every run: with TRUST_EVAL_LANGFUSE_RATE_LIMIT naming a Prefect
global concurrency limit (slot decay = the plan's rate), concurrent runs take turns instead of
each spending the organisation's budget and waiting out its own 429s.

The sandbox's limit is time-scaled (10 requests per 2 s: Hobby's 30 a minute, 10 times faster),
as the benchmarks do, so the comparison takes seconds, not minutes."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import uuid4

import pytest

from sandbox.langfuse import LangfuseSandbox
from sandbox.tlm import TLMSandbox
from tasks.report import EvalReport
from tests.support.prefect_stack import global_limit
from tests.support.seeding import DAY, seed, windows_at_once

pytestmark = pytest.mark.usefixtures("prefect_harness")

LIMIT, WINDOW_S = 10, 2.0  # the sandbox's budget: 10 requests per 2 s, shared by the runs
RUNS = 3


@pytest.fixture
def budget() -> Iterator[str]:
    """A global concurrency limit refilled at 90% of the sandbox's rate, one slot at a time."""
    with global_limit("langfuse-test", 1, decay=0.9 * LIMIT / WINDOW_S) as name:
        yield name


def run_concurrently(lf: LangfuseSandbox) -> tuple[list[EvalReport], int, int]:
    """``RUNS`` window runs of different streams at once; (reports, requests, 429s)."""
    tags = [f"stream-{i}-{uuid4().hex[:6]}" for i in range(RUNS)]
    for tag in tags:
        seed(lf, 8, tags=(tag,), start=DAY)
    lf.faults.reset_log()
    lf.set_rate_limit(per_minute=LIMIT, window_s=WINDOW_S)
    reports = windows_at_once(tags)
    requests = len(lf.faults.requests)
    return reports, requests, lf.faults.count(status=429)


@pytest.mark.timing  # a request limit of real seconds, met or not by runs in parallel
def test_a_shared_request_budget_keeps_429s_rare_where_runs_alone_hit_them(
    langfuse_sandbox: LangfuseSandbox,
    tlm: TLMSandbox,
    monkeypatch: pytest.MonkeyPatch,
    budget: str,
) -> None:
    lf = langfuse_sandbox
    monkeypatch.setenv("TRUST_EVAL_PAGE_SIZE", "2")  # 4 pages a run: more requests to share
    monkeypatch.setenv("TRUST_EVAL_RETRIES", "8")

    alone, requests_alone, limited_alone = run_concurrently(lf)
    monkeypatch.setenv("TRUST_EVAL_LANGFUSE_RATE_LIMIT", budget)
    shared, requests_shared, limited_shared = run_concurrently(lf)

    for reports in (alone, shared):  # every score lands either way
        assert len(reports) == RUNS and all(r.uploaded == 8 and r.ok for r in reports)
    print(f"429s without the shared budget: {limited_alone} of {requests_alone} requests; "
          f"with it: {limited_shared} of {requests_shared}")  # fmt: skip
    assert limited_alone / requests_alone > 0.05  # the comparison is not vacuous
    assert limited_shared <= 0.05 * requests_shared
