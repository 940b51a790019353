"""Ctrl-C and SIGTERM on ``python -m flows.cli`` as a user runs it, mid-scoring: TLM holds two
items (the sandbox's ``hold_items`` fault), the signal comes, and the CLI exits 130 within 10 s
with the report of what landed, on its embedded Prefect server (which the terminal's Ctrl-C
does not reach) and on a persistent ``prefect server``. The window run again then pays TLM only
for what had not landed."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from deployments import local
from flows.prefect_server import answers
from sandbox.faults import Fault
from sandbox.langfuse import LangfuseSandbox
from sandbox.prefect_home import fresh_home
from sandbox.runner import free_port
from sandbox.tlm import TLMSandbox
from tests.support.env import FAST_TUNING
from tests.support.seeding import DAY, TAG, seed

REPO = Path(__file__).resolve().parents[2]
N, PAGE = 20, 5
HELD = {"Question 3?", "Question 4?"}  # the oldest page's: pages come newest first
STOP_WITHIN_S = 10.0


def base_env(tmp: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "LANGFUSE_", "CLEANLAB_", "TRUST_EVAL_"))
    }
    return (
        env
        | FAST_TUNING
        | {
            "PREFECT_HOME": str(fresh_home(tmp / "home")),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "TRUST_EVAL_LEDGER_URL": str(tmp / "ledger"),
            "TRUST_EVAL_LOCAL_PREFECT_API": "",  # never another engineer's `make prefect` on 4200
            "TRUST_EVAL_PAGE_SIZE": str(PAGE),
            "PYTHONUNBUFFERED": "1",
            "LANGFUSE_TIMEOUT": "5",
        }
    )


def cli(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """The CLI in a process group of its own, as a terminal's foreground job."""
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *argv, "--tag", TAG, "--show", "0"],
        cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def window() -> list[str]:
    end = DAY + timedelta(days=1)
    return ["window", "--start", DAY.isoformat(), "--end", end.isoformat()]


