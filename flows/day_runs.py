"""Backfill days as runs of the ``window`` deployment, so any worker of the pool, on any machine,
picks them up. Each day's run carries an idempotency key made from the day and the parameters:
a backfill started again (say, after its own process died) re-attaches to the days it already
created instead of running them again; only a day whose run failed gets a new run."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any
from uuid import UUID

from prefect import get_client, get_run_logger
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from flows.options import EvalOptions
from flows.stopping import STOP
from tasks.clock import SYSTEM, Clock
from tasks.report import EvalReport
from tasks.stream import Stream

POLL_S = 2.0
MAX_RETRIES = 3  # new runs for a day whose run failed, per backfill run


def day_key(
    deployment: str, stream: Stream, start: datetime, end: datetime, params: dict[str, Any]
) -> str:
    """The same day of the same stream with the same options always gets the same key."""
    body = day_parameters(start, end, params) | {"deployment": deployment, "stream": stream.key}
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


def submit_day(
    deployment: str,
    stream: Stream,
    start: datetime,
    end: datetime,
    params: dict[str, Any],
    started: float,
) -> FlowRun:
    """The day's run: the one a run of this backfill created before, or a new one. A run that
    failed before this backfill started is retried under a key derived from it."""
    key = day_key(deployment, stream, start, end, params)
    for _ in range(MAX_RETRIES + 1):
        made = run_deployment(
            deployment, parameters=day_parameters(start, end, params), idempotency_key=key,
            timeout=0, flow_run_name=f"day {start:%Y-%m-%d}",
        )  # fmt: skip
        assert isinstance(made, FlowRun)  # called from a synchronous flow
        run = made
        created = run.created.timestamp() if run.created else started
        if not (_failed(run) and created < started):
            return run
        key = f"{key}-after-{run.id}"
    return run


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


def wait_for_room(
    client: SyncPrefectClient, ids: list[UUID], room: int, clock: Clock = SYSTEM
) -> list[UUID]:
    """Poll until fewer than ``room`` of the runs are unfinished; those still unfinished."""
    while True:
        left = [i for i in ids if not _final(client.read_flow_run(i))]
        if len(left) < room or STOP.why:
            return left
        clock.sleep(POLL_S)


def run_days_on_workers(
    deployment: str,
    windows: list[tuple[datetime, datetime]],
    params: dict[str, Any],
    at_once: int,
    stream: Stream,
    clock: Clock = SYSTEM,
) -> list[tuple[FlowRun, EvalReport | None]]:
    """Each day as a run of ``deployment``, at most ``at_once`` unfinished at a time: the next
    day is submitted as soon as any day finishes, so one slow day holds back no other."""
    logger = get_run_logger()
    started = clock.time()
    runs: list[FlowRun] = []
    with get_client(sync_client=True) as client:
        in_flight: list[UUID] = []
        for start, end in windows:
            in_flight = wait_for_room(client, in_flight, at_once, clock)
            if STOP.why:  # stopped: no new day (those submitted go on on their workers)
                logger.warning("%s: the days from %s on were not submitted", STOP.why, start.date())
                break
            run = submit_day(deployment, stream, start, end, params, started)
            logger.info("day %s: flow run %s (%s)", f"{start:%Y-%m-%d}", run.name, run.id)
            runs.append(run)
            in_flight.append(run.id)
        if not STOP.why:
            wait_for_room(client, in_flight, 1, clock)  # a day run may take hours: no timeout
        final = [client.read_flow_run(r.id) for r in runs]
    return [(run, report_of(run)) for run in final]
