"""A backfill's days on workers (flows/day_runs.py), against a fake Prefect server and a fake
clock: what an earlier backfill left is looked at afresh, retries count per backfill, a day whose
worker died is found by its silence and run again, a live one never is."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from uuid import UUID, uuid4

import pytest
from prefect.client.schemas.objects import FlowRun, State
from prefect.states import Completed, Crashed, Failed, Pending, Running

from flows.day_runs import MAX_RETRIES, DayRuns, day_key, settled
from tasks.stream import Stream
from tests.support.clock import FakeClock

LOG = logging.getLogger("tests.unit.day_runs")
STREAM = Stream.of("p", ["t"], "trust_score")
D1 = (datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 10, 2, tzinfo=UTC))
D2 = (datetime(2026, 10, 2, tzinfo=UTC), datetime(2026, 10, 3, tzinfo=UTC))
PARAMS: dict[str, Any] = {"tags": ["t"], "options": None}


def run(state: State, created: datetime, started: datetime | None = None) -> FlowRun:
    return FlowRun.model_validate(
        {"id": uuid4(), "name": "day", "flow_id": uuid4(), "state": state, "created": created,
         "start_time": started, "parameters": {}}
    )  # fmt: skip


@dataclass
class FakePrefect:
    """Idempotency keys, flow runs and heartbeat events, as a Prefect server keeps them."""

    clock: FakeClock
    by_key: dict[str, FlowRun] = field(default_factory=dict)
    runs: dict[UUID, FlowRun] = field(default_factory=dict)
    beats: dict[UUID, datetime] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)  # keys of runs made
    on_create: Callable[[FlowRun], None] | None = None  # what a worker does with a new run

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.time(), tz=UTC)

    def plant(self, key: str, state: State, created: datetime) -> FlowRun:
        made = run(state, created, created)
        self.by_key[key] = self.runs[made.id] = made
        return made

    def create(self, deployment: str, *, idempotency_key: str, **_: Any) -> FlowRun:
        if idempotency_key not in self.by_key:
            made = run(Pending(), self.now())
            self.by_key[idempotency_key] = self.runs[made.id] = made
            self.created.append(idempotency_key)
            if self.on_create is not None:
                self.on_create(made)
        return self.runs[self.by_key[idempotency_key].id]

    def read_flow_run(self, run_id: UUID) -> FlowRun:
        return self.runs[run_id]

    def set_flow_run_state(self, run_id: UUID, state: State, force: bool = False) -> None:
        self.runs[run_id] = self.runs[run_id].model_copy(update={"state": state})

    def request(self, method: str, path: str, json: dict[str, Any]) -> Any:
        run_id = UUID(json["filter"]["resource"]["id"][0].removeprefix("prefect.flow-run."))
        beat = self.beats.get(run_id)
        events = [{"occurred": beat.isoformat()}] if beat else []
        return SimpleNamespace(json=lambda: {"events": events})

    def finish(self, run_id: UUID, state: State) -> None:
        self.runs[run_id] = self.runs[run_id].model_copy(update={"state": state})


def day_runs(
    fake: FakePrefect, clock: FakeClock, needs: bool = False, silence: float = 540.0
) -> DayRuns:
    return DayRuns(
        "evaluate-traces/window", STREAM, PARAMS, 2, lambda r: needs, silence, LOG, clock,
        fake.create,
    )  # fmt: skip


def key(day: tuple[datetime, datetime]) -> str:
    return day_key("evaluate-traces/window", STREAM, *day, PARAMS)


@pytest.mark.parametrize(
    ("state", "before", "needs", "expected"),
    [
        (Pending(), False, False, True),  # this backfill made it
        (Failed(), False, False, True),  # this backfill's own failure: retried by poll
        (Running(), True, False, True),  # an earlier backfill's, still going: wait for it
        (Completed(), True, False, True),  # done, nothing left: re-attach
        (Completed(), True, True, False),  # done, but late traces or failures: run again
        (Failed(), True, False, False),  # an earlier backfill's failure: run again
        (Crashed(), True, False, False),
    ],
)
def test_which_run_is_the_days(state: State, before: bool, needs: bool, expected: bool) -> None:
    started = 1_000_000.0
    created = datetime.fromtimestamp(started + (-60 if before else 5), tz=UTC)
    assert settled(run(state, created), started, lambda r: needs) is expected


def test_a_day_failed_by_every_earlier_backfill_gets_a_run_in_this_one() -> None:
    """Retries are per backfill run: four earlier backfills each failed the day (a chain of
    keys); this one walks the chain and makes a new run, its own retries untouched."""
    clock = FakeClock()
    fake = FakePrefect(clock)
    past = fake.now() - timedelta(days=1)
    chain = key(D1)
    for _ in range(4):
        failed = fake.plant(chain, Failed(), past)
        chain = f"{key(D1)}-after-{failed.id}"
    fake.on_create = lambda r: fake.finish(r.id, Completed())
    days = day_runs(fake, clock)
    results = days.run(fake, [D1])  # type: ignore[arg-type]
    assert fake.created == [chain]  # one new run, after the last failure
    assert [r.state.is_completed() for r, _ in results if r.state] == [True]
    assert days.retries[D1] == 0


def test_a_day_failing_in_this_backfill_is_retried_at_most_max_retries_times() -> None:
    clock = FakeClock()
    fake = FakePrefect(clock)
    fake.on_create = lambda r: fake.finish(r.id, Failed(message="boom"))
    days = day_runs(fake, clock)
    results = days.run(fake, [D1, D2])  # type: ignore[arg-type]
    assert len(fake.created) == 2 * (1 + MAX_RETRIES)
    assert days.retries == {D1: MAX_RETRIES, D2: MAX_RETRIES}
    assert all(r.state and r.state.is_failed() for r, _ in results)


def test_a_finished_day_runs_again_only_when_something_is_left_to_score() -> None:
    clock = FakeClock()
    for needs, new_runs in [(False, 0), (True, 1)]:
        fake = FakePrefect(clock)
        fake.plant(key(D1), Completed(), fake.now() - timedelta(days=2))
        fake.on_create = lambda r, f=fake: f.finish(r.id, Completed())
        day_runs(fake, clock, needs=needs).run(fake, [D1])  # type: ignore[arg-type]
        assert len(fake.created) == new_runs


def test_a_running_day_whose_worker_died_is_crashed_and_run_again() -> None:
    """No heartbeat for longer than the silence: lost. The backfill waits on the fake clock,
    reads each running day's heartbeat at most 4 times a silence, and never judges a run that
    beats."""
    clock = FakeClock()
    fake = FakePrefect(clock)
    dead = fake.plant(key(D1), Running(), fake.now() - timedelta(days=1))  # an earlier one's
    fake.beats[dead.id] = fake.now() - timedelta(seconds=60)
    live = fake.plant(key(D2), Running(), fake.now() - timedelta(days=1))
    fake.beats[live.id] = fake.now()

    def worker_time(c: FakeClock) -> None:  # the live day beats; it finishes after a while
        fake.beats[live.id] = fake.now()
        if c.monotonic() - 1_000 > 1_200:
            fake.finish(live.id, Completed())

    clock.on_sleep = worker_time
    fake.on_create = lambda r: fake.finish(r.id, Completed())
    days = day_runs(fake, clock, silence=540.0)
    results = days.run(fake, [D1, D2])  # type: ignore[arg-type]
    state = fake.runs[dead.id].state
    assert state is not None and state.is_crashed() and "no heartbeat" in (state.message or "")
    assert fake.created == [f"{key(D1)}-after-{dead.id}"]  # D1 again, D2 never
    assert [r.state.is_completed() for r, _ in results if r.state] == [True, True]
    assert sum(clock.sleeps) >= 540 - 60  # judged only once silent for the whole silence
