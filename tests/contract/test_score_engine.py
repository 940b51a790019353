"""TLMEngine against the TLM sandbox over real HTTP, through the real cleanlab-tlm client."""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from sandbox.faults import Fault
from sandbox.tlm import TLMSandbox, synthetic_score
from tasks.config import TLMSettings
from tasks.models import Pair
from tasks.score import REFUSED_KEY, ScoreResult, TLMEngine

T0 = datetime(2025, 6, 1, tzinfo=UTC)


def pairs(prefix: str, n: int) -> list[Pair]:
    return [
        Pair(f"{prefix}-{i}", T0, "t", None, f"{prefix} question {i}?", "An answer.", "chat")
        for i in range(n)
    ]


@pytest.fixture
def engine(tlm: TLMSandbox) -> Iterator[TLMEngine]:
    cfg = TLMSettings(api_key=SecretStr(tlm.api_key))
    with TLMEngine(cfg, quality_preset="medium", timeout_s=10) as eng:
        yield eng


def test_scores_every_pair_in_order(tlm: TLMSandbox, engine: TLMEngine) -> None:
    chunk = pairs("a", 12)
    result = engine.submit(chunk).result(timeout=20)
    assert [s.score for s in result.scored] == [
        synthetic_score(p.prompt, p.response) for p in chunk
    ]
    assert [s.pair for s in result.scored] == chunk
    assert all(s.explanation for s in result.scored)
    assert (result.failed, result.tlm_requests, result.fatal, result.all_failed) == (
        [],
        12,
        None,
        False,
    )
    assert engine.submit([]).result() == ScoreResult([], [], 0)
    calls = tlm.calls
    assert len(calls) == 12
    assert calls[0]["options"] == {
        "model": "gpt-4.1-mini",
        "log": ["explanation"],
        "max_timeout": 10,
    }


def test_concurrency_carries_over_to_the_next_chunk(tlm: TLMSandbox) -> None:
    """Chunk 2's items are all held at TLM: what the engine sends before any answer is the
    window it learned on chunk 1 (a fresh client would send 4). The items' timeout is long: a
    held item must not time out while a busy machine is still sending the window."""
    cfg = TLMSettings(api_key=SecretStr(tlm.api_key))
    with TLMEngine(cfg, quality_preset="medium", timeout_s=300) as engine:
        first = engine.submit(pairs("c1", 60)).result(timeout=120)
        assert len(first.scored) == 60
        window = engine.stats()["window"]
        assert window > 16
        tlm.faults.set("tlm.score", Fault(hold_items={"c2"}))
        second = engine.submit(pairs("c2", 60))
        try:
            deadline = time.monotonic() + 120  # only a guard against a stuck test
            while tlm.scoring < min(window, 60) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert tlm.scoring == min(window, 60) and not second.done()
        finally:
            tlm.faults.clear()  # no more holds (an item sent after this is not held), and go
        assert len(second.result(timeout=240).scored) == 60


def test_next_chunk_runs_while_the_previous_chunks_tail_is_out(
    tlm: TLMSandbox, engine: TLMEngine
) -> None:
    """Chunk 1's last item is held at TLM: chunk 2 is sent and lands all the same."""
    engine.submit(pairs("probe", 1)).result(timeout=60)
    slow, fast = pairs("slow", 1), pairs("fast", 10)
    tlm.faults.set("tlm.score", Fault(hold_items={slow[0].prompt}))
    f1 = engine.submit(fast[:5] + slow)
    f2 = engine.submit(fast[5:])
    r2 = f2.result(timeout=60)
    assert len(r2.scored) == 5
    assert not f1.done()  # chunk 2 finished while chunk 1's slowest item was still out
    tlm.faults.release_hangs()
    r1 = f1.result(timeout=60)
    assert len(r1.scored) == 6


def test_per_item_timeout_is_a_recorded_failure(tlm: TLMSandbox) -> None:
    slow, fast = pairs("slow", 1), pairs("fast", 4)
    tlm.faults.set("tlm.score", Fault(hold_items={slow[0].prompt}))  # never answered
    cfg = TLMSettings(api_key=SecretStr(tlm.api_key))
    with TLMEngine(cfg, quality_preset="medium", timeout_s=0.8) as engine:
        result = engine.submit(fast + slow).result(timeout=60)  # the held answer never comes
    assert [s.pair for s in result.scored] == fast
    [failed] = result.failed
    assert failed.trace_id == slow[0].trace_id
    assert failed.why.startswith("tlm_error: Timeout while waiting")
    assert result.fatal is None and not result.all_failed


