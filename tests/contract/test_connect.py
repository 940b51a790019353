"""The first Langfuse calls of a run (tasks/langfuse_api.py: connect), on a fake clock: how long
an unreachable host is waited for, and what a URL that is not a Langfuse API is told."""

from __future__ import annotations

import logging

import pytest
from pydantic import SecretStr

from sandbox.langfuse import LangfuseSandbox
from sandbox.runner import free_port
from tasks.config import LangfuseSettings, Tuning
from tasks.errors import ConfigError
from tasks.langfuse_api import Calls, connect
from tests.support.clock import FakeClock

LOG = logging.getLogger("tests.contract.connect")


def settings(url: str, lf: LangfuseSandbox | None = None) -> LangfuseSettings:
    pk, sk = (lf.public_key, lf.secret_key) if lf else ("pk", "sk")
    return LangfuseSettings.model_validate(
        {"LANGFUSE_PUBLIC_KEY": pk, "LANGFUSE_SECRET_KEY": sk, "LANGFUSE_BASE_URL": url}
    )


def test_an_unreachable_host_is_tried_for_the_connect_budget_then_named() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cfg, tuning, clock = settings(url), Tuning(connect_budget_s=10, retries=5), FakeClock()
    calls = Calls(cfg, tuning, LOG, clock=clock)
    with pytest.raises(ConfigError, match=f"cannot reach Langfuse at {url}.*LANGFUSE_BASE_URL"):
        connect(cfg, tuning, calls)
    # one try a second until the budget is nearly spent, never the retry policy's backoff
    assert clock.sleeps == [1.0] * 9 and calls.requests == 10


def test_a_refused_key_is_named_and_the_projects_id_read(langfuse_sandbox: LangfuseSandbox) -> None:
    lf = langfuse_sandbox
    cfg, tuning = settings(lf.url, lf), Tuning()
    server = connect(cfg, tuning, Calls(cfg, tuning, LOG, clock=FakeClock()))
    assert server.project_id == lf.store.project_id and server.batch_scores
    wrong = cfg.model_copy(update={"secret_key": SecretStr("sk-wrong")})
    with pytest.raises(ConfigError, match=r"refused the API keys.*LANGFUSE_SECRET_KEY"):
        connect(wrong, tuning, Calls(wrong, tuning, LOG, clock=FakeClock()))


@pytest.mark.parametrize("suffix", ["/api/public", "/api/public/", "/nope"])
def test_a_url_that_is_not_a_langfuse_api_is_named_with_the_fix(
    langfuse_sandbox: LangfuseSandbox, suffix: str
) -> None:
    lf = langfuse_sandbox
    cfg, tuning = settings(lf.url + suffix, lf), Tuning()
    with pytest.raises(ConfigError) as err:
        connect(cfg, tuning, Calls(cfg, tuning, LOG, clock=FakeClock()))
    message = str(err.value)
    assert "does not point at a Langfuse API" in message and "404" in message
    if suffix.startswith("/api/public"):
        assert f"without the trailing /api/public: {lf.url}" in message
