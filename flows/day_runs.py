"""Backfill days as runs of the ``window`` deployment, so any worker of the pool, on any machine,
picks them up. Each day's run carries an idempotency key made from the day and the parameters:
a backfill started again (say, after its own process died) re-attaches to the days it already
created instead of running them again; only a day whose run failed gets a new run."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime
from typing import Any
from uuid import UUID

from prefect import get_client, get_run_logger
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from flows.options import EvalOptions
from tasks.report import EvalReport

POLL_S = 2.0
MAX_RETRIES = 3  # new runs for a day whose run failed, per backfill run


def day_key(deployment: str, start: datetime, end: datetime, params: dict[str, Any]) -> str:
    """The same day with the same parameters (tags in any order) always gets the same key."""
    body = day_parameters(start, end, params) | {"deployment": deployment}
    body["tags"] = sorted(body["tags"])
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


def _failed(run: FlowRun) -> bool:
    return run.state is not None and run.state.is_final() and not run.state.is_completed()


def submit_day(
    deployment: str, start: datetime, end: datetime, params: dict[str, Any], started: float
) -> FlowRun:
    """The day's run: the one a run of this backfill created before, or a new one. A run that
    failed before this backfill started is retried under a key derived from it."""
    key = day_key(deployment, start, end, params)
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


def wait_all(client: SyncPrefectClient, ids: list[UUID]) -> dict[UUID, FlowRun]:
    """Poll until every run is final."""
    done: dict[UUID, FlowRun] = {}
    while len(done) < len(ids):
        for run_id in ids:
            if run_id in done:
                continue
            run = client.read_flow_run(run_id)
            if run.state is not None and run.state.is_final():
                done[run_id] = run
        if len(done) < len(ids):
            time.sleep(POLL_S)
    return done


def run_days_on_workers(
    deployment: str, windows: list[tuple[datetime, datetime]], params: dict[str, Any], at_once: int
) -> list[tuple[FlowRun, EvalReport | None]]:
    """Each day as a run of ``deployment``, at most ``at_once`` unfinished at a time."""
    logger = get_run_logger()
    started = time.time()
    runs: list[FlowRun] = []
    with get_client(sync_client=True) as client:
        for i, (start, end) in enumerate(windows):
            if i >= at_once:  # keep at most at_once days in flight
                wait_all(client, [runs[i - at_once].id])
            run = submit_day(deployment, start, end, params, started)
            logger.info("day %s: flow run %s (%s)", f"{start:%Y-%m-%d}", run.name, run.id)
            runs.append(run)
        final = wait_all(client, [r.id for r in runs])
    return [(final[r.id], report_of(final[r.id])) for r in runs]
