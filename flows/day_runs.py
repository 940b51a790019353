"""Backfill days as runs of the ``window`` deployment, so any worker of the pool, on any machine,
picks them up.

Each day's run carries an idempotency key made from the stream, the day and the options. A
backfill started again (say, after its own process died) re-attaches to the runs it created
instead of running them again. What an earlier backfill left is looked at afresh:

- a day whose last run failed gets a new run;
- a day whose last run completed gets a new run only if something in it is left to score
  (``needs_run``: its report had failures, or Langfuse now counts more traces than it read);
- a day run still going is waited for, unless it is lost: no heartbeat for ``silence_s``
  (its worker died with it). It is then marked Crashed and the day gets a new run.

A day that fails during this backfill is tried again, at most ``MAX_RETRIES`` times per day and
backfill run."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from prefect import get_client, get_run_logger
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.states import Crashed

from flows.options import EvalOptions
from flows.stopping import STOP
from tasks.clock import SYSTEM, Clock, utcnow
from tasks.config import RunLogger, Tuning
from tasks.errors import ConfigError
from tasks.report import EvalReport
from tasks.stream import Stream

POLL_S = 2.0
MAX_RETRIES = 3  # new runs for a day whose run failed, per backfill run
HEARTBEAT = "prefect.flow-run.heartbeat"
Day = tuple[datetime, datetime]


def day_key(
    deployment: str, stream: Stream, start: datetime, end: datetime, params: dict[str, Any]
) -> str:
    """The same day of the same stream with the same options always gets the same key. The
    alert share is left out: it changes what a day says, not what it scores (a backfill's days
    run without one), so a backfill finds the day runs an earlier one made either way."""
    body = day_parameters(start, end, params) | {"deployment": deployment, "stream": stream.key}
    body["options"] = {k: v for k, v in body["options"].items() if k != "alert_low_trust_share"}
    body["tags"] = list(stream.tags)
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:24]
    return f"trust-day-{digest}"


def day_parameters(start: datetime, end: datetime, params: dict[str, Any]) -> dict[str, Any]:
    opts = params.get("options")
    return {
        "tags": list(params.get("tags") or []),
        "window_start": start.isoformat(),
        "window_end": end.isoformat(),
        "options": opts.model_dump(mode="json") if isinstance(opts, EvalOptions) else opts or {},
    }


def _final(run: FlowRun) -> bool:
    return run.state is not None and run.state.is_final()


def _failed(run: FlowRun) -> bool:
    return run.state is not None and run.state.is_final() and not run.state.is_completed()


def report_of(run: FlowRun) -> EvalReport | None:
    """The day's report, from the run's persisted result (None if it cannot be read)."""
    if run.state is None or not run.state.is_completed():
        return None
    try:
        value = run.state.result(raise_on_failure=False)
    except Exception:
        return None
    if isinstance(value, EvalReport):
        return value
    return EvalReport.model_validate(value) if isinstance(value, dict) else None


def settled(run: FlowRun, started: float, needs_run: Callable[[FlowRun], bool]) -> bool:
    """Whether ``run`` (what a day's key gave back) is the day's run for this backfill: one it
    created, one still going, or a finished one that left nothing to do."""
    created = run.created.timestamp() if run.created else started
    if created >= started or not _final(run):
        return True
    return not _failed(run) and not needs_run(run)


def last_sign_of_life(client: SyncPrefectClient, run: FlowRun) -> datetime | None:
    """The run's last heartbeat event (flow runs send one every
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds), else when it started."""
    since = run.start_time or run.created
    body: dict[str, Any] = {
        "filter": {
            "event": {"name": [HEARTBEAT]},
            "resource": {"id": [f"prefect.flow-run.{run.id}"]},
            "occurred": {"since": since.isoformat() if since else None},
        },
        "order": "DESC",
        "limit": 1,
    }
    resp = client.request("POST", "/events/filter", json=body)
    events = resp.json().get("events") or []
    if events:
        return datetime.fromisoformat(str(events[0]["occurred"]).replace("Z", "+00:00"))
    return since


@dataclass
class DayRuns:
    """The runs of one backfill's days, at most ``at_once`` unfinished at a time."""

    deployment: str
    stream: Stream
    params: dict[str, Any]
    at_once: int
    needs_run: Callable[[FlowRun], bool]
    silence_s: float
    logger: RunLogger
    clock: Clock = SYSTEM
    create: Callable[..., Any] = run_deployment  # (the seam tests drive)
    started: float = 0.0
    runs: dict[Day, FlowRun] = field(default_factory=dict)
    retries: Counter[Day] = field(default_factory=Counter)
    checked: dict[UUID, float] = field(default_factory=dict)  # heartbeat looked at (monotonic)

    def submit(self, day: Day, after: FlowRun | None = None) -> FlowRun:
        """The day's run: the one a run of this backfill made before, or a new one."""
        base = day_key(self.deployment, self.stream, *day, self.params)
        key = f"{base}-after-{after.id}" if after is not None else base
        while True:
            made = self.create(
                self.deployment, parameters=day_parameters(*day, self.params),
                idempotency_key=key, timeout=0, flow_run_name=f"day {day[0]:%Y-%m-%d}",
            )  # fmt: skip
            assert isinstance(made, FlowRun)  # called from a synchronous flow
            if settled(made, self.started, self.needs_run):
                self.logger.info("day %s: flow run %s (%s)", f"{day[0]:%Y-%m-%d}", made.name,
                                 made.id)  # fmt: skip
                self.runs[day] = made
                return made
            key = f"{base}-after-{made.id}"  # what an earlier backfill left: run the day again

    def lost(self, client: SyncPrefectClient, run: FlowRun) -> bool:
        """A running day whose worker died: no heartbeat for ``silence_s``. It is marked
        Crashed (checked at most once every ``silence_s`` / 4 per run)."""
        if run.state is None or not run.state.is_running():
            return False
        now = self.clock.monotonic()
        if now - self.checked.get(run.id, float("-inf")) < self.silence_s / 4:
            return False
        self.checked[run.id] = now
        last = last_sign_of_life(client, run)
        silent = (utcnow(self.clock) - last).total_seconds() if last else 0.0
        if silent <= self.silence_s:
            return False
        why = f"no heartbeat for {silent:.0f} s: its worker is gone; the day runs again"
        client.set_flow_run_state(run.id, Crashed(message=why), force=True)
        self.logger.warning("day run %s: %s", run.name, why)
        return True

    def poll(self, client: SyncPrefectClient, room: int) -> None:
        """Until fewer than ``room`` days are unfinished and none waits for a retry: days that
        failed in this backfill (lost ones included) get a new run, while their retries last."""
        while not STOP.why:
            unfinished = retried = 0
            for day, run in list(self.runs.items()):
                if _final(run) and not (_failed(run) and self.retries[day] < MAX_RETRIES):
                    continue  # done with: not read again
                run = client.read_flow_run(run.id)
                self.runs[day] = run
                dead = not _final(run) and self.lost(client, run)
                if (dead or _failed(run)) and self.retries[day] < MAX_RETRIES:
                    self.retries[day] += 1
                    run = self.submit(day, after=run)
                    retried += 1
                unfinished += not _final(run)
            if unfinished < room and not retried:
                return
            if not retried:
                self.clock.sleep(POLL_S)

    def run(
        self, client: SyncPrefectClient, windows: list[Day]
    ) -> list[tuple[FlowRun, EvalReport | None]]:
        self.started = self.clock.time()
        for day in windows:
            self.poll(client, self.at_once)
            if STOP.why:  # stopped: no new day (those submitted go on on their workers)
                self.logger.warning("%s: days from %s on not submitted", STOP.why, day[0])
                break
            self.submit(day)
        self.poll(client, 1)  # a day run may take hours: no timeout (lost ones are found)
        final = [client.read_flow_run(r.id) for r in self.runs.values()]
        return [(run, report_of(run)) for run in final]


