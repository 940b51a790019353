"""A backfill spread over two workers of one pool (two machines, simulated): its days are runs of
the ``window`` deployment that either worker picks up. Its own process is SIGKILLed once its
first days are out; the same backfill started again re-attaches to the days already created
(one done, the others done or running) and creates the rest, so every day is evaluated once,
no score is duplicated, and TLM is paid once per trace. All along, the sandbox Langfuse has a
fixed-window request limit (time-scaled: 5 per 2 s stands for Hobby's 30 a minute).
Every run takes its Langfuse requests from one shared budget, so 429s stay rare, and its TLM
calls from one shared ceiling, so the runs together never have more calls at TLM than it allows.
(What the limits save is measured by benchmarks/, not here.)"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import FlowRun

from deployments import local
from sandbox.langfuse import LangfuseSandbox
from sandbox.tlm import TLMSandbox, session_tlm_sandbox
from tasks.windows import midnight
from tests.support.prefect_stack import prefect_stack, runs_of
from tests.support.seeding import TAG, seed

DAYS, PER_DAY = 5, 6
LIMIT, WINDOW_S = 5, 2.0  # the sandbox Langfuse's limit: Hobby's 30 a minute, 5 times faster
CEILING = 4  # TLM calls in flight over all runs (one run alone may have 4)


@pytest.mark.timing  # the Langfuse limit and the slot leases are real seconds
@pytest.mark.timeout(600)
def test_a_backfill_spreads_over_two_workers_and_survives_its_own_death(tmp_path: Path) -> None:
    tlm = session_tlm_sandbox()
    tlm.reset()  # the session's sandbox: only this test's calls count
    try:
        scale_out(tmp_path)
    finally:
        tlm.reset()  # the latency below


def backfill_params(days: list[date]) -> dict[str, object]:
    return {
        "start_date": days[0].isoformat(),
        "end_date": days[-1].isoformat(),
        "tags": [TAG],
        # 2 slots a worker: the backfill's own run and 3 days in flight need both workers
        "max_concurrency": 3,
        "days_on": "workers",
        # no low-trust alert runs: they would take the workers' slots from the days
        "options": {"alert_low_trust_share": None},
    }


def load_figures(lf: LangfuseSandbox, tlm: TLMSandbox) -> tuple[int, int, int]:
    """Langfuse requests, those answered 429, and the peak of calls at TLM since the logs
    were last reset."""
    return len(lf.faults.requests), lf.faults.count(status=429), tlm.peak_in_flight()


def day_of(run: FlowRun) -> date:
    return date.fromisoformat(str(run.parameters["window_start"])[:10])


def days_runs(client: SyncPrefectClient, deployment: UUID, days: list[date]) -> list[FlowRun]:
    """The window deployment's runs for ``days``."""
    return [r for r in runs_of(client, deployment) if day_of(r) in days]


def done(run: FlowRun) -> bool:
    return run.state is not None and run.state.is_completed()


def until(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 180  # a guard against a stuck test only
    while not cond():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.2)


def scale_out(tmp_path: Path) -> None:
    tlm = session_tlm_sandbox()
    shared = {
        "TRUST_EVAL_LANGFUSE_RATE_LIMIT": local.RATE_LIMIT,
        "TRUST_EVAL_TLM_CONCURRENCY_LIMIT": local.TLM_LIMIT,
        "TRUST_EVAL_TLM_SLOT_BLOCK": "2",
        "TRUST_EVAL_PAGE_SIZE": "2",  # 3 pages a day: more requests to share
        "TRUST_EVAL_RETRIES": "8",  # without the budget, runs wait out their own 429s
        # a run waiting for slots asks again after at most this long (Prefect's Retry-After)
        "PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS": "1",
    }
    with prefect_stack(tmp_path, workers=("worker-a", "worker-b"), limit=2, extra_env=shared) as (
        env,
        lf,
        _,
    ):
        tlm.set_latency(1.5)  # a day takes a few seconds at TLM
        local.create_rate_limit(env, per_minute=LIMIT * 60 / WINDOW_S)
        local.create_tlm_limit(env, CEILING)
        lf.set_rate_limit(per_minute=LIMIT, window_s=WINDOW_S)
        today = datetime.now(UTC).date()
        days = [today - timedelta(days=20 - i) for i in range(DAYS)]
        traces = {
            d: seed(lf, PER_DAY, start=midnight(d) + timedelta(hours=2), name=f"{d} q{{i}}")
            for d in days
        }
        lf.faults.reset_log()
        params = backfill_params(days)
        with local.client_for(env) as client:
            back = client.read_deployment_by_name("evaluate-traces-backfill/backfill")
            window = client.read_deployment_by_name("evaluate-traces/window")

            first = client.create_flow_run_from_deployment(back.id, parameters=params)
            # kill the backfill's own process once its first 3 days are out: the 4th waits for
            # one of them to finish, so the kill always lands with 3 created and 2 not
            until(lambda: len(days_runs(client, window.id, days)) >= 3, "3 days created")
            parent = client.read_flow_run(first.id)
            assert parent.infrastructure_pid, parent
            os.kill(int(str(parent.infrastructure_pid).rsplit(":", 1)[-1]), signal.SIGKILL)
            assert len(days_runs(client, window.id, days)) == 3
            # the days run on without it; start it again once one is done: it must read that
            # one back, await the others and create the last two
            until(lambda: any(done(r) for r in days_runs(client, window.id, days)), "a day done")
            assert len(days_runs(client, window.id, days)) == 3  # none created while it was dead

            again = client.create_flow_run_from_deployment(back.id, parameters=params)
            run = local.wait_final(client, again.id, timeout=300)
            assert run.state is not None and run.state.is_completed(), run.state

            runs = days_runs(client, window.id, days)
            for r in runs:
                local.wait_final(client, r.id, timeout=120)
            runs = days_runs(client, window.id, days)
            per_day = Counter(str(r.parameters["window_start"])[:10] for r in runs)
            assert per_day == {str(d): 1 for d in days}, per_day  # each day ran once
            assert all(done(r) for r in runs)
            by_worker = Counter(r.labels.get("prefect.worker.name") for r in runs)
            assert set(by_worker) == {"worker-a", "worker-b"}, by_worker

    scored = Counter(s.trace_id for s in lf.store.all_scores())
    assert set(scored) == {t for ids in traces.values() for t in ids}
    assert set(scored.values()) == {1}  # no duplicate score
    assert len(tlm.prompts) == DAYS * PER_DAY  # no TLM item paid twice
    requests, limited, peak = load_figures(lf, tlm)
    print(f"two workers, 3 days in flight: {limited} of {requests} Langfuse requests were "
          f"429s; at most {peak} calls at TLM at once (ceiling {CEILING})")  # fmt: skip
    assert limited <= 0.05 * requests
    assert 1 <= peak <= CEILING
