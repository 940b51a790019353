"""SIGKILL the window flow mid-upload, then run the window again: exactly one score per trace.

The flow runs in a child (tests/e2e/crash_child.py) with its own PREFECT_HOME and ephemeral
server; the sandboxes live here and outlive it. The window runs again on this session's test
server, and in the crashed run's PREFECT_HOME (not blocked by the lock record it left).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flows.evaluate_traces import evaluate_traces
from sandbox.faults import Fault
from sandbox.langfuse import LangfuseSandbox
from sandbox.prefect_home import fresh_home
from sandbox.tlm import TLMSandbox, session_tlm_sandbox, synthetic_score
from tasks.report import EvalReport
from tests.support.env import guard_network

DAY = datetime(2026, 11, 28, tzinfo=UTC)
END = DAY + timedelta(days=1)
TAG = "TLM_eval_pipeline"
CHILD = Path(__file__).with_name("crash_child.py")
N, PAGE = 20, 5
TUNING = {
    "TRUST_EVAL_PAGE_SIZE": str(PAGE),
    "TRUST_EVAL_CHUNKS_IN_FLIGHT": "2",  # the kill lands while later chunks are still unsent
    "TRUST_EVAL_RETRIES": "2",
    "TRUST_EVAL_RETRY_BASE_DELAY_S": "0.01",
    "TRUST_EVAL_RETRY_MAX_DELAY_S": "1",
    "TRUST_EVAL_TLM_TIMEOUT_S": "20",
    "TRUST_EVAL_SETTLE_LAG_S": "0",
    "LANGFUSE_TIMEOUT": "5",
}


@dataclass
class Crash:
    lf: LangfuseSandbox
    tlm: TLMSandbox
    pairs: dict[str, tuple[str, str]]  # trace id -> (prompt, response)
    home: Path  # the killed run's PREFECT_HOME
    env: dict[str, str]  # the child's environment
    tmp: Path
    landed: Counter[str]  # trace id -> scores stored when the child died
    sent: int  # TLM items received when the child died
    rerun: subprocess.Popen[bytes]  # the re-run in the same PREFECT_HOME, waiting for GO
    rerun_log: Path
    go: Path


def child_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_LOGGING_LEVEL="INFO",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
        PYTHONUNBUFFERED="1",
    )
    return env


def start_child(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), DAY.isoformat(), END.isoformat(), TAG],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the flow and its Prefect server
    )


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def wait_for(
    cond: Callable[[], bool], timeout_s: float, what: str, proc: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"the child exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


def report_from(log: Path) -> EvalReport:
    for line in log.read_text(errors="replace").splitlines():
        for prefix in ("REPORT:", "FAILED:"):
            if line.startswith(prefix):
                return EvalReport.model_validate(json.loads(line[len(prefix) :]))
    raise AssertionError("no report in the child's output:\n" + log.read_text()[-3000:])


def assert_once_each(c: Crash) -> None:
    scores = c.lf.store.all_scores()
    per_trace = Counter((s.trace_id, s.name) for s in scores)
    assert all(n == 1 for n in per_trace.values()), f"duplicates: {per_trace.most_common(3)}"
    assert {s.trace_id for s in scores} == set(c.pairs), "a trace of the window has no score"
    for s in scores:
        assert s.value == synthetic_score(*c.pairs[s.trace_id or ""]), "a score TLM did not give"


@pytest.fixture(scope="module")
def crash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crash]:
    """Seed a window of 4 chunks, run the flow in a child, SIGKILL it mid-upload."""
    tmp = tmp_path_factory.mktemp("crash")
    mp = pytest.MonkeyPatch()
    tlm = session_tlm_sandbox()
    tlm.reset()
    try:
        mp.setenv("NO_PROXY", "127.0.0.1,localhost")
        guard_network(mp)
        for k, v in (tlm.env() | TUNING).items():
            mp.setenv(k, v)
        with LangfuseSandbox() as lf:
            for k, v in lf.env().items():
                mp.setenv(k, v)
            pairs: dict[str, tuple[str, str]] = {}
            for i in range(N):
                q, a = f"Crash question {i}?", f"Answer {i}."
                trace_id = lf.store.add_trace(
                    name=f"c{i}",
                    tags=(TAG,),
                    start_time=DAY + timedelta(minutes=30 * i),
                    input={"args": [q], "kwargs": {}},
                    output=a,
                )
                pairs[trace_id] = (q, a)
            slow = Fault(latency=0.5)
            lf.faults.set("scores.create", slow)
            home = fresh_home(tmp / "prefect-home")
            env = child_env(home)
            # the operator's re-run in the same home, started now so that its imports overlap
            # run 1; it starts its Prefect server once run 1 is dead (GATE), its flow on GO
            gate, go, rerun_log = tmp / "gate", tmp / "go", tmp / "run2.log"
            rerun = start_child(
                env | {"CRASH_CHILD_GATE_FILE": str(gate), "CRASH_CHILD_GO_FILE": str(go)},
                rerun_log,
            )
            try:
                proc = start_child(env, tmp / "run1.log")
                try:
                    wait_for(lambda: slow.calls >= 2, 180, "the second score POST", proc)
                    kill_group(proc)
                finally:
                    if proc.poll() is None:
                        kill_group(proc)
                    gate.touch()
                assert proc.returncode == -signal.SIGKILL
                # the server finishes the POST it was handling; the dead client never sees it
                deadline = time.monotonic() + 10
                while lf.faults.count("scores.create") < slow.calls and time.monotonic() < deadline:
                    time.sleep(0.01)
                lf.faults.clear()
                landed = Counter(s.trace_id or "" for s in lf.store.all_scores())
                yield Crash(
                    lf, tlm, pairs, home, env, tmp, landed, len(tlm.prompts), rerun, rerun_log, go
                )
            finally:
                if rerun.poll() is None:
                    kill_group(rerun)
    finally:
        tlm.reset()
        mp.undo()


def test_the_kill_landed_mid_upload(crash: Crash) -> None:
    assert len(crash.landed) == 2 * PAGE, f"chunks 1 and 2 landed: {len(crash.landed)} scores"
    assert all(n == 1 for n in crash.landed.values())
    assert crash.sent < N, "the kill came too late: every trace was already sent to TLM"


@pytest.mark.usefixtures("prefect_harness")
def test_rerun_after_sigkill_scores_each_trace_once(crash: Crash) -> None:
    report = evaluate_traces(window_start=DAY, window_end=END, tags=[TAG])
    assert_once_each(crash)
    assert report.fetched == N and report.accounted() == N
    assert report.already_scored == len(crash.landed)
    assert report.uploaded == N - len(crash.landed)
    assert len(crash.tlm.prompts) - crash.sent == N - len(crash.landed), "a landed trace re-sent"


@pytest.mark.timeout(240)
def test_rerun_in_the_crashed_prefect_home_is_not_blocked(crash: Crash) -> None:
    """The operator's re-run: same PREFECT_HOME (same Prefect database), after the kill."""
    proc, log = crash.rerun, crash.rerun_log
    try:
        wait_for(lambda: "READY" in log.read_text(errors="replace"), 180, "its server", proc)
        requests_before = len(crash.lf.faults.requests)
        crash.go.touch()
        began = "Beginning flow run"
        wait_for(lambda: began in log.read_text(errors="replace"), 60, "the flow run", proc)
        # a running flow reads Langfuse within seconds (the dead run's OS lock on the day died
        # with it, so its lock record is taken over at once); a blocked one never does
        deadline = time.monotonic() + 30
        while len(crash.lf.faults.requests) == requests_before and proc.poll() is None:
            assert time.monotonic() < deadline, "the re-run is blocked before its first call"
            time.sleep(0.05)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            kill_group(proc)
    assert proc.returncode == 0, log.read_text()[-3000:]
    report = report_from(log)
    assert report.fetched == N and report.accounted() == N
    assert_once_each(crash)
