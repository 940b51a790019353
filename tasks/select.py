"""Which fetched units go to TLM: pure rules, no I/O."""

from __future__ import annotations

import hashlib

from tasks.failures import Reason
from tasks.models import Bucket, Outcome, Pair, TraceRecord, outcome_for


def sampled(key: str, rate: float) -> bool:
    """Deterministic sampling: a unit is in or out the same way on every run."""
    if rate >= 1.0:
        return True
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def expand_generations(rec: TraceRecord) -> list[TraceRecord]:
    """Observation scope: one unit per GENERATION of the trace (its own io, the trace's context)."""
    return [
        TraceRecord(
            trace_id=rec.trace_id,
            observation_id=g.observation_id,
            start_time=g.start_time,
            name=rec.name,
            input=g.input,
            output=g.output,
            metadata=None,
            environment=rec.environment,
            retrieved=rec.retrieved,
            score_observation=g.observation_id,
        )
        for g in rec.generations
    ]


def first_sight(records: list[TraceRecord], seen: set[str]) -> list[TraceRecord]:
    """The records whose trace was not seen before (a row repeated, on this page or an earlier
    one, counts once); ``seen`` learns them."""
    fresh = []
    for rec in records:
        if rec.trace_id not in seen:
            seen.add(rec.trace_id)
            fresh.append(rec)
    return fresh


def units_in(
    records: list[TraceRecord], observations: bool
) -> tuple[list[TraceRecord], list[Outcome], int]:
    """What is scored of the traces: each trace, or in observation scope each GENERATION (a
    trace with none is skipped); the units, those skips, and how many they are in all."""
    if not observations:
        return records, [], len(records)
    units: list[TraceRecord] = []
    none: list[Outcome] = []
    for rec in records:
        mine = expand_generations(rec)
        units += mine
        if not mine:
            none.append(outcome_for(rec, Bucket.SKIPPED, Reason.NO_GENERATION))
    return units, none, len(units) + len(none)


def cap(pairs: list[Pair], room: int | None) -> tuple[list[Pair], list[Outcome]]:
    """At most ``room`` pairs go to TLM (None: no cap); the rest are skipped as over the cap."""
    if room is None or len(pairs) <= room:
        return pairs, []
    room = max(room, 0)
    over = [outcome_for(p, Bucket.SKIPPED, Reason.OVER_MAX_TRACES) for p in pairs[room:]]
    return pairs[:room], over
