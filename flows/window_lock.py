"""One run per window at a time: a Prefect global concurrency limit named after the window.

Two runs of the same window (a manual re-run while the schedule's run is still going, the same
day in two overlapping backfills, a retried daily run...) would both find the same unscored
traces and both pay TLM for them. Scores are idempotent, so nothing would be duplicated, but the
money is spent twice. The window flow therefore holds a slot of a limit of 1 whose name is
derived from (window_start, window_end, tags, score_name) while it fetches, scores and uploads:
the second run waits, then finds everything already scored and costs nothing.

Prefect skips (with a warning) a ``concurrency()`` block whose limit does not exist, so the
limit is created first (limit 1; creating one that another run just created is fine). The slot
is held with a lease that Prefect renews while the run is alive: a run that crashes hard frees
its window once the lease expires, instead of blocking it forever. Different windows have
different limits, so a backfill still runs its days side by side.

The limits show in the Prefect UI under Concurrency (``prefect gcl ls``); each is a single small
row, and an idle one may be deleted at any time (it is re-created when next needed).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime

from prefect import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

PREFIX = "trust-window"


def window_lock_name(start: datetime, end: datetime, tags: Sequence[str], score_name: str) -> str:
    """A readable, deterministic limit name (Prefect bans ``/ % & < >`` in names, so tags and
    the score name only enter through the digest)."""
    s, e = start.astimezone(UTC), end.astimezone(UTC)
    key = "\n".join([s.isoformat(), e.isoformat(), *sorted(set(tags)), score_name])
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return f"{PREFIX} {s:%Y-%m-%dT%H:%M:%S}Z..{e:%Y-%m-%dT%H:%M:%S}Z {digest}"


def ensure_limit(name: str, limit: int = 1) -> None:
    """Create the global concurrency limit ``name`` unless it exists (race-safe)."""
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return
        except ObjectNotFound:
            pass
        with suppress(ObjectAlreadyExists):  # another run of the same window created it first
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=limit)
            )


@contextmanager
def window_lock(
    start: datetime,
    end: datetime,
    tags: Sequence[str],
    score_name: str,
    timeout_s: float | None = None,
) -> Iterator[str]:
    """Hold the window's slot for the duration of the block; yields the limit's name."""
    name = window_lock_name(start, end, tags, score_name)
    ensure_limit(name)
    # strict: the limit was just ensured, so a missing one is an error, never a silent skip
    with concurrency(name, occupy=1, timeout_seconds=timeout_s, strict=True):
        yield name
