"""What test_ledger_and_select.py leaves out: the sample is pinned (the same units in or out on
every run and every release), nested as the rate grows; observation scope; the read-lag edge."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from tasks.ledger import days_of
from tasks.models import Bucket, Entry, GenerationRecord, Pair, TraceRecord
from tasks.select import Known, sampled, select, split_resends

T0 = datetime(2026, 11, 28, 12, tzinfo=UTC)
KEYS = [f"trace-{i}" for i in range(4000)]


# --------------------------------------------------------------------------- sampling


def test_the_sample_is_pinned_across_releases() -> None:
    # a changed hash would re-draw every stream's sample: units once out would be paid for
    assert [k for k in KEYS[:20] if sampled(k, 0.25)] == [
        "trace-1", "trace-7", "trace-9", "trace-10", "trace-17"
    ]  # fmt: skip
    assert [sum(sampled(k, r) for k in KEYS) for r in (0.01, 0.1, 0.5, 0.9)] == [
        42, 408, 1997, 3628
    ]  # fmt: skip


@pytest.mark.parametrize(("rate", "n"), [(0.0, 0), (-0.5, 0), (1.0, 4000), (1.5, 4000)])
def test_rates_at_or_beyond_the_ends_take_nothing_or_everything(rate: float, n: int) -> None:
    assert sum(sampled(k, rate) for k in KEYS) == n


def test_a_higher_rate_keeps_every_unit_a_lower_rate_took() -> None:
    rates = [0.05, 0.2, 0.5, 0.8, 1.0]
    samples = [{k for k in KEYS if sampled(k, r)} for r in rates]
    for smaller, larger in itertools.pairwise(samples):
        assert smaller < larger


# --------------------------------------------------------------------------- observation scope


def gen(obs_id: str) -> GenerationRecord:
    return GenerationRecord(obs_id, T0 + timedelta(seconds=1), f"in {obs_id}", f"out {obs_id}")


def trace(trace_id: str, *gens: str) -> TraceRecord:
    return TraceRecord(trace_id, trace_id, T0, "trivia", "in", "out", {"m": 1}, "prod",
                       generations=[gen(g) for g in gens], retrieved=["doc"])  # fmt: skip


def test_observation_scope_makes_one_unit_per_generation() -> None:
    known = Known(in_langfuse={"g2": 0.4})
    sel = select([trace("t1", "g1", "g2"), trace("t2"), trace("t3", "g3")], known=known,
                 observations=True, rescore=False, sample_rate=1.0)  # fmt: skip
    assert sel.units == 4  # g1, g2, g3 and the trace with no generation
    assert [(u.trace_id, u.key, u.score_observation) for u in sel.todo] == [
        ("t1", "g1", "g1"), ("t3", "g3", "g3")
    ]  # fmt: skip
    g1 = sel.todo[0]
    assert (g1.input, g1.output, g1.start_time) == ("in g1", "out g1", T0 + timedelta(seconds=1))
    assert (g1.name, g1.environment, g1.retrieved, g1.metadata) == ("trivia", "prod", ["doc"], None)
    assert [(o.trace_id, o.key, o.bucket) for o in sel.outcomes] == [
        ("t1", "g2", Bucket.ALREADY_SCORED), ("t2", "t2", Bucket.SKIPPED)
    ]  # fmt: skip
    assert sel.values == {"g2": 0.4}


def test_observation_scope_samples_by_observation() -> None:
    gens = [f"trace-{i}" for i in range(40)]  # observation ids drawn like KEYS
    sel = select([trace("t", *gens)], known=Known(), observations=True, rescore=False,
                 sample_rate=0.25)  # fmt: skip
    assert [u.key for u in sel.todo] == [k for k in gens if sampled(k, 0.25)]
    assert len(sel.todo) + len(sel.outcomes) == sel.units == 40


# --------------------------------------------------------------------------- the read lag


def test_a_write_is_pending_strictly_within_the_read_lag_then_resent() -> None:
    now = 10_000.0
    known = Known(
        ledger={
            "inside": Entry(0.3, "c", now - 899.999),
            "at_lag": Entry(0.3, "c", now - 900.0),
            "no_value": Entry(None, None, now - 10),
            "shown": Entry(0.5, None, now - 10),
        },
        in_langfuse={"shown": 0.5},
        read_lag_s=900.0,
        now=now,
    )
    assert known.pending("inside") == Entry(0.3, "c", now - 899.999)
    assert known.resend("inside") is None
    assert known.pending("at_lag") is None
    assert known.resend("at_lag") == Entry(0.3, "c", now - 900.0)
    for key in ("no_value", "shown", "never_written"):
        assert (known.pending(key), known.resend(key)) == (None, None)
    pairs = [Pair(k, T0, None, None, "p", "r", "chat") for k in ("inside", "at_lag", "no_value")]
    again, fresh = split_resends(pairs, known, rescore=False)
    assert [(s.pair.trace_id, s.score, s.explanation) for s in again] == [("at_lag", 0.3, "c")]
    assert [p.trace_id for p in fresh] == ["inside", "no_value"]


def test_ledger_days_cover_the_window_end_exclusive() -> None:
    day = T0.date()
    assert days_of(T0, T0 + timedelta(hours=1)) == [day]
    midnight = T0.replace(hour=0)
    assert days_of(midnight, midnight + timedelta(days=2)) == [day, day + timedelta(days=1)]
    assert days_of(midnight, midnight + timedelta(days=2, microseconds=1)) == [
        day, day + timedelta(days=1), day + timedelta(days=2)
    ]  # fmt: skip
