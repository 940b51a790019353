"""SIGKILL a run while TLM is scoring, on a persistent ``prefect server`` (as ``make prefect``
runs it), then run the window again on the same server: the re-run is not blocked by the dead
run's window lock, and every trace ends with exactly one score. The dead run held every slot of
the shared TLM ceiling, and the server restarts before the re-run (leases on disk, as ``make
prefect`` keeps them): the slots come back when the dead run's lease runs out, and the re-run
then scores."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from deployments import local
from sandbox.faults import Fault
from sandbox.langfuse import LangfuseSandbox
from sandbox.prefect_home import fresh_home
from sandbox.runner import free_port
from sandbox.tlm import Latency, TLMSandbox, synthetic_score
from tests.support.seeding import DAY, TAG

CHILD = Path(__file__).with_name("crash_child.py")
N, PAGE, LEASE_S, IN_FLIGHT = 30, 5, 3, 2
CEILING, SLOT_LEASE_S = 4, 60  # one block takes the whole ceiling; Prefect's shortest lease


class Server:
    """A ``prefect server`` that can be restarted on the same home and port."""

    def __init__(self, home: Path) -> None:
        base = {
            k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "TRUST_EVAL_"))
        }
        self.home, self.env = fresh_home(home), local.prefect_env(home, free_port(), base)
        self.env["PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS"] = "1"  # expired leases go
        self.env["PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS"] = "1"
        self.proc = local.start_server(self.env, home / "server.log")

    def lease_expiry(self) -> float:
        """When the concurrency leases the server keeps on disk run out (the last of them), in
        ``time.time()`` seconds (prefect.server.concurrency.lease_storage.filesystem)."""
        index = json.loads((self.home / "concurrency_leases" / "expirations.json").read_text())
        assert index, "no lease on the server"
        return max(datetime.fromisoformat(when).timestamp() for when in index.values())

    def restart(self) -> None:
        local.stop(self.proc)
        self.proc = local.start_server(self.env, self.home / "server-2.log")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("crash-server"))
    try:
        yield srv
    finally:
        local.stop(srv.proc)


def slots_taken(env: dict[str, str]) -> int:
    with local.client_for(env) as client:
        return client.read_global_concurrency_limit_by_name(local.TLM_LIMIT).active_slots


def run_child(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    end = DAY + timedelta(days=1)
    return subprocess.Popen(
        [sys.executable, str(CHILD), DAY.isoformat(), end.isoformat(), TAG],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_sigkill_during_scoring_then_rerun_on_the_same_server(
    server: Server,
    langfuse_sandbox: LangfuseSandbox,
    tlm: TLMSandbox,
    tmp_path: Path,
) -> None:
    lf = langfuse_sandbox
    pairs: dict[str, tuple[str, str]] = {}
    for i in range(N):
        q, a = f"Killed question {i}?", f"Answer {i}."
        trace_id = lf.store.add_trace(
            name=f"k{i}", tags=(TAG,), start_time=DAY + timedelta(minutes=20 * i),
            input={"args": [q], "kwargs": {}}, output=a,
        )  # fmt: skip
        pairs[trace_id] = (q, a)
    tlm.set_latency(Latency.fixed(0.4))
    # the kill lands while chunk 3 is at TLM, held there: chunks 3 and 4 are the middle 10
    # traces of the day, whichever end of it the pages start from
    held = {f"Killed question {i}?" for i in range(2 * PAGE, 4 * PAGE)}
    tlm.faults.set("tlm.score", Fault(hold_items=held))
    env = {k: v for k, v in os.environ.items() if k.startswith(("TRUST_EVAL_", "LANGFUSE_"))}
    env = (
        server.env
        | env
        | tlm.env()
        | lf.env()
        | {
            "TRUST_EVAL_PAGE_SIZE": str(PAGE),
            "TRUST_EVAL_CHUNKS_IN_FLIGHT": str(IN_FLIGHT),
            "TRUST_EVAL_LOCK_LEASE_S": str(LEASE_S),
            "TRUST_EVAL_TLM_CONCURRENCY_LIMIT": local.TLM_LIMIT,
            "TRUST_EVAL_TLM_SLOT_BLOCK": str(CEILING),
            "TRUST_EVAL_TLM_SLOT_LEASE_S": str(SLOT_LEASE_S),
            "TRUST_EVAL_TLM_TIMEOUT_S": "300",  # held items outlast any pause of a busy machine
            "PYTHONUNBUFFERED": "1",
            "PREFECT_LOGGING_LEVEL": "INFO",
        }
    )

    local.create_tlm_limit(env, CEILING)
    first = run_child(env, tmp_path / "run1.log")
    try:
        deadline = time.monotonic() + 180
        # chunks 1 and 2 landed, chunk 3 is held at TLM, chunk 4 waits for its slots
        while len(lf.store.all_scores()) < 2 * PAGE or tlm.holding == 0:
            assert first.poll() is None, (tmp_path / "run1.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the first run never reached chunk 3"
            time.sleep(0.01)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    tlm.faults.clear()  # the held calls are answered (and paid), to a client that is gone
    assert tlm.drain(30), "TLM still serving the dead run's calls"
    landed = Counter(s.trace_id for s in lf.store.all_scores())
    paid_before, spans_before = len(tlm.prompts), len(tlm.spans())
    assert len(landed) == 2 * PAGE and all(n == 1 for n in landed.values()), landed

    # a crash loses at most the chunks at TLM: their items are the only ones paid again
    assert 0 < paid_before - len(landed) <= IN_FLIGHT * PAGE
    assert slots_taken(env) == CEILING  # the dead run's: nobody gave them back
    expires = server.lease_expiry()
    server.restart()

    # the dead run's window lock is taken over: the re-run ends (a lock never freed would
    # fail it with a lock timeout, or hold it past the wait below)
    second = run_child(env, tmp_path / "run2.log")
    second.wait(timeout=240)
    log = (tmp_path / "run2.log").read_text(errors="replace")
    assert second.returncode == 0, log[-3000:]

    # it scored only once the dead run's lease had run out
    assert min(s.start for s in tlm.spans()[spans_before:]) >= expires
    assert slots_taken(env) == 0
    scores = lf.store.all_scores()
    assert Counter(s.trace_id for s in scores) == Counter(dict.fromkeys(pairs, 1))
    assert all(s.value == synthetic_score(*pairs[s.trace_id or ""]) for s in scores)
    # what had landed was not paid for again
    assert len(tlm.prompts) - paid_before == N - len(landed)
