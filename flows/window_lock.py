"""One run per window at a time, so two runs never both pay TLM for the same traces.

A window locks every UTC day it touches, keyed by (day, sorted tags, score name), in date order.
Each day lock is a Prefect Variable created by its holder (creation is atomic: a second run
gets 409 and waits) and updated by the holder's keeper thread (a heartbeat) until it deletes it
on release. Why a Variable and not a concurrency limit, and how a dead holder is told from a
live one: docs/RELIABILITY.md, "The window lock".
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Literal
from uuid import UUID

import httpx
from prefect import get_client
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import VariableCreate
from prefect.context import SettingsContext, get_settings_context
from prefect.exceptions import ObjectAlreadyExists
from prefect.logging import get_logger
from prefect.runtime import flow_run
from prefect.settings import PREFECT_API_URL, PREFECT_HOME

from tasks.config import ConfigError

PREFIX = "trust_window"
LEASE_ENV, DEFAULT_LEASE_S, MIN_LEASE_S = "TRUST_EVAL_LOCK_LEASE_S", 120.0, 1.0
TIMEOUT_ENV, DEFAULT_TIMEOUT_S = "TRUST_EVAL_LOCK_TIMEOUT_S", 3600.0
BEATS_PER_LEASE = 4  # a live holder updates its record this often per lease
MAX_POLL_S = 2.0

logger = get_logger("trust.window_lock")


class WindowLockTimeout(RuntimeError):
    """The window stayed locked by another (live) run for longer than the wait timeout."""


def _seconds(env: str, default: float, minimum: float) -> float:
    raw = os.environ.get(env, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{env} must be a number of seconds, got {raw!r}") from None
    if not value >= minimum:  # also refuses nan
        raise ConfigError(f"{env} must be at least {minimum:g} s, got {raw!r}")
    return value


def lock_settings() -> tuple[float, float]:
    """(lease_s, timeout_s) from TRUST_EVAL_LOCK_LEASE_S and TRUST_EVAL_LOCK_TIMEOUT_S."""
    return _seconds(LEASE_ENV, DEFAULT_LEASE_S, MIN_LEASE_S), _seconds(
        TIMEOUT_ENV, DEFAULT_TIMEOUT_S, 0.0
    )


def window_days(start: datetime, end: datetime) -> list[date]:
    """The UTC days that [start, end) touches (an end at 00:00 does not touch its day)."""
    s, e = start.astimezone(UTC), end.astimezone(UTC)
    first = s.date()
    last = (e - timedelta(microseconds=1)).date() if e > s else first
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def day_lock_name(day: date, tags: Sequence[str], score_name: str) -> str:
    """The Variable that locks ``day`` for (tags, score name): lowercase, digits, ``_ -``."""
    key = "\n".join([day.isoformat(), *sorted(set(tags)), score_name])
    return f"{PREFIX}_{day.isoformat()}_{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def lock_names(start: datetime, end: datetime, tags: Sequence[str], score_name: str) -> list[str]:
    """The day locks a window takes, in the order it takes them."""
    return [day_lock_name(d, tags, score_name) for d in window_days(start, end)]


def lock_file(name: str) -> Path:
    """The OS lock file of a day lock, for runs without a shared server (see ``window_lock``)."""
    return Path(PREFECT_HOME.value()) / "trust-window-locks" / f"{name}.lock"


@dataclass
class _Held:
    name: str
    var_id: UUID
    record: dict[str, Any]
    lost: bool = False


@dataclass
class _Lock:
    """What one ``window_lock`` holds; its keeper thread beats for it."""

    window: str
    lease_s: float
    held: list[_Held] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)


def _by_id(
    client: SyncPrefectClient, method: Literal["PATCH", "DELETE"], var_id: UUID, **kw: Any
) -> bool:
    """PATCH or DELETE one Variable by id; False if that Variable no longer exists."""
    try:
        client.request(method, "/variables/{id}", path_params={"id": var_id}, **kw)
        return True
    except httpx.HTTPStatusError as err:
        if err.response.status_code == 404:
            return False
        raise


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _holder(value: Any) -> str:
    """The holder on record, for messages: its flow run id (and where it runs)."""
    if not isinstance(value, dict):
        return "unknown"
    return f"{value.get('flow_run_id') or '-'} (pid {value.get('pid')} on {value.get('host')})"


def _take_file(path: Path, deadline: float, window: str, client: SyncPrefectClient) -> IO[bytes]:
    import fcntl  # POSIX only; on Windows a killed run's lock is taken over after a lease

    path.parent.mkdir(parents=True, exist_ok=True)
    fh = path.open("ab")
    told = False
    try:
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fh
            except BlockingIOError:
                pass
            timed_out = time.monotonic() >= deadline
            if timed_out or not told:  # who holds it, for the message
                var = client.read_variable_by_name(path.stem)
                holder = _holder(var.value) if var is not None else "unknown"
            if timed_out:
                raise WindowLockTimeout(
                    f"window {window} is still being evaluated by flow run {holder} "
                    f"({path.stem}, OS lock {path}); gave up waiting"
                )
            if not told:
                logger.info("window %s: flow run %s holds %s; waiting", window, holder, path.stem)
                told = True
            time.sleep(0.2)
    except BaseException:
        fh.close()
        raise


def _take(
    client: SyncPrefectClient,
    name: str,
    record: dict[str, Any],
    lock: _Lock,
    deadline: float,
    own_file: str | None,
) -> _Held:
    """Create the day's Variable, waiting while a live holder has it."""
    seen: tuple[UUID, str] | None = None
    since = time.monotonic()
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
        now = time.monotonic()
        observed = (cur.id, json.dumps(cur.value, sort_keys=True))
        if observed != seen:
            seen, since = observed, now
        # A holder beats BEATS_PER_LEASE times per lease (its own lease if longer than ours).
        stale_after = max(lock.lease_s, _number(info.get("lease_s")))
        # We hold the OS lock of this key: a holder on record that took it too is gone.
        dead = own_file is not None and (info.get("host"), info.get("file")) == (
            record["host"],
            own_file,
        )
        dead = dead or now - since > stale_after
        if dead:
            if _by_id(client, "DELETE", cur.id):
                logger.warning(
                    "window %s: freed %s; its holder (flow run %s) died without releasing it",
                    lock.window,
                    name,
                    _holder(info),
                )
            continue
        if now >= deadline:
            raise WindowLockTimeout(
                f"window {lock.window} is still being evaluated by flow run {_holder(info)} "
                f"(lock {name}, alive: its heartbeat is fresh); gave up waiting"
            )
        if not told:
            logger.info(
                "window %s: flow run %s holds %s; waiting", lock.window, _holder(info), name
            )
            told = True
        time.sleep(min(poll, max(deadline - now, 0.01)))


