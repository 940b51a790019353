"""Langfuse errors a user can act on: refused keys and an unreachable host fail fast, in one line
that names what to fix, and the failed run's state message is that line."""

from __future__ import annotations

import pytest

from flows.evaluate_traces import EvaluationFailed, evaluate_traces
from flows.options import EvalOptions
from flows.window_lock import window_lock
from sandbox.langfuse import LangfuseSandbox
from sandbox.runner import free_port
from sandbox.tlm import TLMSandbox
from tests.support.seeding import TAG, WINDOW, seed, stream_of

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.mark.parametrize("dry_run", [False, True], ids=["score-configs-first", "dry-run"])
def test_a_refused_key_is_one_line_naming_host_and_variables_and_is_not_retried(
    langfuse_sandbox: LangfuseSandbox,
    tlm: TLMSandbox,
    monkeypatch: pytest.MonkeyPatch,
    dry_run: bool,
) -> None:
    lf = langfuse_sandbox
    seed(lf, 3)
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", "sk-lf-wrong")
    monkeypatch.setenv("TRUST_EVAL_RETRIES", "5")  # would retry a transient error 5 times

    state = evaluate_traces(
        tags=[TAG], options=EvalOptions(dry_run=dry_run), return_state=True, **WINDOW
    )

    assert state.is_failed()
    message = state.message or ""
    host = lf.url.removeprefix("http://")
    for needle in (f"Langfuse at {host}", "HTTP 401", "LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY"):
        assert needle in message, message
    assert "\n" not in message
    with pytest.raises(EvaluationFailed) as failed:
        state.result()
    assert str(failed.value) == message
    refused = [r.path for r in lf.faults.requests if r.status == 401]
    assert len(refused) == 1, refused  # refused once, never retried
    assert tlm.prompts == [] and lf.store.all_scores() == []


def test_an_unreachable_host_fails_within_the_connect_budget_naming_the_url(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("LANGFUSE_BASE_URL", url)
    monkeypatch.setenv("TRUST_EVAL_CONNECT_BUDGET_S", "3")
    monkeypatch.setenv("TRUST_EVAL_RETRIES", "5")

    state = evaluate_traces(tags=[TAG], return_state=True, **WINDOW)
    message = state.message or ""
    assert state.is_failed() and "\n" not in message
    assert f"cannot reach Langfuse at {url}" in message and "LANGFUSE_BASE_URL" in message
    assert tlm.prompts == []  # (how long it waits: tests/contract/test_connect.py)


def test_a_run_that_times_out_on_the_lock_fails_in_one_line_naming_the_holder(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a deployment run shows on its page: Failed, one line, who holds the window."""
    seed(langfuse_sandbox, 2)
    monkeypatch.setenv("TRUST_EVAL_LOCK_TIMEOUT_S", "1")
    start, end = WINDOW["window_start"], WINDOW["window_end"]
    with window_lock(stream_of(langfuse_sandbox), start, end, lease_s=60, timeout_s=1):
        state = evaluate_traces(tags=[TAG], return_state=True, **WINDOW)
    message = state.message or ""
    assert state.is_failed() and "\n" not in message
    assert (
        "is still being evaluated by flow run" in message and "TRUST_EVAL_LOCK_TIMEOUT_S" in message
    )
    assert tlm.prompts == [] and langfuse_sandbox.store.all_scores() == []
