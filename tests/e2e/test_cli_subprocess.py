"""``python -m flows.cli`` as a user runs it, in a process of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
