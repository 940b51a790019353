"""Flow layer: flows run on the Prefect test server against the sandboxes over HTTP.

cleanlab_tlm reads CLEANLAB_API_BASE_URL once, when first imported: the process-wide TLM sandbox
starts here, before any test module of this folder (or the code it tests) imports it.
"""

from collections.abc import Iterator

import pytest

from sandbox.tlm import TLMSandbox, session_tlm_sandbox

session_tlm_sandbox()

from sandbox.langfuse import LangfuseSandbox  # noqa: E402
from sandbox.openai_app import OpenAISandbox  # noqa: E402
from tests.support.fault_matrix import RETRIES  # noqa: E402  (imports cleanlab_tlm)


@pytest.fixture
def fault_tuning(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """The fault matrix's delays: RETRIES retries, 10 ms backoff, 2 s Langfuse timeout."""
    monkeypatch.setenv("TRUST_EVAL_RETRIES", str(RETRIES))
    monkeypatch.setenv("TRUST_EVAL_RETRY_BASE_DELAY_S", "0.01")
    monkeypatch.setenv("TRUST_EVAL_RETRY_MAX_DELAY_S", "2")
    monkeypatch.setenv("LANGFUSE_TIMEOUT", "2")
    yield
    langfuse_sandbox.faults.clear()  # release held requests before the sandbox stops


@pytest.fixture
def openai_sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAISandbox]:
    """The OpenAI sandbox, with OPENAI_* pointing at it (for the langfuse.openai integration)."""
    with OpenAISandbox() as oai:
        for name, value in oai.env().items():
            monkeypatch.setenv(name, value)
        yield oai
