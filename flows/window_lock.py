"""One run per window at a time, so two runs never both pay TLM for the same traces.

A window locks every UTC day it touches, keyed by ``Stream.lock_name(day)`` (project and score
name: whatever the tags, runs that could score the same traces exclude each other), taking the
days in date order.

- On a Prefect server (PREFECT_API_URL set): each day lock is a Prefect Variable created by its
  holder (creation is atomic: a second run gets 409 and waits) and rewritten by the holder's
  keeper thread (a heartbeat) until it deletes it on release. A waiter takes over a record it
  has seen unchanged for a whole lease.
- Without one (the CLI on an ephemeral or embedded server of its own): an OS lock (flock) per day in
  PREFECT_HOME, which the kernel drops the moment its holder dies. The file names its holder.

Why a Variable and not a concurrency limit, and how a dead holder is told from a live one:
docs/RELIABILITY.md, "The window lock".
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from uuid import UUID

from prefect import get_client
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import VariableCreate
from prefect.context import SettingsContext, get_settings_context
from prefect.exceptions import ObjectAlreadyExists
from prefect.logging import get_logger
from prefect.runtime import flow_run
from prefect.settings import PREFECT_HOME

from flows.lock_variables import by_id
from flows.stopping import STOP
from tasks.budgets import on_persistent_server
from tasks.clock import SYSTEM, Clock
from tasks.errors import StageError, WindowLockTimeout
from tasks.stream import Stream
from tasks.windows import days_touched

BEATS_PER_LEASE = 4  # a live holder updates its record this often per lease
MAX_POLL_S = 2.0

logger = get_logger("trust.window_lock")


def lock_names(stream: Stream, start: datetime, end: datetime) -> list[str]:
    """The day locks a window takes, in the order it takes them."""
    return [stream.lock_name(d) for d in days_touched(start, end)]


def lock_file(name: str) -> Path:
    """The OS lock file of a day lock, for runs without a shared server."""
    return Path(PREFECT_HOME.value()) / "trust-window-locks" / f"{name}.lock"


@dataclass
class Watch:
    """A waiter's view of a holder's record. The holder is dead once the waiter has seen its
    record unchanged for longer than ``stale_after`` on the waiter's own clock (never by
    comparing clocks of different machines)."""

    seen: object = None
    since: float = 0.0

    def dead(self, observed: object, now: float, stale_after: float) -> bool:
        if observed != self.seen:
            self.seen, self.since = observed, now
            return False
        return now - self.since > stale_after


@dataclass
class _Held:
    name: str
    var_id: UUID
    record: dict[str, Any]


@dataclass
class Held:
    """What one ``window_lock`` holds. ``lost`` is set once the holder learns a day was taken
    over (it was silent for a whole lease): the run must then stop sending."""

    window: str
    lease_s: float
    names: list[str] = field(default_factory=list)
    lost: threading.Event = field(default_factory=threading.Event)
    on_lost: Callable[[str], None] | None = None  # told once, with why
    days: list[_Held] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)


def free(client: SyncPrefectClient, var_id: UUID, clock: Clock = SYSTEM) -> bool:
    """Delete a lock Variable by id, as a waiter frees a dead holder's; False if already gone."""
    return by_id(client, "DELETE", var_id, clock)


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def holder_text(value: Any) -> str:
    """The holder on record, for messages: its flow run id (and where it runs)."""
    if not isinstance(value, dict):
        return "unknown"
    return f"{value.get('flow_run_id') or '-'} (pid {value.get('pid')} on {value.get('host')})"


def _file_holder(path: Path) -> str:
    try:
        return holder_text(json.loads(path.read_text() or "null"))
    except (OSError, ValueError):
        return "unknown"


def stop_waiting_if_asked(window: str) -> None:
    """Ctrl-C or SIGTERM while waiting for another run's lock: stop now (nothing was paid)."""
    if STOP.why:
        raise StageError(f"{STOP.why} while waiting for window {window}'s lock")


def take_file(
    path: Path, record: dict[str, Any], deadline: float, window: str, clock: Clock
) -> IO[str]:
    """The OS lock of ``path``, waiting while another process holds it; the file names its
    holder (``record``) while it is held."""
    import fcntl  # POSIX only

    path.parent.mkdir(parents=True, exist_ok=True)
    fh = path.open("a+")
    told = False
    try:
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                fh.seek(0)
                fh.truncate()
                fh.write(json.dumps(record))
                fh.flush()
                return fh
            except BlockingIOError:
                pass
            stop_waiting_if_asked(window)
            if clock.monotonic() >= deadline:
                raise WindowLockTimeout(
                    f"window {window} is still being evaluated by flow run "
                    f"{_file_holder(path)} (OS lock {path}); gave up waiting "
                    "(TRUST_EVAL_LOCK_TIMEOUT_S)"
                )
            if not told:
                logger.info(
                    "window %s: flow run %s holds %s; waiting", window, _file_holder(path),
                    path.stem,
                )  # fmt: skip
                told = True
            clock.sleep(0.2)
    except BaseException:
        fh.close()
        raise


