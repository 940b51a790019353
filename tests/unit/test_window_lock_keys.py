"""The window lock's names and its rules, on a fake clock: who is taken over, who never is, how
long a waiter waits. No Prefect server: a fake Variable store and OS locks in a temp folder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from prefect.exceptions import ObjectAlreadyExists

import flows.lock_variables as lv
import flows.window_lock as wl
from flows.window_lock import Held, Watch, lock_names
from tasks.errors import WindowLockTimeout
from tasks.stream import Stream
from tasks.windows import days_touched
from tests.support.clock import FakeClock

DAY = datetime(2026, 11, 28, tzinfo=UTC)
NEXT = DAY + timedelta(days=1)
S = Stream.of("project-1", ["a"], "trust_score")


def test_a_window_locks_every_utc_day_it_touches() -> None:
    assert days_touched(DAY, NEXT) == [date(2026, 11, 28)]  # the end (00:00) is exclusive
    assert days_touched(DAY + timedelta(hours=7), NEXT + timedelta(hours=1)) == [
        date(2026, 11, 28),
        date(2026, 11, 29),
    ]
    paris = datetime(2026, 11, 29, 0, 0, tzinfo=timezone(timedelta(hours=1)))
    assert days_touched(paris, paris + timedelta(minutes=30)) == [date(2026, 11, 28)]


def test_day_lock_names_are_per_project_score_name_and_day_whatever_the_tags() -> None:
    (name,) = lock_names(S, DAY, NEXT)
    assert name == lock_names(S, DAY + timedelta(hours=5), DAY + timedelta(hours=6))[0]
    # overlapping (or disjoint) tag sets can score the same traces: they share the lock
    assert name == lock_names(Stream.of("project-1", ["a", "b"], "trust_score"), DAY, NEXT)[0]
    assert name == lock_names(Stream.of("project-1", ["b"], "trust_score"), DAY, NEXT)[0]
    assert name != lock_names(Stream.of("project-1", ["a"], "other"), DAY, NEXT)[0]
    assert name != lock_names(Stream.of("project-2", ["a"], "trust_score"), DAY, NEXT)[0]
    assert name.startswith("trust_window_2026-11-28_")
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789_-")
    two = lock_names(S, DAY - timedelta(hours=1), NEXT)
    assert [n.split("_")[2] for n in two] == ["2026-11-27", "2026-11-28"]  # date order


def test_a_watch_calls_a_holder_dead_only_after_a_whole_lease_without_change() -> None:
    w = Watch()
    assert not w.dead("beat 1", 0.0, 10.0)
    assert not w.dead("beat 1", 10.0, 10.0)  # exactly a lease: not yet
    assert w.dead("beat 1", 10.1, 10.0)
    assert not w.dead("beat 2", 10.2, 10.0)  # a beat: alive again, the lease starts over
    assert not w.dead("beat 2", 20.0, 10.0)


# --- take_variable against a fake Variable store, on a fake clock ---------------------------


@dataclass
class Var:
    id: UUID
    name: str
    value: Any


class FakeVariables:
    """What ``take_variable`` and ``beat`` use of a Prefect client: its Variable calls, and its
    httpx client (``_client``) answering PATCH and DELETE by id, 503 while ``locked`` > 0."""

    def __init__(self) -> None:
        self.vars: dict[str, Var] = {}
        self.deleted: list[UUID] = []
        self.patched: list[UUID] = []
        self.locked = 0  # the next requests answered 503 "database is locked"
        self.sent: list[str] = []
        self._client = httpx.Client(
            transport=httpx.MockTransport(self.answer), base_url="http://prefect/api"
        )

    def create_variable(self, v: Any) -> Var:
        if v.name in self.vars:
            raise ObjectAlreadyExists(http_exc=Exception("409"))
        self.vars[v.name] = Var(uuid4(), v.name, v.value)
        return self.vars[v.name]

    def read_variable_by_name(self, name: str) -> Var | None:
        return self.vars.get(name)

    def answer(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(f"{request.method} {request.url.path}")
        if self.locked > 0:
            self.locked -= 1
            return httpx.Response(503, json={"exception_message": "Service Unavailable"})
        var_id = UUID(request.url.path.rsplit("/", 1)[1])
        var = next((v for v in self.vars.values() if v.id == var_id), None)
        if var is None:
            return httpx.Response(404)
        if request.method == "DELETE":
            del self.vars[var.name]
            self.deleted.append(var.id)
        else:
            var.value = json.loads(request.content)["value"]
            self.patched.append(var.id)
        return httpx.Response(204)

    def request(self, method: str, path: str, path_params: dict[str, Any], **kw: Any) -> None:
        """Prefect's client after its own retries (which end here when still locked)."""
        url = "/variables/{id}".format(**path_params)
        response = self._client.send(self._client.build_request(method, url, **kw))
        response.raise_for_status()


def held(lease: float) -> Held:
    return Held(window="W", lease_s=lease)


