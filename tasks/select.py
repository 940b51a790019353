"""Which fetched units go to TLM: pure rules, no I/O."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from tasks.failures import Reason
from tasks.models import Bucket, Entry, Outcome, Pair, Scored, TraceRecord, outcome_for


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


@dataclass(slots=True)
class Known:
    """What is known of the stream's scores before TLM is asked."""

    in_langfuse: dict[str, float | None] = field(default_factory=dict)  # read back: confirmed
    ledger: dict[str, Entry] = field(default_factory=dict)  # what runs wrote
    read_lag_s: float = 900.0
    now: float = 0.0

    def pending(self, key: str) -> Entry | None:
        """Written by a run within the read lag, not yet readable: counts as scored."""
        e = self.ledger.get(key)
        if e is None or key in self.in_langfuse or e.value is None or e.missing:
            return None
        return e if self.now - e.written_at < self.read_lag_s else None

    def resend(self, key: str) -> Entry | None:
        """A score a run wrote that Langfuse does not show after the lag (or never took)."""
        e = self.ledger.get(key)
        if e is None or key in self.in_langfuse or e.value is None or self.pending(key):
            return None
        return e


@dataclass(slots=True)
class Selection:
    todo: list[TraceRecord] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)  # already scored, or skipped
    values: dict[str, float | None] = field(default_factory=dict)  # already scored: value
    units: int = 0


def select(
    records: list[TraceRecord],
    *,
    known: Known,
    observations: bool,
    rescore: bool,
    sample_rate: float,
) -> Selection:
    """Every record's units, each either to pair or settled (already scored, skipped)."""
    out = Selection()
    for rec in records:
        units = expand_generations(rec) if observations else [rec]
        if not units:
            out.units += 1
            out.outcomes.append(outcome_for(rec, Bucket.SKIPPED, Reason.NO_GENERATION))
        for unit in units:
            out.units += 1
            key = unit.key
            pending = None if rescore else known.pending(key)
            if not rescore and key in known.in_langfuse:
                out.values[key] = known.in_langfuse[key]
                out.outcomes.append(outcome_for(unit, Bucket.ALREADY_SCORED))
            elif pending is not None:
                out.values[key] = pending.value
                out.outcomes.append(outcome_for(unit, Bucket.ALREADY_SCORED, Reason.PENDING))
            elif not sampled(key, sample_rate):
                out.outcomes.append(outcome_for(unit, Bucket.SKIPPED, Reason.NOT_SAMPLED))
            else:
                out.todo.append(unit)
    return out


def split_resends(
    pairs: list[Pair], known: Known, rescore: bool
) -> tuple[list[Scored], list[Pair]]:
    """Pairs whose score a run already paid for (re-sent as recorded) and pairs for TLM."""
    again: list[Scored] = []
    fresh: list[Pair] = []
    for p in pairs:
        e = None if rescore else known.resend(p.key)
        if e is not None and e.value is not None:
            again.append(Scored(pair=p, score=e.value, explanation=e.comment))
        else:
            fresh.append(p)
    return again, fresh


def cap(pairs: list[Pair], room: int | None) -> tuple[list[Pair], list[Outcome]]:
    """At most ``room`` pairs go to TLM (None: no cap); the rest are skipped as over the cap."""
    if room is None or len(pairs) <= room:
        return pairs, []
    room = max(room, 0)
    over = [outcome_for(p, Bucket.SKIPPED, Reason.OVER_MAX_TRACES) for p in pairs[room:]]
    return pairs[:room], over


@dataclass(frozen=True, slots=True, order=True)
class LowTrust:
    """A unit below the low-trust threshold: what a review queue receives."""

    score: float
    object_id: str  # the trace, or the observation in observation scope
    object_type: str  # "TRACE" or "OBSERVATION"


def review_order(low: list[LowTrust], limit: int | None) -> list[LowTrust]:
    """Lowest score first (ties by id, so re-runs agree), at most ``limit`` of them."""
    ranked = sorted(low)
    return ranked if limit is None else ranked[:limit]