def run_days_on_workers(
    deployment: str,
    windows: list[Day],
    params: dict[str, Any],
    at_once: int,
    stream: Stream,
    needs_run: Callable[[FlowRun], bool],
    silence_s: float,
) -> list[tuple[FlowRun, EvalReport | None]]:
    """Each day as a run of ``deployment``, at most ``at_once`` unfinished at a time: the next
    day is submitted as soon as any day finishes, so one slow day holds back no other."""
    days = DayRuns(deployment, stream, params, at_once, needs_run, silence_s, get_run_logger())
    with get_client(sync_client=True) as client:
        return days.run(client, windows)


def heartbeat_silence_s(tuning: Tuning) -> float:
    """How long a running day may send no heartbeat before it counts as lost:
    TRUST_EVAL_DAY_SILENCE_S, else three heartbeats (PREFECT_FLOWS_HEARTBEAT_FREQUENCY, 180 s
    by default)."""
    from prefect.settings import get_current_settings

    if tuning.day_silence_s is not None:
        return tuning.day_silence_s
    return 3.0 * float(get_current_settings().flows.heartbeat_frequency or 180)


def check_day_deployment(name: str) -> None:
    """The deployment a backfill runs its days on exists and runs the window flow."""
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            dep = client.read_deployment_by_name(name)
        except (ObjectNotFound, ValueError):
            raise ConfigError(
                f"day_deployment {name!r} is not a deployment of the Prefect server at "
                f"{client.api_url}: use 'evaluate-traces/window' (prefect deploy --all)"
            ) from None
        flow_name = client.read_flow(dep.flow_id).name
    if flow_name != "evaluate-traces":
        raise ConfigError(
            f"day_deployment {name!r} runs the flow {flow_name!r}, not 'evaluate-traces': "
            "each day must be a window run (e.g. 'evaluate-traces/window')"
        )
