"""A real local Prefect stack for the e2e tests: a ``prefect server``, the process work pool,
prefect.yaml's deployments and workers, with the sandboxes' settings in the workers' env."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from subprocess import Popen
from typing import Any
from uuid import UUID, uuid4

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
from prefect.client.schemas.objects import FlowRun

from deployments import local
from sandbox.langfuse import LangfuseSandbox
from sandbox.prefect_home import fresh_home
from sandbox.runner import free_port
from sandbox.tlm import session_tlm_sandbox
from tests.support.env import FAST_TUNING
from tests.support.prefect_yaml import declared_deployments


def drain_workers(timeout: float = 30.0) -> None:
    """Send what the process's events and log workers hold, and stop them; each within
    ``timeout`` s. A worker stays bound to the API URL it started with, and Prefect's own
    drains wait for ever: a worker bound to a server that is gone would hold the session."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    EventsWorker.drain_all(timeout=timeout)
    APILogWorker.drain_all(timeout=timeout)


@contextmanager
def in_process_on(api_url: str, home: Path | None = None) -> Iterator[None]:
    """This process talks to the server at ``api_url`` (its flows too) until the block ends.

    Prefect keeps one events worker per process, bound to the API URL it started with: left
    running, it would send every later test's events to this server after it stops, and
    Prefect's test harness waits for them at the end of the session, for ever. So the block
    drains the process's event and log workers on the way out, while the server is still up.
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    values: dict[Any, Any] = {PREFECT_API_URL: api_url}
    if home is not None:
        values[PREFECT_HOME] = home
    with temporary_settings(values):
        try:
            yield
        finally:
            drain_workers()


@contextmanager
def global_limit(prefix: str, limit: int, decay: float = 0.0) -> Iterator[str]:
    """A global concurrency limit of a fresh name on this process's server; its name. Deleted
    on the way out."""
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    name = f"{prefix}-{uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name=name, limit=limit, slot_decay_per_second=decay)
        )
        try:
            yield name
        finally:
            client.delete_global_concurrency_limit_by_name(name)


def runs_of(client: SyncPrefectClient, deployment_id: UUID) -> list[FlowRun]:
    """The flow runs of one deployment."""
    return client.read_flow_runs(
        flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]))
    )


@contextmanager
def prefect_stack(
    tmp_path: Path,
    workers: Sequence[str] = ("worker",),
    limit: int = 4,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[tuple[dict[str, str], LangfuseSandbox, Path]]:
    """Server + pool + deployments + one process worker per name, with the sandboxes' env."""
    tlm = session_tlm_sandbox()
    tlm.reset()
    home = fresh_home(tmp_path / "prefect-home")
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "LANGFUSE_", "CLEANLAB_", "TRUST_EVAL_"))
        and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env = local.prefect_env(home, free_port(), base)
    env.update(
        {
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
            "PREFECT_LOGGING_LEVEL": "INFO",
            "LANGFUSE_TIMEOUT": "5",
            **FAST_TUNING,
            **tlm.env(),
            **(extra_env or {}),
        }
    )
    server: Popen[bytes] | None = None
    started: list[Popen[bytes]] = []
    with LangfuseSandbox() as lf:
        env.update(lf.env())
        t0 = time.monotonic()
        try:
            server = local.start_server(env, home / "server.log")
            print(f"server healthy after {time.monotonic() - t0:.1f} s")
            local.create_pool(env)
            # the workers start (import) while prefect deploy runs
            for name in workers:
                started.append(
                    local.start_worker(env, home / f"{name}.log", limit=limit, name=name)
                )
            out = local.deploy(env)
            assert out.count("successfully created") == len(declared_deployments()), out
            print(f"pool, workers and deployments after {time.monotonic() - t0:.1f} s")
            yield env, lf, home
        finally:
            for proc in started:
                local.stop(proc)
            local.stop(server)
