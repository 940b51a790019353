"""Shared pytest fixtures, and each test's layer marker (the folder it sits in).

The repository root goes on ``sys.path`` so tests import ``sandbox``, ``tasks``, ``flows``...
Nothing here starts a server on import: the TLM sandbox is started by the conftest of each
layer that talks to it (see ``tests/contract/conftest.py``), so ``tests/unit`` opens no socket.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Tests never reach beyond 127.0.0.1: no telemetry from the Prefect servers they start.
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
# a Prefect server started by a test on a busy 2-core machine may take a minute to answer
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"
# the CLI in a test never runs on a developer's `make prefect` server (127.0.0.1:4200)
os.environ["TRUST_EVAL_LOCAL_PREFECT_API"] = ""

TESTS = Path(__file__).resolve().parent
REPO_ROOT = TESTS.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from langfuse import Langfuse  # noqa: E402

from sandbox.langfuse import LangfuseSandbox  # noqa: E402
from sandbox.prefect_home import copy_database  # noqa: E402
from sandbox.tlm import TLMSandbox, session_tlm_sandbox  # noqa: E402
from tests.support.env import FAST_TUNING, guard_network  # noqa: E402

# --------------------------------------------------------------------------- layers

LAYERS = ("unit", "contract", "flow", "e2e")  # registered in pyproject.toml


# The order files go to the workers (``--dist loadfile --no-loadscope-reorder``): the e2e ones
# first (they start servers and processes of their own: none after the Prefect test harness
# is up in the same worker), then the files that take longest (measured with --durations,
# slowest first), so the run does not end with one worker alone on a long file; the others
# follow in collection order.
LONGEST_FIRST = (
    "e2e/test_deployments.py",
    "e2e/test_make_prefect.py",
    "e2e/test_crash.py",
    "e2e/test_crash_persistent.py",
    "e2e/test_benchmarks.py",
    "e2e/test_cli_concurrent.py",
    "e2e/test_cli_subprocess.py",
    "flow/test_flow.py",
    "flow/test_faults_langfuse.py",
    "flow/test_backfill.py",
    "flow/test_faults_tlm.py",
    "flow/test_explain_budget.py",
    "flow/test_review_loop.py",
    "contract/test_tlm_sandbox.py",
    "flow/test_day_one.py",
    "flow/test_config.py",
    "flow/test_score_writes.py",
    "contract/test_score_engine.py",
    "flow/test_review.py",
)


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its layer, from its folder: ``tests/<layer>/...``; the e2e files
    first, then the longest."""
    rank: dict[int, tuple[bool, int]] = {}
    for item in items:
        parts = item.path.relative_to(TESTS).parts if item.path.is_relative_to(TESTS) else ()
        if parts and parts[0] in LAYERS:
            item.add_marker(parts[0])
        path = "/".join(parts)
        longest = LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)
        rank[id(item)] = (parts[:1] != ("e2e",), longest)
    items.sort(key=lambda item: rank[id(item)])  # stable: collection order within a rank


@pytest.fixture(autouse=True)
def no_stop_left_over() -> Iterator[None]:
    """A test that stops a run (a signal, a cancel) leaves the process's stop flag set; the
    next test in the same worker starts without it, as a new process would."""
    yield
    if "flows.stopping" in sys.modules:
        sys.modules["flows.stopping"].STOP.reset()


# --------------------------------------------------------------------------- network guard


