"""Sampling is pinned (the same units in or out on every run and every release) and nested as
the rate grows; observation scope makes a unit of each generation."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from tasks.models import Bucket, GenerationRecord, TraceRecord
from tasks.select import sampled, units_in

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
    units, none, n = units_in([trace("t1", "g1", "g2"), trace("t2"), trace("t3", "g3")], True)
    assert n == 4  # g1, g2, g3 and the trace with no generation
    assert [(u.trace_id, u.key, u.score_observation) for u in units] == [
        ("t1", "g1", "g1"), ("t1", "g2", "g2"), ("t3", "g3", "g3")
    ]  # fmt: skip
    g1 = units[0]
    assert (g1.input, g1.output, g1.start_time) == ("in g1", "out g1", T0 + timedelta(seconds=1))
    assert (g1.name, g1.environment, g1.retrieved, g1.metadata) == ("trivia", "prod", ["doc"], None)
    assert [(o.trace_id, o.key, o.bucket, o.reason) for o in none] == [
        ("t2", "t2", Bucket.SKIPPED, "no_generation")
    ]
    records = [trace("t1", "g1")]
    assert units_in(records, False) == (records, [], 1)  # trace scope: the traces themselves
