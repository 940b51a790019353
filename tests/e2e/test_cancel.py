"""Cancelling a window run from the UI (a real ``prefect server`` and ``process`` worker): the
worker sends the run's process SIGTERM; the run stops sending, lands what TLM had answered, and
ends Cancelled. Nothing it paid for is lost."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from prefect.states import Cancelling

from deployments import local
from sandbox.faults import Fault
from sandbox.langfuse import LangfuseSandbox
from sandbox.tlm import session_tlm_sandbox
from tests.support.prefect_stack import prefect_stack
from tests.support.seeding import DAY, TAG, seed

HELD_S = 600


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[dict[str, str], LangfuseSandbox, Path]]:
    extra = {"TRUST_EVAL_TLM_TIMEOUT_S": str(HELD_S), "TRUST_EVAL_PAGE_SIZE": "5"}
    with prefect_stack(tmp_path, workers=("worker",), extra_env=extra) as (env, lf, home):
        yield env, lf, home


def test_a_cancelled_window_run_lands_what_tlm_answered(
    stack: tuple[dict[str, str], LangfuseSandbox, Path],
) -> None:
    env, lf, _ = stack
    tlm = session_tlm_sandbox()
    ids = seed(lf, 20, step=timedelta(minutes=30))
    # the oldest page's items wait at TLM: the newer pages are answered and land first
    tlm.faults.set(
        "tlm.score", Fault(hold_items={"Question 0?", "Question 1?"}, hang_seconds=HELD_S)
    )
    with local.client_for(env) as client:
        window = client.read_deployment_by_name("evaluate-traces/window")
        run = client.create_flow_run_from_deployment(
            window.id,
            parameters={
                "tags": [TAG],
                "window_start": DAY.isoformat(),
                "window_end": (DAY + timedelta(days=1)).isoformat(),
                "options": {"alert_low_trust_share": None},
            },
        )
        # the newer pages land; the oldest page waits on its two held items, its other three
        # answered and paid for: cancel then
        deadline = time.monotonic() + 240  # only a guard against a stuck test
        while not (tlm.holding == 2 and len(lf.store.all_scores()) == 15):
            assert time.monotonic() < deadline, "the run never got to its held page"
            time.sleep(0.2)
        client.set_flow_run_state(run.id, Cancelling(message="from the UI"), force=True)
        final = local.wait_final(client, run.id, timeout=240)
    tlm.faults.release_hangs()
    assert final.state is not None and final.state.is_cancelled(), final.state
    answered = {p for p in tlm.prompts}  # what TLM answered (the held ones never were)
    stored = {s.trace_id for s in lf.store.all_scores()}
    assert len(stored) == len(answered) == 18  # every paid answer landed, once
    assert stored <= set(ids)