def _beat(client: SyncPrefectClient, lock: _Lock, beat: int) -> None:
    for h in list(lock.held):
        if h.lost:
            continue
        if not _by_id(client, "PATCH", h.var_id, json={"value": {**h.record, "beat": beat}}):
            h.lost = True
            logger.error(
                "window %s: lost %s (no heartbeat for a whole lease); another run may now "
                "be scoring this day too",
                lock.window,
                h.name,
            )


def _keep_alive(lock: _Lock, settings: SettingsContext) -> None:
    """Beat for every held day until told to stop. Nothing may end this loop but ``stop``: a
    holder that stops beating is taken for dead."""
    beat = 0
    with SettingsContext(profile=settings.profile, settings=settings.settings), ExitStack() as st:
        client: SyncPrefectClient | None = None
        while not lock.stop.wait(lock.lease_s / BEATS_PER_LEASE):
            beat += 1
            try:
                if client is None:  # its own client: the flow's is not for other threads
                    client = st.enter_context(get_client(sync_client=True))
                _beat(client, lock, beat)
            except Exception as err:  # a blip must not stop the beats; the next one may work
                logger.warning("window %s: heartbeat failed: %s", lock.window, err)


@contextmanager
def window_lock(
    start: datetime,
    end: datetime,
    tags: Sequence[str],
    score_name: str,
    timeout_s: float | None = None,
    lease_s: float | None = None,
) -> Iterator[list[str]]:
    """Hold every UTC day of [start, end) for (tags, score_name); yields the lock names.

    Waits at most ``timeout_s`` (default TRUST_EVAL_LOCK_TIMEOUT_S, 3600) for live holders,
    then raises :class:`WindowLockTimeout`. A holder that stops beating for ``lease_s``
    (default TRUST_EVAL_LOCK_LEASE_S, 120) is dead and its lock is taken over.

    Without PREFECT_API_URL every run has its own ephemeral server on the shared database of
    PREFECT_HOME; the runs then also take an OS lock (flock) per day in PREFECT_HOME, which
    the OS drops the moment its process dies, so a killed run's lock is taken over at once.
    """
    env_lease, env_timeout = lock_settings()
    s, e = start.astimezone(UTC), end.astimezone(UTC)
    lock = _Lock(
        window=f"{s:%Y-%m-%dT%H:%M:%S}Z..{e:%Y-%m-%dT%H:%M:%S}Z",
        lease_s=env_lease if lease_s is None else max(lease_s, MIN_LEASE_S),
    )
    deadline = time.monotonic() + (env_timeout if timeout_s is None else timeout_s)
    names = lock_names(start, end, tags, score_name)
    local = PREFECT_API_URL.value() is None and sys.platform != "win32"  # an ephemeral server
    base = {
        "flow_run_id": str(flow_run.id) if flow_run.id else None,
        "window": lock.window,
        "lease_s": lock.lease_s,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "beat": 0,
    }
    settings = get_settings_context()  # the keeper talks to this server (not only env's)
    keeper = threading.Thread(
        target=_keep_alive, args=(lock, settings), name="window-lock", daemon=True
    )
    with get_client(sync_client=True) as client, ExitStack() as files:
        try:
            keeper.start()  # a day taken beats while the run waits for the next one
            for name in names:  # date order: two windows never wait for each other in a cycle
                own_file = None
                if local:
                    path = lock_file(name)
                    files.enter_context(_take_file(path, deadline, lock.window, client))
                    own_file = str(path)
                record = {**base, "file": own_file}
                lock.held.append(_take(client, name, record, lock, deadline, own_file))
            yield names
        finally:
            lock.stop.set()
            if keeper.is_alive():
                keeper.join(timeout=10)
            for h in reversed(lock.held):
                try:
                    _by_id(client, "DELETE", h.var_id)
                except Exception as err:  # its heartbeat stops: another run frees it in a lease
                    logger.warning("window %s: could not release %s: %s", lock.window, h.name, err)
