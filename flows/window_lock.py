"""One run per window at a time: a Prefect global concurrency limit named after the window.

Two runs of the same window (a manual re-run while the schedule's run is still going, the same
day in two overlapping backfills, a retried daily run...) would both find the same unscored
traces and both pay TLM for them. Scores are idempotent, so nothing would be duplicated, but the
money is spent twice. The window flow therefore holds the one slot of a limit (limit 1) whose
name is derived from (window_start, window_end, tags, score_name) while it fetches, scores and
uploads: the second run waits, then finds everything already scored and costs nothing.
Different windows have different limits, so a backfill still runs its days side by side.

Prefect skips (with a warning) a ``concurrency()`` block whose limit does not exist, so the
limit is created first (creating one that another run just created is fine).

The slot is held with a LEASE (Prefect's ``increment-with-lease``), renewed from a background
thread while the run is alive. A run that dies without releasing leaves its slot counted in the
database; Prefect's server frees it when the lease expires, but only if the server still knows
the lease: leases live in the server's memory by default, so after a restart of the server (and
the ephemeral server that a CLI run starts dies with the run) the slot would stay occupied
forever and every later run of that window would wait forever. So the holder records its lease
id in a Prefect Variable named after the window; a run that has waited ``STALE_CHECK_S`` renews
that lease: if the server answers 410/404 (no such lease) the holder is gone, and its slot is
released (once: only if the record still names that lease). A live holder's lease renews fine
and the waiter keeps waiting.

The limits and variables show in the Prefect UI (Concurrency, Variables); each is a single small
row, and an idle one may be deleted at any time (it is re-created when next needed).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import httpx
from prefect import get_client
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    VariableCreate,
    VariableUpdate,
)
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.logging import get_logger
from prefect.runtime import flow_run

PREFIX = "trust-window"
LEASE_S = 120.0  # the server's minimum is 60 s; renewed every LEASE_S / 4
STALE_CHECK_S = 5.0  # after waiting this long (and then as often), check the holder is alive
MAX_POLL_S = 2.0

logger = get_logger("trust.window_lock")


def _digest(start: datetime, end: datetime, tags: Sequence[str], score_name: str) -> str:
    s, e = start.astimezone(UTC), end.astimezone(UTC)
    key = "\n".join([s.isoformat(), e.isoformat(), *sorted(set(tags)), score_name])
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def window_lock_name(start: datetime, end: datetime, tags: Sequence[str], score_name: str) -> str:
    """A readable, deterministic limit name (Prefect bans ``/ % & < >`` in names, so tags and
    the score name only enter through the digest)."""
    s, e = start.astimezone(UTC), end.astimezone(UTC)
    digest = _digest(start, end, tags, score_name)
    return f"{PREFIX} {s:%Y-%m-%dT%H:%M:%S}Z..{e:%Y-%m-%dT%H:%M:%S}Z {digest}"


def holder_variable(name: str) -> str:
    """The Prefect Variable that names the current holder's lease (letters, digits, _ only)."""
    return "trust_window_" + name.rsplit(" ", 1)[-1]


def ensure_limit(client: SyncPrefectClient, name: str, limit: int = 1) -> None:
    """Create the global concurrency limit ``name`` unless it exists (race-safe)."""
    try:
        client.read_global_concurrency_limit_by_name(name)
        return
    except ObjectNotFound:
        pass
    with suppress(ObjectAlreadyExists):  # another run of the same window created it first
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))


def _status(err: BaseException) -> int | None:
    return err.response.status_code if isinstance(err, httpx.HTTPStatusError) else None


def _record(client: SyncPrefectClient, var: str, value: dict[str, Any]) -> None:
    try:
        client.create_variable(VariableCreate(name=var, value=value))
    except ObjectAlreadyExists:
        client.update_variable(VariableUpdate(name=var, value=value))


def _recorded(client: SyncPrefectClient, var: str) -> dict[str, Any] | None:
    v = client.read_variable_by_name(var)
    return v.value if v is not None and isinstance(v.value, dict) else None


def free_if_stale(client: SyncPrefectClient, name: str) -> bool:
    """Release the slot of ``name`` if the holder on record no longer has a lease."""
    var = holder_variable(name)
    info = _recorded(client, var)
    if not info or not info.get("lease_id"):
        return False  # nobody on record: cannot tell, keep waiting (the lease may expire)
    try:
        client.renew_concurrency_lease(UUID(info["lease_id"]), LEASE_S)
        return False  # the holder's lease is alive: it is running
    except httpx.HTTPStatusError as err:
        if _status(err) not in (404, 410):
            return False
    limit = client.read_global_concurrency_limit_by_name(name)
    if limit.active_slots <= 0 or _recorded(client, var) != info:
        return False  # freed or re-taken meanwhile
    client.release_concurrency_slots([name], slots=1, occupancy_seconds=0.001)
    with suppress(ObjectNotFound):
        client.delete_variable_by_name(var)
    logger.warning(
        "freed the slot of %r: its holder (flow run %s) died without releasing it",
        name,
        info.get("flow_run_id"),
    )
    return True


def acquire(client: SyncPrefectClient, name: str, timeout_s: float | None) -> UUID:
    """Take the slot of ``name`` (waiting for it); returns the lease id."""
    run_id = flow_run.id
    holder = ConcurrencyLeaseHolder(type="flow_run", id=UUID(run_id)) if run_id else None
    began = time.monotonic()
    checked = began
    told = False
    while True:
        try:
            resp = client.increment_concurrency_slots_with_lease(
                [name], 1, "concurrency", LEASE_S, holder
            )
            data = resp.json()
            if not data.get("limits"):  # deleted under us: create it again
                ensure_limit(client, name)
                continue
            return UUID(data["lease_id"])
        except httpx.HTTPStatusError as err:
            if _status(err) != 423:
                raise
            wait = float(err.response.headers.get("Retry-After") or 1.0)
        now = time.monotonic()
        if not told:
            logger.info("another run of this window is running; waiting for %r", name)
            told = True
        if timeout_s is not None and now - began > timeout_s:
            raise TimeoutError(f"{name!r} still held after {timeout_s:.0f} s")
        if now - checked >= STALE_CHECK_S:
            checked = now
            if free_if_stale(client, name):
                continue
        time.sleep(min(max(wait, 0.2), MAX_POLL_S))


def _keep_alive(lease_id: UUID, stop: threading.Event) -> None:
    with get_client(sync_client=True) as client:
        while not stop.wait(LEASE_S / 4):
            try:
                client.renew_concurrency_lease(lease_id, LEASE_S)
            except Exception as err:  # a blip must not abort the run; the next try may work
                logger.warning("could not renew the window lease %s: %s", lease_id, err)


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
    var = holder_variable(name)
    with get_client(sync_client=True) as client:
        ensure_limit(client, name)
        lease_id = acquire(client, name, timeout_s)
        stop = threading.Event()
        keeper = threading.Thread(
            target=_keep_alive, args=(lease_id, stop), name="window-lease", daemon=True
        )
        try:
            _record(client, var, {"lease_id": str(lease_id), "flow_run_id": str(flow_run.id)})
            keeper.start()
            yield name
        finally:
            stop.set()
            if keeper.is_alive():
                keeper.join(timeout=10)
            try:
                if (_recorded(client, var) or {}).get("lease_id") == str(lease_id):
                    client.delete_variable_by_name(var)
            except Exception as err:
                logger.warning("could not clear %s: %s", var, err)
            try:
                client.release_concurrency_slots_with_lease(lease_id)
            except Exception as err:  # the lease expires on its own; the server frees it
                logger.warning("could not release %r: %s", name, err)