def wait_for(cond: object, what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 300  # a guard against a stuck test only
    while not cond():  # type: ignore[operator]
        assert proc.poll() is None, f"exited before {what}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"never: {what}\n{log.read_text()[-3000:]}"
        time.sleep(0.05)


def stop_mid_scoring(
    lf: LangfuseSandbox, tlm: TLMSandbox, argv: list[str], env: dict[str, str], log: Path,
    sig: int = signal.SIGINT, group: bool = True,
) -> tuple[int, float, str]:  # fmt: skip
    """Run the CLI until TLM holds the two items, signal it; its exit code, how long it took
    to exit after the signal, and what it printed."""
    tlm.faults.set("tlm.score", Fault(hold_items=set(HELD)))
    proc = cli(argv, env, log)
    try:
        wait_for(lambda: tlm.holding >= len(HELD), "TLM holds the items", proc, log)
        signalled = time.monotonic()
        if group:  # the terminal's Ctrl-C: the whole foreground process group
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
        proc.wait(timeout=120)
        took = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        tlm.faults.clear()  # the held items are answered now, to nobody
    return proc.returncode, took, log.read_text(errors="replace")


def paid(tlm: TLMSandbox) -> int:
    return tlm.faults.count("tlm.score")


def assert_stopped_with_what_landed(out: str, lf: LangfuseSandbox, why: str) -> int:
    assert f"STOPPED (stopped by {why})" in out, out[-3000:]
    assert "Traceback" not in out and "heartbeat failed" not in out, out[-3000:]
    assert "Error logging to API" not in out
    line = re.search(r"fetched 20: (.*)", out)
    assert line, out[-3000:]
    uploaded = int(re.search(r"uploaded (\d+)", line.group(1)).group(1))  # type: ignore[union-attr]
    assert f"failed to score: 2 (not scored: stopped by {why})" in out
    assert uploaded == len(lf.store.all_scores()) == N - len(HELD)
    return uploaded


def rerun_pays_only_what_did_not_land(
    lf: LangfuseSandbox, tlm: TLMSandbox, env: dict[str, str], log: Path, landed: int
) -> None:
    time.sleep(0.5)  # the released items' answers reach the sandbox's log
    before = paid(tlm)
    proc = cli(window(), env, log)
    proc.wait(timeout=300)
    out = log.read_text(errors="replace")
    assert proc.returncode == 0, out[-3000:]
    assert paid(tlm) - before == N - landed
    assert f"already scored {landed}" in out and f"uploaded {N - landed}" in out
    assert Counter(s.trace_id for s in lf.store.all_scores()).most_common(1)[0][1] == 1
    assert len(lf.store.all_scores()) == N


@pytest.mark.timing  # exiting within 10 s is real seconds: measured without other tests' load
@pytest.mark.parametrize("server", ["embedded", "persistent"])
def test_ctrl_c_mid_scoring_exits_130_within_10_s_with_what_landed(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, tmp_path: Path, server: str
) -> None:
    """Embedded: the CLI's own server (its session is not the terminal's, so Ctrl-C does not
    stop it under the run); persistent: a ``prefect server`` as ``make prefect`` runs it, which
    the CLI finds by itself (PREFECT_API_URL unset)."""
    lf = langfuse_sandbox
    seed(lf, N)
    env = base_env(tmp_path) | lf.env() | tlm.env()
    with contextlib.ExitStack() as stack:
        if server == "persistent":
            home, port = fresh_home(tmp_path / "server-home"), free_port()
            persistent = stack.enter_context(local.running_server(home, port, base_env(tmp_path)))
            # PREFECT_API_URL unset: the CLI finds it as it finds the server of `make prefect`
            env["TRUST_EVAL_LOCAL_PREFECT_API"] = persistent["PREFECT_API_URL"]
        rc, took, out = stop_mid_scoring(lf, tlm, window(), env, tmp_path / "run1.log")
        print(f"{server}: exit {rc} {took:.1f} s after Ctrl-C")  # shown with -s
        assert rc == 130, out[-3000:]
        assert took < STOP_WITHIN_S, f"{took:.1f} s to stop"
        landed = assert_stopped_with_what_landed(out, lf, "Ctrl-C")
        if server == "embedded":
            url = re.search(r"embedded server for this run at (\S+)", out)
            assert url and not answers(url.group(1)), "the embedded server outlived the CLI"
        else:
            assert f"Prefect: the local server at {persistent['PREFECT_API_URL']}" in out
            assert answers(persistent["PREFECT_API_URL"])  # not the CLI's to stop
            assert "embedded server" not in out
        rerun_pays_only_what_did_not_land(lf, tlm, env, tmp_path / "run2.log", landed)


def test_one_sigterm_stops_a_backfill_with_its_days_reported(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, tmp_path: Path
) -> None:
    lf = langfuse_sandbox
    seed(lf, N)  # the first day; the second is never started
    seed(lf, 5, start=DAY + timedelta(days=1, hours=1), question="Day two {i}?")
    env = base_env(tmp_path) | lf.env() | tlm.env()
    day2 = DAY + timedelta(days=1)
    argv = ["backfill", "--start-date", f"{DAY:%Y-%m-%d}", "--end-date", f"{day2:%Y-%m-%d}",
            "--max-concurrency", "1"]  # fmt: skip
    rc, _, out = stop_mid_scoring(
        lf, tlm, argv, env, tmp_path / "run.log", sig=signal.SIGTERM, group=False
    )
    assert rc == 130, out[-3000:]
    assert "STOPPED (stopped by SIGTERM)" in out and "Traceback" not in out, out[-3000:]
    assert f"{day2:%Y-%m-%d}  failed" in out and "not started: stopped by SIGTERM" in out
    assert len(lf.store.all_scores()) == N - len(HELD)  # what TLM answered landed
    assert not any("Day two" in p for p in tlm.prompts)
