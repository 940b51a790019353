"""One TLM ceiling for every run: with TRUST_EVAL_TLM_CONCURRENCY_LIMIT naming a Prefect global
concurrency limit, the runs' engines together never have more calls at TLM than its slots; each
engine takes the slots in leased blocks and gives them back when it has nothing to send."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from prefect import get_client
from pydantic import SecretStr

from flows.evaluate_traces import evaluate_traces
from sandbox.langfuse import LangfuseSandbox
from sandbox.tlm import TLMSandbox
from tasks.config import TLMSettings
from tasks.models import Pair
from tasks.score import ScoreResult, SharedLimit, TLMEngine
from tests.support.prefect_stack import global_limit
from tests.support.seeding import DAY, WINDOW, seed, windows_at_once

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("prefect_harness")]

CEILING, ENGINES, ITEMS = 6, 3, 24
T0 = datetime(2025, 6, 1, tzinfo=UTC)


@pytest.fixture
def ceiling() -> Iterator[str]:
    with global_limit("tlm-test", CEILING) as name:
        yield name


def slots_left(name: str, within_s: float = 10.0) -> int:
    """The limit's slots still taken once every holder had ``within_s`` to give them back (an
    ask cancelled on close is released by Prefect when the server grants it)."""
    deadline = time.monotonic() + within_s
    with get_client(sync_client=True) as client:
        while True:
            taken = client.read_global_concurrency_limit_by_name(name).active_slots
            if taken == 0 or time.monotonic() > deadline:
                return taken
            time.sleep(0.2)


def pairs(prefix: str, n: int) -> list[Pair]:
    return [
        Pair(f"{prefix}-{i}", T0, "t", None, f"{prefix} question {i}?", "An answer.", "chat")
        for i in range(n)
    ]


def score_side_by_side(tlm: TLMSandbox, shared: str | None) -> list[ScoreResult]:
    """``ENGINES`` engines (one per run) scoring ``ITEMS`` items each, all at once."""
    cfg = TLMSettings(api_key=SecretStr(tlm.api_key))
    limit = SharedLimit(shared, block=2, lease_s=60) if shared else None
    engines = [
        TLMEngine(cfg, quality_preset="medium", timeout_s=30, shared=limit) for _ in range(ENGINES)
    ]
    try:
        futures = [e.submit(pairs(f"{shared}-{n}", ITEMS)) for n, e in enumerate(engines)]
        return [f.result(timeout=90) for f in futures]
    finally:
        for e in engines:
            e.close()


def test_engines_stay_within_the_shared_ceiling_where_alone_they_exceed_it(
    tlm: TLMSandbox, ceiling: str
) -> None:
    tlm.set_latency(0.3)
    alone = score_side_by_side(tlm, None)
    peak_alone = tlm.peak_in_flight()
    tlm.reset()
    tlm.set_latency(0.3)
    shared = score_side_by_side(tlm, ceiling)
    peak_shared = tlm.peak_in_flight()

    for results in (alone, shared):  # every item scored either way, none sent twice
        assert [len(r.scored) for r in results] == [ITEMS] * ENGINES
    assert len(tlm.prompts) == ENGINES * ITEMS
    print(f"peak calls at TLM, {ENGINES} engines: {peak_alone} alone, {peak_shared} sharing "
          f"a ceiling of {CEILING}")  # fmt: skip
    assert peak_alone > CEILING  # the comparison is not vacuous
    assert 1 <= peak_shared <= CEILING
    assert slots_left(ceiling) == 0  # every block went back


def test_an_engine_that_cannot_take_slots_sends_nothing_and_says_why(tlm: TLMSandbox) -> None:
    cfg = TLMSettings(api_key=SecretStr(tlm.api_key))
    missing = SharedLimit(f"no-such-limit-{uuid4().hex[:6]}", block=16, lease_s=60)
    with TLMEngine(cfg, quality_preset="medium", timeout_s=10, shared=missing) as engine:
        result = engine.submit(pairs("x", 5)).result(timeout=30)
    assert result.scored == [] and len(result.failed) == 5
    assert result.fatal and "could not take slots of the shared TLM limit" in result.fatal
    assert missing.name in result.fatal
    assert tlm.prompts == []  # nothing was paid


def test_window_runs_share_the_ceiling_and_report_their_wait(
    langfuse_sandbox: LangfuseSandbox,
    tlm: TLMSandbox,
    monkeypatch: pytest.MonkeyPatch,
    ceiling: str,
) -> None:
    lf = langfuse_sandbox
    monkeypatch.setenv("TRUST_EVAL_TLM_CONCURRENCY_LIMIT", ceiling)
    monkeypatch.setenv("TRUST_EVAL_TLM_SLOT_BLOCK", "3")
    tlm.set_latency(0.3)
    tags = [f"ceiling-{i}-{uuid4().hex[:6]}" for i in range(2)]
    for tag in tags:
        seed(lf, 12, tags=(tag,), start=DAY)
    reports = windows_at_once(tags)
    assert sorted(r.uploaded for r in reports) == [12, 12] and all(r.ok for r in reports)
    assert tlm.peak_in_flight() <= CEILING
    assert slots_left(ceiling) == 0


def test_a_missing_limit_is_refused_before_any_call(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(langfuse_sandbox, 2, start=DAY)
    langfuse_sandbox.faults.reset_log()
    monkeypatch.setenv("TRUST_EVAL_TLM_CONCURRENCY_LIMIT", "tlm-in-flight-missing")
    with pytest.raises(Exception, match="make prefect") as err:
        evaluate_traces(tags=["x"], **WINDOW)
    assert "TRUST_EVAL_TLM_CONCURRENCY_LIMIT" in str(err.value)
    assert "\n" not in str(err.value)
    assert langfuse_sandbox.faults.requests == [] and tlm.prompts == []


@pytest.mark.parametrize(
    ("var", "decay", "says"),
    [
        ("TRUST_EVAL_TLM_CONCURRENCY_LIMIT", 1.0, "calls in flight"),
        ("TRUST_EVAL_LANGFUSE_RATE_LIMIT", 0.0, "needs a slot decay"),
    ],
)
def test_a_limit_of_the_wrong_kind_is_refused_before_any_call(
    langfuse_sandbox: LangfuseSandbox,
    tlm: TLMSandbox,
    monkeypatch: pytest.MonkeyPatch,
    var: str,
    decay: float,
    says: str,
) -> None:
    with global_limit("wrong-kind", 5, decay=decay) as name:
        langfuse_sandbox.faults.reset_log()
        monkeypatch.setenv(var, name)
        with pytest.raises(Exception, match=says) as err:
            evaluate_traces(tags=["x"], **WINDOW)
    assert var in str(err.value) and name in str(err.value)
    assert langfuse_sandbox.faults.requests == [] and tlm.prompts == []


def test_items_that_time_out_keep_their_slot_until_tlm_stops_working_on_them(
    tlm: TLMSandbox, ceiling: str
) -> None:
    """Every item outlives its 1 s timeout. TLM stops working on an item at the timeout the
    client sends (options.max_timeout), and the engine frees the item's slot only a moment
    after: at no time does TLM work on more items than the ceiling."""
    tlm.set_latency(5.0)
    cfg = TLMSettings(api_key=SecretStr(tlm.api_key))
    limit = SharedLimit(ceiling, block=2, lease_s=60)
    with TLMEngine(cfg, quality_preset="medium", timeout_s=1, shared=limit) as engine:
        result = engine.submit(pairs("slow", 12)).result(timeout=120)
    assert result.scored == [] and result.tlm_requests >= CEILING
    deadline = time.monotonic() + 60  # only a guard: TLM's own spans end when it stops working
    while tlm.scoring and time.monotonic() < deadline:
        time.sleep(0.1)
    assert 1 <= tlm.peak_in_flight() <= CEILING
    assert slots_left(ceiling) == 0