def take_variable(
    client: SyncPrefectClient,
    name: str,
    record: dict[str, Any],
    lock: Held,
    deadline: float,
    clock: Clock,
) -> _Held:
    """Create the day's Variable, waiting while a live holder has it; a holder silent for a
    whole lease (its own lease if longer than ours) is freed, by id."""
    watch = Watch()
    told = False
    poll = min(MAX_POLL_S, lock.lease_s / BEATS_PER_LEASE / 2)
    while True:
        try:
            var = client.create_variable(
                VariableCreate(name=name, value=record, tags=["trust-window"])
            )
            return _Held(name, var.id, record)
        except ObjectAlreadyExists:
            pass
        cur = client.read_variable_by_name(name)
        if cur is None:
            continue  # released meanwhile
        info = cur.value if isinstance(cur.value, dict) else {}
        now = clock.monotonic()
        stale_after = max(lock.lease_s, _number(info.get("lease_s")))
        if watch.dead((cur.id, json.dumps(cur.value, sort_keys=True)), now, stale_after):
            if free(client, cur.id, clock):
                logger.warning(
                    "window %s: freed %s; its holder (flow run %s) died without releasing it",
                    lock.window, name, holder_text(info),
                )  # fmt: skip
            continue
        stop_waiting_if_asked(lock.window)
        if now >= deadline:
            raise WindowLockTimeout(
                f"window {lock.window} is still being evaluated by flow run "
                f"{holder_text(info)} (lock {name}, alive: its heartbeat is fresh); gave up "
                "waiting (TRUST_EVAL_LOCK_TIMEOUT_S)"
            )
        if not told:
            logger.info(
                "window %s: flow run %s holds %s; waiting", lock.window, holder_text(info), name
            )
            told = True
        clock.sleep(min(poll, max(deadline - now, 0.01)))


def beat(client: SyncPrefectClient, lock: Held, n: int) -> None:
    """Rewrite every held day's record; a record gone (taken over) marks the lock lost."""
    for h in list(lock.days):
        if lock.lost.is_set():
            return
        if not by_id(client, "PATCH", h.var_id, json={"value": {**h.record, "beat": n}}):
            lock.lost.set()
            why = (
                f"lost the window lock {h.name} (no heartbeat reached the server for a whole "
                "lease): another run may be scoring this day, so this run stopped sending"
            )
            logger.error("window %s: %s", lock.window, why)
            if lock.on_lost is not None:
                lock.on_lost(why)


def _keep_alive(lock: Held, settings: SettingsContext) -> None:
    """Beat for every held day until told to stop. Nothing may end this loop but ``stop``: a
    holder that stops beating is taken for dead."""
    n = 0
    with SettingsContext(profile=settings.profile, settings=settings.settings), ExitStack() as st:
        client: SyncPrefectClient | None = None
        while not lock.stop.wait(lock.lease_s / BEATS_PER_LEASE):
            n += 1
            try:
                if client is None:  # its own client: the flow's is not for other threads
                    client = st.enter_context(get_client(sync_client=True))
                beat(client, lock, n)
            except Exception as err:  # a blip must not stop the beats; the next one may work
                logger.warning("window %s: heartbeat failed: %s", lock.window, err)


def on_shared_server() -> bool:
    """Runs share a Prefect server (PREFECT_API_URL), not each its own ephemeral one (Prefect's,
    or the CLI's embedded server: flows/prefect_server.py)."""
    return on_persistent_server() or sys.platform == "win32"


@contextmanager
def window_lock(
    stream: Stream,
    start: datetime,
    end: datetime,
    *,
    lease_s: float,
    timeout_s: float,
    clock: Clock = SYSTEM,
    on_lost: Callable[[str], None] | None = None,
) -> Iterator[Held]:
    """Hold every UTC day of [start, end) for the stream's scores; yields what it holds.

    Waits at most ``timeout_s`` for live holders, then raises :class:`WindowLockTimeout`. On a
    shared server a holder that stops beating for ``lease_s`` is dead and its lock taken over.
    """
    s, e = start.astimezone(UTC), end.astimezone(UTC)
    lock = Held(
        window=f"{s:%Y-%m-%dT%H:%M:%S}Z..{e:%Y-%m-%dT%H:%M:%S}Z", lease_s=lease_s, on_lost=on_lost
    )
    deadline = clock.monotonic() + timeout_s
    lock.names = lock_names(stream, start, end)
    record = {
        "flow_run_id": str(flow_run.id) if flow_run.id else None,
        "window": lock.window,
        "lease_s": lease_s,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "beat": 0,
    }
    if not on_shared_server():
        with ExitStack() as files:
            for name in lock.names:  # date order: two windows never wait in a cycle
                files.enter_context(
                    take_file(lock_file(name), record, deadline, lock.window, clock)
                )
            yield lock
        return
    keeper = threading.Thread(
        target=_keep_alive, args=(lock, get_settings_context()), name="window-lock", daemon=True
    )
    with get_client(sync_client=True) as client:
        try:
            keeper.start()  # a day taken beats while the run waits for the next one
            for name in lock.names:
                lock.days.append(take_variable(client, name, record, lock, deadline, clock))
            yield lock
        finally:
            lock.stop.set()
            if keeper.is_alive():
                keeper.join(timeout=10)
            for h in reversed(lock.days):
                try:
                    by_id(client, "DELETE", h.var_id, clock)
                except Exception as err:  # its heartbeat stops: another run frees it in a lease
                    logger.warning("window %s: could not release %s: %s", lock.window, h.name, err)
