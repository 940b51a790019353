"""``make prefect`` (``python -m deployments.local``) as a user runs it: Ctrl-C (to its whole
process group, as a terminal sends it) or SIGTERM stops the server, the worker and everything
they started, and a second start over what an earlier one left refuses in one line naming the
PID to kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployments.processes import PID_FILE, alive, descendants, orphan, port_taken
from sandbox.prefect_home import fresh_home
from sandbox.runner import free_port

REPO = Path(__file__).resolve().parents[2]


def env_of() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "TRUST_EVAL_"))}
    return env | {"PYTHONUNBUFFERED": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def make_prefect(port: int, home: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "deployments.local", "--port", str(port), "--home", str(home)],
        cwd=REPO, env=env_of(), stdout=log.open("wb"), stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


@pytest.fixture
def planted() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test plants; killed on the way out."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("how", ["Ctrl-C to the group", "SIGTERM"])
def test_ctrl_c_or_sigterm_stops_the_server_the_worker_and_all_they_started(
    tmp_path: Path, how: str
) -> None:
    port, home, log = free_port(), tmp_path / "home", tmp_path / "make-prefect.log"
    if how == "SIGTERM":  # a later start: its database already migrated (Ctrl-C: a first one)
        fresh_home(home)
    proc = make_prefect(port, home, log)
    try:
        deadline = time.monotonic() + 420  # a guard against a stuck test only
        while "Prefect UI:" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.5)
        tree = descendants([proc.pid])
        roles = dict(line.split() for line in (home / PID_FILE).read_text().splitlines())
        assert set(roles) == {"server", "worker"}
        assert {int(p) for p in roles.values()} <= set(tree)
        if how == "SIGTERM":
            os.kill(proc.pid, signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    out = log.read_text(errors="replace")
    assert proc.returncode == 0 and "Traceback" not in out, out[-3000:]
    assert "stopped the worker" in out and "stopped the server" in out
    survivors = [pid for pid in tree if alive(pid)]
    assert survivors == [], f"still running: {survivors}"
    assert not port_taken(port) and not (home / PID_FILE).exists()


def test_a_second_start_over_an_orphan_refuses_in_one_line_naming_the_pid(
    tmp_path: Path, planted: list[subprocess.Popen[bytes]]
) -> None:
    # a server left on the port (here: any process listening on it)
    port = free_port()
    listen = f"import socket,time; s=socket.socket(); s.bind(('127.0.0.1',{port})); s.listen()"
    planted.append(subprocess.Popen([sys.executable, "-c", f"{listen}; time.sleep(600)"]))
    while not port_taken(port):
        time.sleep(0.05)
    refused = subprocess.run(
        [sys.executable, "-m", "deployments.local", "--port", str(port), "--home",
         str(tmp_path / "a")],
        cwd=REPO, env=env_of(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    pid = planted[-1].pid
    assert refused.returncode == 1 and refused.stdout == "", refused
    assert refused.stderr.count("\n") == 1 and f"in use by PID {pid}" in refused.stderr
    assert f"kill {pid}" in refused.stderr and "Traceback" not in refused.stderr

    # a PID file left by an earlier run whose server still runs
    home = tmp_path / "b"
    home.mkdir()
    planted.append(
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "prefect"])
    )
    left = planted[-1].pid
    (home / PID_FILE).write_text(f"server {left}\n")
    refused = subprocess.run(
        [sys.executable, "-m", "deployments.local", "--port", str(free_port()), "--home",
         str(home)],
        cwd=REPO, env=env_of(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused
    assert f"server PID {left}" in refused.stderr and f"kill {left}" in refused.stderr

    # a PID file whose processes are gone is stale: no refusal, and it is removed
    planted[-1].kill()
    planted[-1].wait()
    assert orphan(home, free_port()) is None
    assert not (home / PID_FILE).exists()