def test_a_chunk_where_every_item_failed_is_not_fatal(tlm: TLMSandbox, engine: TLMEngine) -> None:
    tlm.fail_status = 422  # a per-item error the client does not retry
    tlm.faults.set("tlm.score", Fault(fail_items={"question"}))
    result = engine.submit(pairs("bad", 5)).result(timeout=10)
    assert result.scored == [] and len(result.failed) == 5
    assert result.all_failed and result.fatal is None
    assert result.tlm_requests == 5
    assert all("injected failure" in o.why for o in result.failed)
    tlm.faults.clear()
    again = engine.submit(pairs("good", 3)).result(timeout=10)
    assert len(again.scored) == 3 and not again.all_failed


def test_a_refused_key_is_fatal_after_one_request(tlm: TLMSandbox) -> None:
    cfg = TLMSettings(api_key=SecretStr("not-the-key"))
    with TLMEngine(cfg, quality_preset="medium", timeout_s=10) as engine:
        first = engine.submit(pairs("k1", 50))
        second = engine.submit(pairs("k2", 50))
        r1, r2 = first.result(timeout=10), second.result(timeout=10)
        r3 = engine.submit(pairs("k3", 5)).result(timeout=10)
    assert tlm.faults.count("tlm.score") == 1
    assert tlm.faults.count("tlm.score", status=401) == 1
    for r in (r1, r2, r3):
        assert r.fatal and r.fatal.startswith(REFUSED_KEY)
        assert r.all_failed and r.scored == []
    assert r1.tlm_requests == 1 and r2.tlm_requests == 0 and r3.tlm_requests == 0
    assert len(r1.failed) == 50 and len(r2.failed) == 50
    assert "Invalid API key" in r1.failed[0].why
    assert r1.failed[1].why == "not sent: TLM refused the API key"


def test_close_with_work_in_flight_does_not_hang(tlm: TLMSandbox) -> None:
    tlm.set_latency(30)  # cut short by the fixture's reset
    cfg = TLMSettings(api_key=SecretStr(tlm.api_key))
    engine = TLMEngine(cfg, quality_preset="medium", timeout_s=60)
    future = engine.submit(pairs("h", 10))
    deadline = time.monotonic() + 5
    while tlm.scoring < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    engine.close()
    assert tlm.scoring >= 1  # closed while TLM still worked on its items: it did not wait
    result = future.result(timeout=1)
    assert result.fatal == "the TLM engine was closed"
    assert len(result.failed) == 10 and result.scored == []
    assert result.failed[0].why == "not scored: the TLM engine was closed"
    engine.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        engine.submit(pairs("late", 1))


def test_a_tlm_that_stops_answering_fails_the_queue_fast(tlm: TLMSandbox) -> None:
    tlm.faults.set("tlm.score", Fault(hang=True))
    cfg = TLMSettings(api_key=SecretStr(tlm.api_key))
    with TLMEngine(cfg, quality_preset="medium", timeout_s=0.3) as engine:
        first = engine.submit(pairs("d1", 100))
        second = engine.submit(pairs("d2", 100))
        r1, r2 = first.result(timeout=60), second.result(timeout=60)
        sent = tlm.faults.count("tlm.score")
        assert sent == 0  # hung requests are logged when released
        r3 = engine.submit(pairs("d3", 10)).result(timeout=10)  # tries again
    for r in (r1, r2):
        assert r.all_failed and r.fatal is None
    # the probe, then the window (4: timeouts do not move it) until DOWN_AFTER failed in a row
    assert 9 <= r1.tlm_requests <= 1 + 8 + 3 and r2.tlm_requests == 0
    assert "Timeout" in r1.failed[0].why
    assert r1.failed[-1].why.startswith("not sent: TLM failed 8 items in a row (tlm_error: Timeout")
    assert r3.all_failed and 8 <= r3.tlm_requests <= 8 + 3  # then the rest is not sent


@pytest.mark.parametrize("status", [429, 503])
def test_a_concurrency_ceiling_slows_the_engine_but_every_item_scores(
    tlm: TLMSandbox, status: int
) -> None:
    """The items' timeout is long: on a busy machine the pauses after 429s add up, and an item
    that times out is not what this is about."""
    tlm.set_latency(0.05)
    tlm.set_ceiling(6, status=status)
    cfg = TLMSettings(api_key=SecretStr(tlm.api_key))
    with TLMEngine(cfg, quality_preset="medium", timeout_s=240) as engine:
        futures = [engine.submit(pairs(f"x{n}", 30)) for n in range(2)]
        results = [f.result(timeout=280) for f in futures]
    assert [len(r.scored) for r in results] == [30, 30]
    assert tlm.faults.count("tlm.score", status=status) >= 1
    assert tlm.peak_in_flight() <= 6