def test_a_dead_holder_is_taken_over_after_one_lease_and_deleted_once_by_id() -> None:
    store, clock = FakeVariables(), FakeClock()
    old = store.create_variable(Var(uuid4(), "lock", {"flow_run_id": "dead", "lease_s": 30}))
    got = wl.take_variable(store, "lock", {"me": 1}, held(10.0), clock.monotonic() + 3600, clock)  # type: ignore[arg-type]
    assert store.deleted == [old.id] and store.patched == []  # never written to
    assert got.record == {"me": 1} and store.vars["lock"].value == {"me": 1}
    waited = sum(clock.sleeps)
    assert 30.0 < waited <= 30.0 + 2 * wl.MAX_POLL_S  # the holder's own (longer) lease


def test_a_live_holder_is_never_taken_over_and_the_waiter_times_out_naming_it() -> None:
    store, clock = FakeVariables(), FakeClock()
    rec = {"flow_run_id": "alive", "pid": 7, "host": "h", "lease_s": 10.0, "beat": 0}
    var = store.create_variable(Var(uuid4(), "lock", rec))

    def holder_beats(c: FakeClock) -> None:  # the holder beats 4 times a lease
        if c.monotonic() % 2.5 < 1.3:
            var.value = {**var.value, "beat": var.value["beat"] + 1}

    clock.on_sleep = holder_beats
    deadline = clock.monotonic() + 600.0  # 60 leases
    with pytest.raises(WindowLockTimeout, match=r"window W .* flow run alive \(pid 7 on h\)"):
        wl.take_variable(store, "lock", {"me": 1}, held(10.0), deadline, clock)  # type: ignore[arg-type]
    assert store.deleted == [] and store.vars["lock"].id == var.id
    assert clock.monotonic() >= deadline  # it waited the whole timeout, no less


def test_a_holder_that_finds_its_record_taken_over_marks_the_lock_lost() -> None:
    store = FakeVariables()
    var = store.create_variable(Var(uuid4(), "lock", {"flow_run_id": "me"}))
    lock = held(10.0)
    lock.days.append(wl._Held("lock", var.id, {"flow_run_id": "me"}))
    wl.beat(store, lock, 1)  # type: ignore[arg-type]
    assert not lock.lost.is_set() and store.vars["lock"].value["beat"] == 1
    del store.vars["lock"]  # a waiter freed it (this holder was silent for a whole lease)
    wl.beat(store, lock, 2)  # type: ignore[arg-type]
    assert lock.lost.is_set()


def test_a_release_the_server_refuses_as_locked_is_asked_again_within_a_second() -> None:
    """A SQLite Prefect server answers most releases 503 (a write landed meanwhile); asking again
    after Prefect's own 2 s would hold every run's end (and its waiters) that long."""
    store, clock = FakeVariables(), FakeClock()
    var = store.create_variable(Var(uuid4(), "lock", {"flow_run_id": "me"}))
    store.locked = 2
    assert lv.by_id(store, "DELETE", var.id, clock)  # type: ignore[arg-type]
    assert store.deleted == [var.id] and len(store.sent) == 3
    assert clock.sleeps == [0.05, 0.1]
    assert not lv.by_id(store, "DELETE", var.id, clock)  # type: ignore[arg-type]  # gone: False


def test_a_release_still_locked_after_the_quick_retries_goes_to_prefects_client() -> None:
    store, clock = FakeVariables(), FakeClock()
    var = store.create_variable(Var(uuid4(), "lock", {"flow_run_id": "me"}))
    store.locked = len(lv.QUICK_RETRIES_S)
    assert lv.by_id(store, "DELETE", var.id, clock)  # type: ignore[arg-type]
    assert store.deleted == [var.id] and len(store.sent) == len(lv.QUICK_RETRIES_S) + 1
    store.locked = 99
    other = store.create_variable(Var(uuid4(), "lock", {"flow_run_id": "me"}))
    with pytest.raises(httpx.HTTPStatusError):  # Prefect's client gave up: its error
        lv.by_id(store, "DELETE", other.id, clock)  # type: ignore[arg-type]
    assert store.vars["lock"].id == other.id


def test_the_os_lock_wait_times_out_naming_the_holder_from_its_file(tmp_path: Path) -> None:
    """Without a server: the OS lock, bounded, and the file says who holds it."""
    import fcntl

    path = tmp_path / "trust_window_2026-11-28_abc.lock"
    path.write_text(json.dumps({"flow_run_id": "0f0e", "pid": 7, "host": "h"}))
    clock = FakeClock()
    with path.open("a") as other:
        fcntl.flock(other.fileno(), fcntl.LOCK_EX)  # another run (another open file) holds it
        deadline = clock.monotonic() + 5.0
        with pytest.raises(WindowLockTimeout, match=r"window W .* flow run 0f0e \(pid 7 on h\)"):
            wl.take_file(path, {"flow_run_id": "me"}, deadline, "W", clock)
        assert clock.monotonic() >= deadline and len(clock.sleeps) >= 5 / 0.2
    with wl.take_file(path, {"flow_run_id": "me"}, clock.monotonic(), "W", clock) as fh:
        assert json.loads(path.read_text()) == {"flow_run_id": "me"}  # taken at once: named
        assert not fh.closed
