"""A real local Prefect setup in one command: ``python -m deployments.local`` (``make prefect``).

1. starts ``prefect server start`` on 127.0.0.1 (SQLite, PREFECT_HOME=.prefect/ in the repo, so
   nothing touches your own Prefect profile);
2. creates the ``trust-evals`` work pool (type ``process``: flow runs are subprocesses, no Docker);
3. runs ``prefect deploy --all --no-prompt`` (the deployments of ``prefect.yaml``);
4. starts a worker on the pool;
5. prints the Prefect UI address, then waits; Ctrl-C or SIGTERM stops the worker, its flow
   runs and the server (everything they started).

It refuses to start over what an earlier run left (its PID file under PREFECT_HOME names a live
process, or something listens on the port), in one line naming the PID to kill.

Credentials are NOT passed through Prefect: the worker's flow runs inherit this process's
environment, so export LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY, LANGFUSE_BASE_URL and
CLEANLAB_TLM_API_KEY before running it (a warning says which are missing).

The helpers (start_server, create_pool, deploy, start_worker, stop) are what the end-to-end test
(tests/test_deployments.py) drives too.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from deployments.processes import PID_FILE, orphan, stop_tree, write_pids

if TYPE_CHECKING:
    from uuid import UUID

    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import FlowRun

REPO = Path(__file__).resolve().parents[1]
POOL = "trust-evals"
CREDENTIALS = ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY", "LANGFUSE_BASE_URL")
TLM_CREDENTIALS = ("CLEANLAB_TLM_API_KEY",)


def prefect_env(home: Path, port: int, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment every Prefect command of this setup runs with."""
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(port),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            # concurrency leases on disk under PREFECT_HOME, not in the server's memory: slots
            # held when the server restarts still expire, instead of staying taken for good
            "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": (
                "prefect.server.concurrency.lease_storage.filesystem"
            ),
            "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
            "NO_PROXY": ",".join(filter(None, [env.get("NO_PROXY"), "127.0.0.1", "localhost"])),
        }
    )
    env.pop("PREFECT_PROFILE", None)
    return env


def prefect_cmd(*args: str) -> list[str]:
    """``prefect ...`` with this interpreter (the project's virtualenv)."""
    return [sys.executable, "-m", "prefect", *args]