@pytest.mark.parametrize("shape", ["error", "detail", "text"])
def test_a_401_of_any_shape_is_a_refused_key_after_one_request(tlm: TLMSandbox, shape: str) -> None:
    """The API's own 401 (``{"code": "invalid_api_key"}``) is the client's AuthError; a 401 in
    another shape (a gateway's, a proxy's) is too, through the engine's rate handler: not
    retried (the client retries a text one 4 times), fatal after the first request."""
    tlm.auth_shape = shape
    cfg = TLMSettings(api_key=SecretStr("not-the-key"))
    with TLMEngine(cfg, quality_preset="medium", timeout_s=30) as engine:
        first = engine.submit(pairs("s1", 20)).result(timeout=20)
        second = engine.submit(pairs("s2", 5)).result(timeout=10)
    assert tlm.faults.count("tlm.score") == tlm.faults.count("tlm.score", status=401) == 1
    for r in (first, second):
        assert r.fatal and r.fatal.startswith(REFUSED_KEY) and "HTTP 401" in r.fatal
        assert r.all_failed and r.scored == []
    assert first.tlm_requests == 1 and second.tlm_requests == 0


def test_a_422_is_not_a_refused_key(tlm: TLMSandbox, engine: TLMEngine) -> None:
    """Only a 401 becomes a refused key: another 4xx of the same ``{"error"}`` shape stays one
    item's failure."""
    tlm.fail_status = 422
    tlm.faults.set("tlm.score", Fault(fail_items={"one question 0"}))
    result = engine.submit(pairs("one", 3)).result(timeout=10)
    assert result.fatal is None and len(result.scored) == 2 and len(result.failed) == 1


def test_429s_without_retry_after_pause_every_call_at_least_the_floor(tlm: TLMSandbox) -> None:
    """The client reads a missing Retry-After as 0 and retries at once, without end: each such
    429 holds the run's next calls for at least the floor, doubling while they go on."""
    floor = 0.2
    tlm.faults.set("tlm.score", Fault(status=429, first=4))  # no retry_after: no header
    cfg = TLMSettings(api_key=SecretStr(tlm.api_key))
    with TLMEngine(cfg, quality_preset="medium", timeout_s=30, rate_limit_wait_s=floor) as eng:
        result = eng.submit(pairs("p", 6)).result(timeout=30)
        assert (eng.pacing.rate_limited, eng.pacing.streak) == (4, 0)
    assert len(result.scored) == 6
    rows = sorted(tlm.faults.requests, key=lambda r: r.started)
    refused = [r for r in rows if r.status == 429]
    assert len(refused) == 4
    # the first item goes alone, so each 429 is followed by its own retry: 0.2, 0.4, 0.8, 1.6 s
    for n, cur in enumerate(refused):
        later = [r.started for r in rows if r.started > cur.started + cur.duration]
        assert min(later) - (cur.started + cur.duration) >= 0.95 * floor * 2**n


def test_a_tlm_refusing_every_call_without_retry_after_is_no_storm(tlm: TLMSandbox) -> None:
    """TLM answers every call 429 without Retry-After for a while: the client alone would send
    one retry after another, back to back, until the item's timeout. Paced, a handful of
    calls go out in that time (0.2 s, then 0.4, 0.8... apart), and all items score after."""
    tlm.faults.set("tlm.score", Fault(status=429))
    timer = threading.Timer(2.0, tlm.faults.clear)
    cfg = TLMSettings(api_key=SecretStr(tlm.api_key))
    with TLMEngine(cfg, quality_preset="medium", timeout_s=60, rate_limit_wait_s=0.2) as eng:
        timer.start()
        result = eng.submit(pairs("r", 20)).result(timeout=60)
    timer.join()
    assert len(result.scored) == 20
    assert 1 <= tlm.faults.count("tlm.score", status=429) <= 12


def test_a_ceiling_answering_429_without_retry_after_is_paced(tlm: TLMSandbox) -> None:
    """Above the ceiling every call is refused without Retry-After: the refusals come in bursts
    (the calls already sent), at least the floor apart, and every item scores."""
    floor = 0.2
    tlm.set_latency(0.1)
    tlm.set_ceiling(3, retry_after=None)
    cfg = TLMSettings(api_key=SecretStr(tlm.api_key))
    with TLMEngine(cfg, quality_preset="medium", timeout_s=60, rate_limit_wait_s=floor) as eng:
        result = eng.submit(pairs("c", 60)).result(timeout=60)
    assert len(result.scored) == 60
    refused = sorted(s.start for s in tlm.spans() if s.status == 429)
    assert refused
    bursts = [t for prev, t in zip([-1e9, *refused], refused, strict=False) if t - prev > 0.05]
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(bursts)]
    # a call already past the gate when a refusal came back may still reach the server inside
    # the pause (its connection being opened, later on a busy machine): the typical gap is the
    # floor; the client alone sends the next call at once, every time
    assert len(gaps) >= 3 and statistics.median(gaps) >= 0.95 * floor, gaps