@pytest.fixture
def no_external_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any TCP connection a test opens to anything but the loopback interface."""
    guard_network(monkeypatch)


# --------------------------------------------------------------------------- Langfuse sandbox

# Environment that could send the SDK elsewhere or change what it sends.
_LANGFUSE_ENV_CLEARED = (
    "LANGFUSE_HOST",
    "LANGFUSE_TRACING_ENVIRONMENT",
    "LANGFUSE_RELEASE",
    "LANGFUSE_SAMPLE_RATE",
    "LANGFUSE_TRACING_ENABLED",
    "LANGFUSE_OTEL_TRACES_EXPORT_PATH",
    "OTEL_SDK_DISABLED",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)


@pytest.fixture
def langfuse_sandbox(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, no_external_network: None
) -> Iterator[LangfuseSandbox]:
    """A fresh Langfuse sandbox (fresh keys) on 127.0.0.1, with LANGFUSE_* pointing at it.

    Its server profile is "current" unless the test is parametrized
    (``tests.support.profiles.ON_BOTH_SERVERS``).
    """
    for name in _LANGFUSE_ENV_CLEARED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("LANGFUSE_TIMEOUT", "5")
    with LangfuseSandbox(profile=getattr(request, "param", "current")) as sandbox:
        for name, value in sandbox.env().items():
            monkeypatch.setenv(name, value)
        yield sandbox


@pytest.fixture
def make_langfuse_client(
    langfuse_sandbox: LangfuseSandbox,
) -> Iterator[Callable[..., Langfuse]]:
    """``make(**kwargs) -> Langfuse`` bound to the sandbox; clients are shut down afterwards.

    The SDK keeps one client per public key per process, so every sandbox has its own keys;
    ``@observe``'d calls must pass ``langfuse_public_key=sandbox.public_key`` once several
    clients exist in the process.
    """
    clients: list[Langfuse] = []

    def make(**kwargs: Any) -> Langfuse:
        args: dict[str, Any] = {**langfuse_sandbox.client_kwargs(), "timeout": 5}
        args.update(kwargs)
        client = Langfuse(**args)
        clients.append(client)
        return client

    yield make
    langfuse_sandbox.faults.clear()  # a hang or an error fault must not stall the final flush
    for client in clients:
        client.shutdown()


@pytest.fixture
def langfuse_client(make_langfuse_client: Callable[..., Langfuse]) -> Langfuse:
    """A Langfuse SDK client talking to ``langfuse_sandbox``."""
    return make_langfuse_client()


# --------------------------------------------------------------------------- flows


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A real, temporary Prefect server and database for the session (isolated Prefect home).

    Its flow runs send no heartbeats: Prefect's heartbeat thread sleeps in 1 s steps and every
    flow run waits for it at its end (1.2 s for an empty flow, against 0.14 s without). Only the
    lost-worker rule reads heartbeats: on a fake clock in tests/unit/test_day_runs.py, and on a
    real server and worker, heartbeats on, in tests/e2e/test_deployments.py.
    """
    import prefect.testing.utilities as harness
    from prefect.settings import temporary_settings

    from tests.support.prefect_stack import drain_workers

    def migrated_tmp() -> str:  # the harness's database directory, its file already migrated
        tmp = Path(tempfile.mkdtemp())
        copy_database(tmp / "prefect-test.db")  # the name prefect_test_harness gives it
        return str(tmp)

    home = tmp_path_factory.mktemp("prefect-home")
    mp = pytest.MonkeyPatch()
    mp.setattr(harness, "mkdtemp", migrated_tmp)
    mp.setenv("PREFECT_HOME", str(home))
    mp.setenv("PREFECT_LOGGING_LEVEL", "WARNING")
    # No task runs recorded from their events (a sixth of the flow tests' time, most of it the
    # server's): the product never reads task runs back, the events stay stored, and the e2e
    # servers record them as a user's server does (the UI render test shows them).
    mp.setenv("PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED", "false")
    try:
        with (
            temporary_settings(updates={"flows.heartbeat_frequency": None}),
            harness.prefect_test_harness(server_startup_timeout=180),
        ):
            yield
            drain_workers()  # before the harness's own drain, which has no timeout
    finally:
        mp.undo()


@pytest.fixture
def tlm(monkeypatch: pytest.MonkeyPatch) -> Iterator[TLMSandbox]:
    """The session's TLM sandbox, its faults and logs reset, its key in the environment."""
    sandbox = session_tlm_sandbox()  # started already by the layer's conftest
    sandbox.reset()
    for name, value in (sandbox.env() | FAST_TUNING).items():
        monkeypatch.setenv(name, value)
    yield sandbox
    sandbox.reset()


@pytest.fixture(autouse=True)
def score_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's runs record what they wrote in a ledger of their own."""
    path = tmp_path / "ledger"
    monkeypatch.setenv("TRUST_EVAL_LEDGER_URL", str(path))
    return path
