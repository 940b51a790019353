"""The processes of ``make prefect``: stopping a child with everything it started (flow runs
live in sessions of their own), and finding what an earlier ``make prefect`` left running (its
PID file, or whatever listens on the port) so a new one refuses to start over it.

Process trees come from ``ps`` (Linux and macOS); the listener of a port from ``/proc`` (Linux;
elsewhere the message points at ``lsof``)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

PID_FILE = "make-prefect.pids"  # under PREFECT_HOME: "<role> <pid>" per line while running


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def command_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        done = subprocess.run(
            ["ps", "-p", str(pid), "-o", "command="], capture_output=True, text=True, check=False
        )
        return done.stdout.strip()


def descendants(roots: Iterable[int]) -> list[int]:
    """Every process started by ``roots``, their children's children included."""
    done = subprocess.run(
        ["ps", "-A", "-o", "pid=,ppid="], capture_output=True, text=True, check=False
    )
    children: dict[int, list[int]] = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            children.setdefault(int(parts[1]), []).append(int(parts[0]))
    out: list[int] = []
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.append(child)
                todo.append(child)
    return out


def signal_all(pids: Iterable[int], sig: int) -> None:
    """``sig`` to each process, and to the process group of those that lead one."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)


def stop_tree(roots: Sequence[int], timeout_s: float = 15.0) -> list[int]:
    """SIGTERM ``roots`` and everything they started, SIGKILL what is left after
    ``timeout_s``; the processes that had to be killed."""
    tree = [*roots, *descendants(roots)]
    signal_all(tree, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while any(alive(p) for p in tree) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [p for p in tree if alive(p)]
    signal_all(left, signal.SIGKILL)
    return left


# --- what an earlier run left -----------------------------------------------------------


def write_pids(home: Path, pids: dict[str, int]) -> None:
    (home / PID_FILE).write_text("".join(f"{role} {pid}\n" for role, pid in pids.items()))


def leftover(home: Path) -> dict[str, int]:
    """The processes a PID file under ``home`` names that still run Prefect (a file naming
    none is stale: it is removed)."""
    path = home / PID_FILE
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    found = {}
    for line in lines:
        role, _, pid = line.partition(" ")
        if pid.strip().isdigit() and alive(int(pid)) and "prefect" in command_of(int(pid)):
            found[role] = int(pid)
    if not found:
        path.unlink(missing_ok=True)
    return found


def port_taken(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def listener_of(port: int) -> int | None:
    """The process listening on TCP ``port`` (Linux, one of this user's processes), if found."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                cols = row.split()
                if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{cols[9]}]")
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return int(proc.name)
    return None


def orphan(home: Path, port: int) -> str | None:
    """Why ``make prefect`` must not start here (one line naming the PID), or None."""
    left = leftover(home)
    if left:
        pids = " ".join(map(str, left.values()))
        running = ", ".join(f"{role} PID {pid}" for role, pid in left.items())
        return (
            f"an earlier `make prefect` is still running ({running}; {home / PID_FILE}): "
            f"stop it first with `kill {pids}`"
        )
    if port_taken(port):
        pid = listener_of(port)
        if pid is None:
            return (
                f"port {port} is already in use (find the process: lsof -i :{port}): stop it, "
                "or pick another port with --port"
            )
        return (
            f"port {port} is already in use by PID {pid} ({command_of(pid)[:80]}), perhaps a "
            f"Prefect server left by an earlier `make prefect`: stop it with `kill {pid}`, or "
            "pick another port with --port"
        )
    return None
