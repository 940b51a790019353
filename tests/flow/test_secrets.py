"""Secrets never show: not in logs, Prefect's records, artifacts, reports or exceptions.

After each run (a success, a refused TLM key, a Langfuse 401, a secret in the wrong variable),
every place a secret could reach is searched for the sandboxes' keys, the Basic credential and
the wrong keys the run was given; the last test searches the Prefect server's whole database.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import secrets
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from flows.evaluate_traces import evaluate_traces
from sandbox.langfuse import LangfuseSandbox
from sandbox.tlm import TLMSandbox
from tasks.errors import ConfigError
from tasks.report import EVENT_EVALUATED, EvalReport
from tests.support.seeding import TAG, WINDOW, seed, with_options

pytestmark = pytest.mark.usefixtures("prefect_harness")

W: dict[str, Any] = WINDOW | {"tags": [TAG]}


# every run of this module and the secrets it knew: the database is searched for all of them
RUNS: list[tuple[str, dict[str, str]]] = []


def basic(public_key: str, secret_key: str) -> str:
    return base64.b64encode(f"{public_key}:{secret_key}".encode()).decode()


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every logger at DEBUG (Prefect's included), captured."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="prefect")
    yield caplog


@pytest.fixture
def console() -> Iterator[io.StringIO]:
    """What the console log handlers print (Prefect's rich console included), as text.

    They hold the stream they were configured with (pytest's own capture), so capfd alone
    would miss them: their output is redirected here for the test.
    """
    buf = io.StringIO()
    handlers = {
        h
        for name in (None, "prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.extra")
        for h in logging.getLogger(name).handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    }
    saved = []
    for h in handlers:
        rich = getattr(h, "console", None)
        saved.append((h, h.stream, rich, rich.file if rich is not None else None))
        h.stream = buf
        if rich is not None:
            rich.file = buf
    assert saved, "no console log handler found"
    yield buf
    for h, stream, rich, rich_file in saved:
        h.stream = stream
        if rich is not None:
            rich.file = rich_file


@pytest.fixture
def known(langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox) -> dict[str, str]:
    """The secrets of the sandboxes, by name."""
    lf = langfuse_sandbox
    return {
        "LANGFUSE_SECRET_KEY": lf.secret_key,
        "Langfuse Basic credential": basic(lf.public_key, lf.secret_key),
        "CLEANLAB_TLM_API_KEY": tlm.api_key,
    }


def seed_with_markup(lf: LangfuseSandbox) -> list[str]:
    """Four traces an hour apart whose names and questions carry markup."""
    question = "Question {i}? <script>x</script> | *y*"
    return seed(lf, 4, step=timedelta(hours=1), name="<b>q{i}</b>", question=question)


def run_flow(**overrides: Any) -> tuple[object, UUID]:
    """(result or exception, flow run id): the flow as a caller runs it."""
    state = evaluate_traces(return_state=True, **with_options(W | overrides))
    result = state.result(raise_on_failure=False)
    assert state.state_details.flow_run_id is not None
    return result, state.state_details.flow_run_id


async def _prefect_records(flow_run_id: UUID) -> dict[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )

    out: dict[str, str] = {}
    async with get_client() as client:
        flow_run = await client.read_flow_run(flow_run_id)
        out["Prefect flow run parameters"] = json.dumps(flow_run.parameters, default=str)
        out["Prefect flow run"] = flow_run.model_dump_json()
        # the task runs as the server stores them: their events (the test server records no
        # task runs from them; tests/conftest.py prefect_harness)
        out["Prefect task-run events"] = await _task_run_events(client, flow_run_id)
        logs = await client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )
        assert any("Finished in state" in log.message for log in logs), "run logs never arrived"
        out["Prefect run logs"] = "\n".join(log.message for log in logs)
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
        out["Prefect artifacts"] = json.dumps(
            [a.model_dump(mode="json") for a in artifacts], default=str
        )
    return out


def prefect_database() -> bytes:
    """The Prefect test server's database files, as bytes (events, logs, runs, artifacts)."""
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    url = PREFECT_SERVER_DATABASE_CONNECTION_URL.value()
    path = Path(url.split(":///", 1)[1])
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*") if p.is_file())


async def _stored_events(client: Any, event: dict[str, Any], **where: Any) -> str:
    """The last 30 minutes' stored events matching ``event`` (and ``where``), newest first, as
    the server returns them: at most 50, the server's most (a run here has about 25)."""
    since = (datetime.now(UTC) - timedelta(minutes=30)).isoformat()
    body = {
        "filter": {"event": event, "occurred": {"since": since}, **where},
        "order": "DESC",
        "limit": 50,
    }
    resp = await client._client.post("/events/filter", json=body)
    resp.raise_for_status()
    return str(resp.text)


async def _task_run_events(client: Any, flow_run_id: UUID) -> str:
    """The stored events of the flow run's task runs."""
    related = {"id": [f"prefect.flow-run.{flow_run_id}"]}
    return await _stored_events(client, {"prefix": ["prefect.task-run."]}, related=related)


def wait_for_task_run_events(flow_run_id: UUID, showing: str) -> None:
    """Until the run's stored task-run events show ``showing`` (they are stored in batches)."""
    from prefect import get_client
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all(timeout=10)

    async def read() -> str:
        async with get_client() as client:
            return await _task_run_events(client, flow_run_id)

    deadline = time.monotonic() + 30  # a guard against a stuck test only
    while showing not in asyncio.run(read()):
        assert time.monotonic() < deadline, f"no task-run event shows {showing!r}"
        time.sleep(0.5)


async def _events_of(flow_run_ids: list[str]) -> set[str]:
    """The flow runs (of ``flow_run_ids``) whose run event the server has stored."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        text = await _stored_events(client, {"name": [EVENT_EVALUATED]})
    return {i for i in flow_run_ids if i in text}


def exception_texts(err: BaseException) -> dict[str, str]:
    return {
        "str(exception)": str(err),
        "repr(exception)": repr(err),
        "formatted traceback (with causes)": "".join(traceback.format_exception(err)),
    }


def gather(
    result: object,
    flow_run_id: UUID,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    console: io.StringIO,
    secrets_: dict[str, str],
) -> dict[str, str]:
    """Every place a secret could have reached, as text; the run is kept for the database
    search at the end of the module."""
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)  # the run's logs reach the API in batches: send them
    places = asyncio.run(_prefect_records(flow_run_id))
    captured = capfd.readouterr()
    places["log records (all loggers, DEBUG)"] = "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records
    )
    places["stdout"], places["stderr"] = captured.out, captured.err
    places["console log output"] = console.getvalue()
    report = result if isinstance(result, EvalReport) else getattr(result, "report", None)
    if report is not None:
        places["report"] = report.model_dump_json()
    if isinstance(result, BaseException):
        places |= exception_texts(result)
    RUNS.append((str(flow_run_id), secrets_))
    return places


def assert_nowhere(places: dict[str, str], secrets_: dict[str, str]) -> None:
    for where, text in places.items():
        for name, value in secrets_.items():
            at = text.find(value)
            assert at < 0, f"{name} found in {where}: …{text[max(at - 80, 0) : at + 20]}…"


def test_successful_run_shows_no_secret(
    langfuse_sandbox: LangfuseSandbox,
    tlm: TLMSandbox,
    known: dict[str, str],
    debug_logs: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    console: io.StringIO,
) -> None:
    seed_with_markup(langfuse_sandbox)
    tlm.rich_explanations = True
    result, flow_run_id = run_flow()
    assert isinstance(result, EvalReport) and result.uploaded == 4, result
    wait_for_task_run_events(flow_run_id, "score chunk 1")
    places = gather(result, flow_run_id, debug_logs, capfd, console, known)
    # the search is not vacuous: each place holds what the run wrote there
    assert "Finished in state Completed" in places["Prefect run logs"]
    assert "chunk 1: 4 scored" in places["log records (all loggers, DEBUG)"]
    assert "Finished in state Completed" in places["console log output"]
    assert (
        "trust-lowest-" in places["Prefect artifacts"]
        and "Question 3?" in places["Prefect artifacts"]
    )
    assert "score chunk 1" in places["Prefect task-run events"]
    assert '"uploaded":4' in places["report"]
    assert_nowhere(places, known)


def test_refused_tlm_key_shows_no_secret(
    langfuse_sandbox: LangfuseSandbox,
    tlm: TLMSandbox,
    known: dict[str, str],
    debug_logs: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    console: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed_with_markup(langfuse_sandbox)
    wrong = f"tlm-wrong-{secrets.token_hex(16)}"
    monkeypatch.setenv("CLEANLAB_TLM_API_KEY", wrong)
    result, flow_run_id = run_flow()
    assert type(result).__name__ == "EvaluationFailed", result
    assert "CLEANLAB_TLM_API_KEY" in str(result)  # names the variable, not its value
    all_secrets = known | {"the wrong CLEANLAB_TLM_API_KEY": wrong}
    places = gather(result, flow_run_id, debug_logs, capfd, console, all_secrets)
    assert_nowhere(places, all_secrets)


def test_langfuse_401_shows_no_secret(
    langfuse_sandbox: LangfuseSandbox,
    tlm: TLMSandbox,
    known: dict[str, str],
    debug_logs: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    console: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lf = langfuse_sandbox
    seed_with_markup(lf)
    wrong = f"sk-lf-wrong-{secrets.token_hex(16)}"
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", wrong)
    result, flow_run_id = run_flow()
    assert isinstance(result, BaseException), f"a 401 must fail the run, got {result!r}"
    assert type(result).__name__ == "EvaluationFailed", f"no report: {result!r}"
    assert "401" in str(result)
    assert lf.faults.count(status=401) > 0 and lf.store.all_scores() == []
    all_secrets = known | {
        "the wrong LANGFUSE_SECRET_KEY": wrong,
        "the wrong Basic credential": basic(lf.public_key, wrong),
    }
    places = gather(result, flow_run_id, debug_logs, capfd, console, all_secrets)
    assert_nowhere(places, all_secrets)


def test_a_password_in_the_base_url_is_masked_everywhere(
    langfuse_sandbox: LangfuseSandbox,
    tlm: TLMSandbox,
    known: dict[str, str],
    debug_logs: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    console: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``http://user:password@host`` (a proxy's credentials): the run works, and its messages,
    logs, links and records show ``***@host``."""
    lf = langfuse_sandbox
    seed_with_markup(lf)
    password = f"proxy-pw-{secrets.token_hex(12)}"
    monkeypatch.setenv("LANGFUSE_BASE_URL", lf.url.replace("://", f"://proxy-user:{password}@"))
    result, flow_run_id = run_flow()
    all_secrets = known | {"the URL's password": password}
    places = gather(result, flow_run_id, debug_logs, capfd, console, all_secrets)
    assert "***@127.0.0.1" in places["log records (all loggers, DEBUG)"]  # the URL is shown
    assert_nowhere(places, all_secrets)


@pytest.mark.parametrize(
    "variable",
    ["LANGFUSE_BASE_URL", "TRUST_EVAL_PAGE_SIZE", "LANGFUSE_TIMEOUT"],
)
def test_config_error_does_not_echo_a_misplaced_secret(
    langfuse_sandbox: LangfuseSandbox,
    tlm: TLMSandbox,
    known: dict[str, str],
    debug_logs: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    console: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
) -> None:
    """A secret pasted into the wrong variable: the error names the variable, not the value."""
    monkeypatch.setenv(variable, known["LANGFUSE_SECRET_KEY"])
    result, flow_run_id = run_flow()
    assert isinstance(result, ConfigError), result
    assert variable in str(result)
    places = gather(result, flow_run_id, debug_logs, capfd, console, known)
    assert_nowhere(places, known)
    assert langfuse_sandbox.faults.requests == [] and tlm.faults.requests == []


def test_prefect_database_holds_no_secret() -> None:
    """The catch-all, after the runs above: the server's whole database, events included."""
    assert RUNS, "run the module's other tests first: this one searches what they stored"
    ids = [run_id for run_id, _ in RUNS]
    deadline = time.monotonic() + 20
    stored: set[str] = set()
    while time.monotonic() < deadline:  # events are persisted in batches
        stored = asyncio.run(_events_of(ids))
        if len(stored) >= 2:  # the two runs that reached Langfuse's data emit their event
            break
        time.sleep(0.5)
    assert len(stored) >= 2, f"the runs' events never reached the database: {stored}"
    data = prefect_database().decode("latin-1")
    for run_id, secrets_ in RUNS:
        assert secrets_, f"run {run_id} recorded no secrets to look for"
        assert_nowhere({f"the Prefect database (after run {run_id})": data}, secrets_)
