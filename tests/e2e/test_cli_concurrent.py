"""Two CLI runs at once, with no Prefect server to share (each starts its own embedded one on the
same PREFECT_HOME, the CLI's documented mode): TLM is paid once per trace in total, for a
``--since 24h`` window overlapping the daily one. (Two runs of the same window hold the same
day lock: tests/e2e/test_window_lock.py and the flow tests cover them; the overlap is the
harder case for the lock, which is per UTC day.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sandbox.langfuse import LangfuseSandbox
from sandbox.prefect_home import fresh_home
from sandbox.tlm import Latency, TLMSandbox
from tests.support.seeding import TAG, seed

REPO = Path(__file__).resolve().parents[2]
N = 16


def cli(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *args, "--tag", TAG, "--show", "0"],
        cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def seed_overlap(lf: LangfuseSandbox, now: datetime) -> tuple[datetime, datetime, list[str]]:
    """N traces inside both yesterday's UTC day and the last 24 hours."""
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    lo, hi = max(today - timedelta(days=1), now - timedelta(hours=24)), today
    if hi - lo < timedelta(minutes=20):
        pytest.skip("too close to midnight UTC for the two windows to overlap usefully")
    step = (hi - lo - timedelta(minutes=10)) / N
    ids = seed(lf, N, start=lo + timedelta(minutes=5), step=step, metadata=None)
    return today - timedelta(days=1), today, ids


def test_two_cli_runs_pay_tlm_once_per_trace(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, tmp_path: Path
) -> None:
    lf = langfuse_sandbox
    start, end, ids = seed_overlap(lf, datetime.now(UTC))
    tlm.set_latency(Latency.fixed(0.5))  # each run scores for a few seconds: they overlap
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= (
        lf.env()
        | tlm.env()
        | {"PREFECT_HOME": str(fresh_home(tmp_path / "home")), "PYTHONUNBUFFERED": "1"}
    )
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"  # a busy 2-core machine
    daily = ["window", "--start", start.isoformat(), "--end", end.isoformat()]
    other = ["window", "--since", "24h"]
    first = cli(daily, env, tmp_path / "a.log")
    # two ephemeral servers starting on one Prefect database at the same instant can race in
    # Prefect's own start-up (seen on a new database); a moment apart, both runs still overlap
    time.sleep(3)
    runs = [first, cli(other, env, tmp_path / "b.log")]
    for proc in runs:
        proc.wait(timeout=240)
    logs = [(tmp_path / f"{x}.log").read_text(errors="replace") for x in "ab"]
    assert [p.returncode for p in runs] == [0, 0], "\n---\n".join(t[-2000:] for t in logs)
    assert len(tlm.prompts) == N, f"TLM paid {len(tlm.prompts)} items for {N} traces"
    assert Counter(s.trace_id for s in lf.store.all_scores()) == Counter(dict.fromkeys(ids, 1))
