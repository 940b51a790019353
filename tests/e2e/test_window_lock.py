"""The window lock (flows/window_lock.py) on the servers users run.

Holders are flow runs in child processes (tests/e2e/lock_child.py); the waiter is this process.
The server is a persistent ``prefect server start`` (as ``make prefect``), or none: each process
starts an ephemeral one on a shared PREFECT_HOME (the CLI's mode). Leases last seconds.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect import get_client

import flows.window_lock as wl
from deployments import local
from flows.lock_variables import by_id
from flows.window_lock import lock_names, window_lock
from sandbox.prefect_home import fresh_home
from sandbox.runner import free_port
from tasks.errors import WindowLockTimeout
from tasks.stream import Stream
from tests.support.prefect_stack import in_process_on

CHILD = Path(__file__).with_name("lock_child.py")
TAG = "TLM_eval_pipeline"
DAY = datetime(2026, 11, 28, tzinfo=UTC)
NEXT = DAY + timedelta(days=1)
STREAM = Stream.of("e2e-project", [TAG], "trust_score")  # lock_child.py's stream


def lock(
    start: datetime,
    end: datetime,
    *,
    timeout_s: float,
    lease_s: float = 120.0,
    stream: Stream = STREAM,
) -> Any:
    return window_lock(stream, start, end, lease_s=lease_s, timeout_s=timeout_s)


# --------------------------------------------------------------------------- helpers


def base_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "TRUST_EVAL_", "LOCK_CHILD_"))
    }
    env.update(
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="INFO",  # the lock logs when it starts waiting
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
        PYTHONUNBUFFERED="1",
        NO_PROXY="127.0.0.1,localhost",
    )
    return env


class Child:
    """A lock holder in its own process group."""

    def __init__(self, env: dict[str, str], log: Path, start: datetime, end: datetime) -> None:
        self.log = log
        self.release = log.with_suffix(".release")
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), start.isoformat(), end.isoformat(), TAG],
            env=env | {"LOCK_CHILD_RELEASE_FILE": str(self.release)},
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, word: str, timeout_s: float = 120.0) -> float:
        """Wait until the child prints ``word``; returns when (monotonic)."""
        deadline = time.monotonic() + timeout_s
        while word not in self.text():
            assert self.proc.poll() is None or word in self.text(), (
                f"the child exited ({self.proc.returncode}) before {word}:\n{self.text()[-3000:]}"
            )
            assert time.monotonic() < deadline, f"no {word} after {timeout_s} s:\n{self.text()}"
            time.sleep(0.02)
        return time.monotonic()

    @property
    def flow_run_id(self) -> str:
        line = next(x for x in self.text().splitlines() if x.startswith("HELD "))
        return line.split()[1]

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        self.release.touch()
        try:
            self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A persistent ``prefect server start`` (own PREFECT_HOME, SQLite), as users run it."""
    with local.running_server(
        fresh_home(tmp_path_factory.mktemp("lock-server")), free_port(), base_env()
    ) as env:
        yield env


@pytest.fixture
def children(tmp_path: Path) -> Iterator[Callable[..., Child]]:
    made: list[Child] = []

    def make(env: dict[str, str], start: datetime = DAY, end: datetime = NEXT) -> Child:
        child = Child(env, tmp_path / f"child{len(made)}.log", start, end)
        made.append(child)
        return child

    yield make
    for child in made:
        if child.proc.poll() is None:
            child.kill()


@pytest.fixture
def on_server(server: dict[str, str]) -> Iterator[dict[str, str]]:
    with in_process_on(server["PREFECT_API_URL"]):
        yield server


def spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, UUID]]:
    """Record every PATCH/DELETE by id the code under test sends (in this process)."""
    calls: list[tuple[str, UUID]] = []

    def recording(client: Any, method: Any, var_id: UUID, *args: Any, **kw: Any) -> bool:
        calls.append((method, var_id))
        return by_id(client, method, var_id, *args, **kw)

    monkeypatch.setattr(wl, "by_id", recording)  # the name window_lock calls
    return calls