def spawn(args: Sequence[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A long-running child in its own process group (so it is stopped with its children)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    out = log.open("ab")
    try:
        return subprocess.Popen(
            list(args),
            cwd=REPO,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        out.close()  # the child holds its own copy


def stop(proc: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    """SIGTERM the child and everything it started (its process group, and the flow runs in
    sessions of their own), then SIGKILL whatever is left after ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    stop_tree([proc.pid], timeout)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def wait_healthy(
    api_url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited ({proc.returncode}); see {log}")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise RuntimeError(f"prefect server not healthy after {timeout:.0f} s; see {log}")


def start_server(
    env: Mapping[str, str], log: Path, timeout: float = 120.0
) -> subprocess.Popen[bytes]:
    port = env["PREFECT_SERVER_API_PORT"]
    proc = spawn(prefect_cmd("server", "start", "--host", "127.0.0.1", "--port", port), env, log)
    try:
        wait_healthy(env["PREFECT_API_URL"], proc, log, timeout)
    except BaseException:
        stop(proc)
        raise
    return proc


@contextlib.contextmanager
def running_server(home: Path, port: int, base: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """A ``prefect server`` with its own ``home`` on ``port``, stopped on the way out; the
    environment that talks to it."""
    env = prefect_env(home, port, base)
    proc = start_server(env, home / "server.log")
    try:
        yield env
    finally:
        stop(proc)


def run(args: Sequence[str], env: Mapping[str, str], timeout: float = 300.0) -> str:
    """A short Prefect command; its output, or RuntimeError with the output when it fails."""
    done = subprocess.run(
        list(args), cwd=REPO, env=dict(env), capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args[2:])} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    return done.stdout


RATE_LIMIT = "langfuse-requests"
INGESTION_LIMIT = "langfuse-ingestion"  # POST ingestion: Langfuse's "ingestion" rate bucket
TLM_LIMIT = "tlm-in-flight"


def create_rate_limit(env: Mapping[str, str], per_minute: float, name: str = RATE_LIMIT) -> None:
    """A global concurrency limit that refills ``per_minute`` slots a minute (at 90%, one at a
    time), so the runs of every worker together stay under Langfuse's request limit."""
    upsert_limit(env, name, 1, round(0.9 * per_minute / 60, 4))


def create_tlm_limit(env: Mapping[str, str], in_flight: int, name: str = TLM_LIMIT) -> None:
    """A global concurrency limit of ``in_flight`` slots (no decay): the TLM calls that the
    runs of every worker may have in flight together."""
    upsert_limit(env, name, in_flight, 0.0)


@contextlib.contextmanager
def client_for(env: Mapping[str, str]) -> Iterator[SyncPrefectClient]:
    """A Prefect client of the server at ``env``'s PREFECT_API_URL."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}),
        get_client(sync_client=True) as client,
    ):
        yield client


def wait_final(client: SyncPrefectClient, run_id: UUID, timeout: float = 120.0) -> FlowRun:
    """The flow run once its state is final; RuntimeError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        run = client.read_flow_run(run_id)
        if run.state is not None and run.state.is_final():
            return run
        if time.monotonic() > deadline:
            raise RuntimeError(f"flow run {run_id} not finished after {timeout:.0f} s: {run.state}")
        time.sleep(0.5)


def upsert_limit(env: Mapping[str, str], name: str, limit: int, decay: float) -> None:
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )
    from prefect.exceptions import ObjectNotFound

    with client_for(env) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=limit, slot_decay_per_second=decay)
            )
        else:
            client.update_global_concurrency_limit(
                name,
                GlobalConcurrencyLimitUpdate(limit=limit, slot_decay_per_second=decay, active=True),
            )


def create_pool(env: Mapping[str, str], pool: str = POOL) -> None:
    run(prefect_cmd("work-pool", "create", pool, "--type", "process", "--overwrite"), env)


def deploy(env: Mapping[str, str], names: Sequence[str] = ()) -> str:
    """``prefect deploy`` of prefect.yaml: every deployment, or the ``names`` given."""
    which = [a for n in names for a in ("--name", n)] or ["--all"]
    return run(prefect_cmd("deploy", *which, "--no-prompt"), env)


def start_worker(
    env: Mapping[str, str],
    log: Path,
    pool: str = POOL,
    limit: int | None = None,
    name: str | None = None,
) -> subprocess.Popen[bytes]:
    args = ["worker", "start", "--pool", pool, "--type", "process"]
    if limit:
        args += ["--limit", str(limit)]
    if name:
        args += ["--name", name]
    return spawn(prefect_cmd(*args), env, log)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=4200, help="Prefect server port")
    parser.add_argument(
        "--home", type=Path, default=REPO / ".prefect", help="PREFECT_HOME (SQLite lives here)"
    )
    parser.add_argument("--pool", default=POOL, help="work pool name (as in prefect.yaml)")
    args = parser.parse_args(argv)

    home: Path = args.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    refused = orphan(home, args.port)
    if refused:
        print(f"error: {refused}", file=sys.stderr)
        return 1
    missing = [n for n in CREDENTIALS + TLM_CREDENTIALS if not os.environ.get(n)]
    if missing:
        print(
            f"warning: {', '.join(missing)} not set: flow runs will refuse to start until they are"
        )
    env = prefect_env(home, args.port)
    started: dict[str, subprocess.Popen[bytes]] = {}
    try:
        print(f"Starting the Prefect server (PREFECT_HOME={home}) ...", flush=True)
        started["server"] = start_server(env, home / "server.log")
        write_pids(home, {k: p.pid for k, p in started.items()})
        print(f"Creating the work pool {args.pool!r} (process) ...", flush=True)
        create_pool(env, args.pool)
        per_minute = float(os.environ.get("TRUST_EVAL_LANGFUSE_REQUESTS_PER_MINUTE", "30"))
        create_rate_limit(env, per_minute)
        env.setdefault("TRUST_EVAL_LANGFUSE_RATE_LIMIT", RATE_LIMIT)
        ingestion = float(os.environ.get("TRUST_EVAL_LANGFUSE_INGESTION_PER_MINUTE", "1000"))
        create_rate_limit(env, ingestion, INGESTION_LIMIT)
        env.setdefault("TRUST_EVAL_LANGFUSE_INGESTION_RATE_LIMIT", INGESTION_LIMIT)
        in_flight = int(os.environ.get("TRUST_EVAL_TLM_MAX_IN_FLIGHT", "512"))
        create_tlm_limit(env, in_flight)
        env.setdefault("TRUST_EVAL_TLM_CONCURRENCY_LIMIT", TLM_LIMIT)
        # the worker starts while we deploy
        started["worker"] = start_worker(env, home / "worker.log", args.pool)
        write_pids(home, {k: p.pid for k, p in started.items()})
        print("Deploying every deployment of prefect.yaml ...", flush=True)
        print(deploy(env), flush=True)
        print(
            f"\nPrefect UI:  http://127.0.0.1:{args.port}\n"
            f"API:         {env['PREFECT_API_URL']}   (the CLI uses it while it runs)\n"
            f"Logs:        {home / 'server.log'}, {home / 'worker.log'}\n"
            f"Langfuse:    at most {per_minute:.0f} requests a minute over all runs (global "
            f"concurrency limit {RATE_LIMIT!r};\n"
            "             TRUST_EVAL_LANGFUSE_REQUESTS_PER_MINUTE sets your plan's limit);\n"
            f"             score batches on POST ingestion: {ingestion:.0f} a minute "
            f"({INGESTION_LIMIT!r},\n"
            "             TRUST_EVAL_LANGFUSE_INGESTION_PER_MINUTE)\n"
            f"TLM:         at most {in_flight} calls in flight over all runs (global concurrency "
            f"limit {TLM_LIMIT!r};\n"
            "             TRUST_EVAL_TLM_MAX_IN_FLIGHT sets it)\n"
            "Alerts:      notify-low-trust and notify-drift log their alerts in their runs; set\n"
            "             their `block` parameter to send them (README, 'Closing the loop')\n"
            "Ctrl-C (or SIGTERM) stops the worker, its flow runs and the server.",
            flush=True,
        )
        while True:
            for name, proc in started.items():
                if proc.poll() is not None:
                    print(f"the {name} exited ({proc.returncode}); see {home / (name + '.log')}")
                    return 1
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nStopping ...", flush=True)
        return 0
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        shut_down(started, home)


def shut_down(started: dict[str, subprocess.Popen[bytes]], home: Path) -> None:
    """The worker and its flow runs first (they report to the server as they stop), then the
    server; a second Ctrl-C cannot cut this short. The PID file goes once all are gone."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    for name in ("worker", "server"):
        proc = started.get(name)
        if proc is not None and proc.poll() is None:
            killed = stop_tree([proc.pid], timeout_s=20.0)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            note = f" ({len(killed)} killed after 20 s)" if killed else ""
            print(f"stopped the {name} (PID {proc.pid}) and what it started{note}", flush=True)
    if all(p.poll() is not None for p in started.values()):
        (home / PID_FILE).unlink(missing_ok=True)


def interrupt(signum: int, frame: object) -> None:
    """Ctrl-C and SIGTERM: stop (once; shut_down ignores the next ones)."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    # Ctrl-C (even when started with SIGINT ignored, e.g. in the background) and SIGTERM both
    # stop the worker, its flow runs and the server
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # before main's own handling began
        sys.exit(0)
