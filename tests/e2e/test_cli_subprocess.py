"""``python -m flows.cli`` as a user runs it, in a process of its own."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sandbox.langfuse import LangfuseSandbox
from sandbox.prefect_home import fresh_home
from sandbox.tlm import TLMSandbox
from tests.support.seeding import seed

REPO = Path(__file__).resolve().parents[2]
TAG = "TLM_eval_pipeline"


def test_subprocess_exit_codes_and_usage() -> None:
    """As a user runs it: a bad argument and missing credentials, no traceback either way."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANGFUSE_", "CLEANLAB_"))}
    cmd = [sys.executable, "-m", "flows.cli"]
    bad = subprocess.run(
        [*cmd, "window", "--since", "soon", "--tag", TAG],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "not a duration" in bad.stderr
    missing = subprocess.run(
        [*cmd, "window", "--since", "24h", "--tag", TAG],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2, missing.stderr
    assert missing.stderr.startswith("error: Langfuse configuration: ")
    assert "LANGFUSE_PUBLIC_KEY" in missing.stderr and "Traceback" not in missing.stderr


def test_the_cli_turns_prefect_telemetry_off_unless_the_user_set_it() -> None:
    """``python -m flows.cli`` run directly (not through make) is offline too."""
    probe = (
        "import os, flows.cli; from prefect.settings import get_current_settings as s; "
        "print(os.environ['PREFECT_SERVER_ANALYTICS_ENABLED'], os.environ['DO_NOT_TRACK'], "
        "s().server.analytics_enabled)"
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PREFECT_SERVER_ANALYTICS_ENABLED", "DO_NOT_TRACK")
    }

    def run(extra: dict[str, str]) -> str:
        out = subprocess.run(
            [sys.executable, "-c", probe],
            cwd=REPO,
            env=env | extra,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    assert run({}) == "false 1 False"
    user = {"PREFECT_SERVER_ANALYTICS_ENABLED": "true", "DO_NOT_TRACK": "0"}
    assert run(user) == "true 0 True"


def cli_env(tmp: Path, lf: LangfuseSandbox, tlm: TLMSandbox) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "LANGFUSE_", "CLEANLAB_", "TRUST_EVAL_"))
    }
    return (
        env
        | lf.env()
        | tlm.env()
        | {
            "PREFECT_HOME": str(fresh_home(tmp / "home")),
            "TRUST_EVAL_LEDGER_URL": str(tmp / "ledger"),
            "TRUST_EVAL_LOCAL_PREFECT_API": "",  # never another engineer's `make prefect` on 4200
            "PYTHONUNBUFFERED": "1",
        }
    )


def test_a_wrong_key_is_told_without_waiting_for_prefect(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, tmp_path: Path
) -> None:
    """Langfuse is asked while Prefect's server starts: here that server cannot start at all
    (its database path does not exist), and the CLI still answers with the key's refusal."""
    env = cli_env(tmp_path, langfuse_sandbox, tlm) | {
        "LANGFUSE_SECRET_KEY": "sk-lf-wrong",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{tmp_path}/no/such/dir/x.db",
    }
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "window", "--since", "24h", "--tag", TAG],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and "refused the API keys (HTTP 401)" in done.stderr
    assert "LANGFUSE_SECRET_KEY" in done.stderr and "sk-lf-wrong" not in done.stderr
    assert "starting an embedded server" in done.stdout and "is up after" not in done.stdout
    assert [r.endpoint for r in langfuse_sandbox.faults.requests] == ["health", "projects"]
    assert tlm.faults.requests == []


@pytest.mark.parametrize(
    ("argv", "env", "needle"),
    [
        (["window", "--since", "1000000d"], {}, "'1000000d' is more than 3653 days"),
        (["window", "--since", "24h"], {"TRUST_EVAL_SYSTEM_PROMPT_KEYS": "foo"},
         "TRUST_EVAL_SYSTEM_PROMPT_KEYS must be a JSON list"),
        (["backfill", "--start-date", "2026-01-01", "--end-date", "9999-12-31"], {},
         "--end-date 9999-12-31 is not over yet"),
        (["backfill", "--start-date", "2026-01-01", "--end-date", "2026-01-02",
          "--max-concurrency", "65"], {}, "--max-concurrency must be 1 to 64"),
    ],
    ids=["since", "tuple setting", "end date", "concurrency"],
)  # fmt: skip
def test_bad_input_is_one_line_exit_2_in_a_process_of_its_own(
    langfuse_sandbox: LangfuseSandbox,
    tlm: TLMSandbox,
    tmp_path: Path,
    argv: list[str],
    env: dict[str, str],
    needle: str,
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", *argv, "--tag", TAG],
        cwd=REPO, env=cli_env(tmp_path, langfuse_sandbox, tlm) | env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and done.stdout == "", done
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert needle in done.stderr
    assert langfuse_sandbox.faults.requests == [] and tlm.faults.requests == []


def test_a_large_run_asks_at_a_terminal_and_a_no_sends_nothing(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, tmp_path: Path
) -> None:
    lf = langfuse_sandbox
    seed(lf, 3, start=datetime.now(UTC) - timedelta(hours=2))
    env = cli_env(tmp_path, lf, tlm) | {
        "TRUST_EVAL_CONFIRM_ITEMS": "2",
        "TRUST_EVAL_SETTLE_LAG_S": "0",
    }
    terminal, child_end = pty.openpty()  # the CLI's stdin is a terminal
    log = tmp_path / "out.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "window", "--since", "24h", "--tag", TAG],
        cwd=REPO, env=env, stdin=child_end, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    os.close(child_end)
    try:
        deadline = time.monotonic() + 120  # a guard against a stuck test only
        while "Go ahead? [y/N]" not in log.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        os.write(terminal, b"n\n")
        proc.wait(timeout=60)
    finally:
        os.close(terminal)
        if proc.poll() is None:
            proc.kill()
    out = log.read_text(errors="replace")
    assert proc.returncode == 1 and "Stopped: nothing was sent to TLM." in out, out
    assert "up to 3 traces to TLM" in out and "TRUST_EVAL_CONFIRM_ITEMS=2" in out
    assert tlm.faults.requests == [] and lf.store.all_scores() == []