def record_of(name: str) -> Any:
    with get_client(sync_client=True) as client:
        return client.read_variable_by_name(name)


# --------------------------------------------------------------------------- persistent server


@pytest.mark.timing
def test_a_sigkilled_holder_is_taken_over_after_a_lease_without_touching_its_record(
    on_server: dict[str, str],
    children: Callable[..., Child],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lease = 2.0
    holder = children(on_server | {"TRUST_EVAL_LOCK_LEASE_S": str(lease)})
    holder.wait_for("HELD")
    (name,) = lock_names(STREAM, DAY, NEXT)
    time.sleep(lease)  # a few heartbeats: the record on the server is a live one
    holder.kill()
    dead = record_of(name)
    assert dead is not None and dead.value["flow_run_id"] == holder.flow_run_id
    assert dead.value["beat"] >= 2, "the holder never beat"

    calls = spy(monkeypatch)
    began = time.monotonic()
    with lock(DAY, NEXT, timeout_s=60, lease_s=lease):  # a live holder would time us out
        took = time.monotonic() - began
        time.sleep(lease * 0.75)
        mine = record_of(name)
        assert mine.value["beat"] >= 1, "our own keeper did not beat (on this server)"
    assert took >= lease, took  # freed after one whole lease of silence, not before
    # the dead holder's record was deleted once and never written to (never "renewed")
    assert calls[0] == ("DELETE", dead.id)
    assert all(var_id == mine.id for _, var_id in calls[1:]), calls  # our beats and release
    assert mine.id != dead.id and mine.value["pid"] == os.getpid()
    assert record_of(name) is None  # released


@pytest.mark.timing
def test_a_live_holder_is_never_taken_over_and_the_waiter_times_out(
    on_server: dict[str, str], children: Callable[..., Child], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The waiter's own lease is shorter than the holder's: the holder's lease is honoured.

    The holder's lease (4 s, a beat a second) is long enough that a loaded CI machine's
    pauses of a second or two do not make a live holder look dead."""
    holder = children(on_server | {"TRUST_EVAL_LOCK_LEASE_S": "4"})
    holder.wait_for("HELD")
    (name,) = lock_names(STREAM, DAY, NEXT)
    before = record_of(name)
    calls = spy(monkeypatch)
    began = time.monotonic()
    with (
        pytest.raises(WindowLockTimeout) as err,
        lock(DAY, NEXT, timeout_s=9, lease_s=1),
    ):
        pytest.fail("took the lock of a live holder")
    assert time.monotonic() - began >= 9  # it waited its whole timeout
    message = str(err.value)
    assert "2026-11-28T00:00:00Z..2026-11-29T00:00:00Z" in message
    assert holder.flow_run_id in message
    assert calls == []  # nothing deleted, nothing written
    after = record_of(name)
    assert after.id == before.id and after.value["beat"] > before.value["beat"] + 4
    assert holder.proc.poll() is None
    holder.stop()
    assert "RELEASED" in holder.text() and holder.proc.returncode == 0
    assert record_of(name) is None


def test_overlapping_windows_and_tag_sets_exclude_each_other_other_days_do_not(
    on_server: dict[str, str], children: Callable[..., Child]
) -> None:
    """The daily run holds [D, D+1); ``--since 24h`` in the afternoon of D+1 overlaps it; so
    does a run of other tags with the same score name (it may score the same traces)."""
    holder = children(on_server)  # the default lease: liveness is not what this is about
    holder.wait_for("HELD")
    since_24h = (DAY + timedelta(hours=15), NEXT + timedelta(hours=15))
    with (
        pytest.raises(WindowLockTimeout, match=holder.flow_run_id),
        lock(*since_24h, timeout_s=1),
    ):
        pytest.fail("an overlapping window ran beside the daily run")
    with pytest.raises(WindowLockTimeout), lock(DAY + timedelta(hours=1), NEXT, timeout_s=1):
        pytest.fail("a window inside the day ran beside the daily run")
    for tags in ([TAG, "other_tag"], ["other_tag"]):
        other = Stream.of("e2e-project", tags, "trust_score")
        with pytest.raises(WindowLockTimeout), lock(DAY, NEXT, timeout_s=1, stream=other):
            pytest.fail(f"tags {tags} ran beside {TAG} with the same score name")
    # the next day (a backfill's other day), another score name, another project: side by side
    with lock(NEXT, NEXT + timedelta(days=1), timeout_s=1):
        pass
    with lock(DAY, NEXT, timeout_s=1, stream=Stream.of("e2e-project", [TAG], "other_score")):
        pass
    with lock(DAY, NEXT, timeout_s=1, stream=Stream.of("another-project", [TAG], "trust_score")):
        pass
    # a two-day window takes the free day, waits for the held one, and keeps the first alive
    (before, held) = lock_names(STREAM, DAY - timedelta(hours=2), NEXT)
    failed: list[BaseException] = []

    def two_days() -> None:
        try:
            with lock(DAY - timedelta(hours=2), NEXT, timeout_s=4, lease_s=1):
                pass
        except BaseException as err:
            failed.append(err)

    ctx = contextvars.copy_context()  # the API URL of this test's server
    waiter = threading.Thread(target=ctx.run, args=(two_days,))
    waiter.start()
    beats = set()
    while waiter.is_alive():
        var = record_of(before)
        if var is not None:
            beats.add(var.value["beat"])
        time.sleep(0.1)
    assert len(failed) == 1 and isinstance(failed[0], WindowLockTimeout), failed
    assert held in str(failed[0]) and max(beats) >= 3, beats  # beat while it waited
    assert record_of(before) is None  # released on the way out
    holder.stop()
    with lock(*since_24h, timeout_s=1) as held_now:
        assert len(held_now.names) == 2


# --------------------------------------------------------------------------- no server (the CLI)


@pytest.mark.timing
def test_runs_without_a_server_sharing_a_prefect_home_exclude_each_other(
    tmp_path: Path, children: Callable[..., Child]
) -> None:
    """Each process starts its own ephemeral server on one SQLite file, and holds an OS lock
    per day: the second run never takes the lock of the first while it lives, however short
    the lease, and takes it as soon as the first is SIGKILLed (with its server)."""
    home = fresh_home(tmp_path / "home")
    env = base_env() | {"PREFECT_HOME": str(home), "TRUST_EVAL_LOCK_LEASE_S": "1"}
    pair = [children(env), children(env)]  # started together: their servers start side by side
    deadline = time.monotonic() + 180
    while True:  # one holds; the other has its own server and flow run up and waits
        held = [c for c in pair if "HELD" in c.text()]
        assert len(held) < 2, "both runs hold the lock"
        other = pair[1] if held and held[0] is pair[0] else pair[0]
        if held and "waiting" in other.text():
            break
        assert all(c.proc.poll() is None for c in pair), [c.text()[-2000:] for c in pair]
        assert time.monotonic() < deadline, [c.text()[-2000:] for c in pair]
        time.sleep(0.05)
    first, second = held[0], other
    (name,) = lock_names(STREAM, DAY, NEXT)
    lock_file = home / "trust-window-locks" / f"{name}.lock"
    assert first.flow_run_id in lock_file.read_text()  # the file names its holder
    time.sleep(5)  # 5 leases of the second run's; it must not take the lock meanwhile
    assert "HELD" not in second.text() and second.proc.poll() is None, second.text()
    first.kill()
    second.wait_for("HELD", timeout_s=60)  # the kernel dropped the dead run's lock
    assert second.flow_run_id != first.flow_run_id
    assert second.flow_run_id in lock_file.read_text()
    second.stop()
    assert "RELEASED" in second.text()
