"""A backfill spread over two workers of one pool (two machines, simulated): its days are runs of
the ``window`` deployment that either worker picks up. Its own process is SIGKILLed half-way; the
same backfill started again re-attaches to the days already created, so every day is evaluated
once, no score is duplicated, and TLM is paid once per trace. All along, the sandbox Langfuse
has a sliding-window request limit (time-scaled: 10 per 2 s stands for Hobby's 30 a minute) and
every run takes its requests from one shared budget: 429s stay rare."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from prefect import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from deployments import local
from sandbox.tlm import session_tlm_sandbox
from tests.support.prefect_stack import prefect_stack, runs_of, wait_final
from tests.support.seeding import TAG, seed

DAYS, PER_DAY = 6, 3
LIMIT, WINDOW_S = 10, 2.0  # the sandbox Langfuse's request limit


def midnight(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def test_a_backfill_spreads_over_two_workers_and_survives_its_own_death(tmp_path: Path) -> None:
    tlm = session_tlm_sandbox()
    try:
        scale_out(tmp_path)
    finally:
        tlm.reset()  # the latency below


def scale_out(tmp_path: Path) -> None:
    tlm = session_tlm_sandbox()
    shared = {"TRUST_EVAL_LANGFUSE_RATE_LIMIT": local.RATE_LIMIT}
    with prefect_stack(tmp_path, workers=("worker-a", "worker-b"), limit=2, extra_env=shared) as (
        env,
        lf,
        _,
    ):
        tlm.set_latency(1.5)  # a day takes a few seconds at TLM
        local.create_rate_limit(env, per_minute=LIMIT * 60 / WINDOW_S)
        lf.set_rate_limit(per_minute=LIMIT, window_s=WINDOW_S)
        today = datetime.now(UTC).date()
        days = [today - timedelta(days=20 - i) for i in range(DAYS)]
        traces = {
            d: seed(lf, PER_DAY, start=midnight(d) + timedelta(hours=2), name=f"{d} q{{i}}")
            for d in days
        }
        params = {
            "start_date": days[0].isoformat(),
            "end_date": days[-1].isoformat(),
            "tags": [TAG],
            # 2 slots a worker: the backfill's own run and 3 days in flight need both workers
            "max_concurrency": 3,
            "days_on": "workers",
        }
        with (
            temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}),
            get_client(sync_client=True) as client,
        ):
            back = client.read_deployment_by_name("evaluate-traces-backfill/backfill")
            window = client.read_deployment_by_name("evaluate-traces/window")
            first = client.create_flow_run_from_deployment(back.id, parameters=params)
            # kill the backfill's own process once a day is done and the rest are not all
            # created: 3 days go out at once, the 4th when the first one finishes
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                runs = runs_of(client, window.id)
                finished = [r for r in runs if r.state and r.state.is_completed()]
                if finished and len(runs) >= 4:
                    break
                time.sleep(0.2)
            parent = client.read_flow_run(first.id)
            assert parent.infrastructure_pid, parent
            os.kill(int(str(parent.infrastructure_pid).rsplit(":", 1)[-1]), signal.SIGKILL)
            killed_at = len(runs_of(client, window.id))
            assert 4 <= killed_at < DAYS, killed_at

            again = client.create_flow_run_from_deployment(back.id, parameters=params)
            run = wait_final(client, again.id, timeout=300)
            assert run.state is not None and run.state.is_completed(), run.state

            runs = runs_of(client, window.id)
            for r in runs:
                wait_final(client, r.id, timeout=120)
            runs = runs_of(client, window.id)
            per_day = Counter(str(r.parameters["window_start"])[:10] for r in runs)
            assert per_day == {str(d): 1 for d in days}, per_day  # each day ran once
            assert all(r.state is not None and r.state.is_completed() for r in runs)
            by_worker = Counter(r.labels.get("prefect.worker.name") for r in runs)
            assert set(by_worker) == {"worker-a", "worker-b"}, by_worker

    scored = Counter(s.trace_id for s in lf.store.all_scores())
    assert set(scored) == {t for ids in traces.values() for t in ids}
    assert set(scored.values()) == {1}  # no duplicate score
    assert len(tlm.prompts) == DAYS * PER_DAY  # no TLM item paid twice
    limited, requests = lf.faults.count(status=429), len(lf.faults.requests)
    print(f"429s with the shared budget over two workers: {limited} of {requests} requests")
    assert limited <= 0.05 * requests
