"""Bad configuration is refused before any call, with a message that names the fix.

Each case runs the real flow against live sandboxes: it raises ``ConfigError`` (or Prefect's
``ParameterTypeError``), its message names what to change, and neither sandbox saw a request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from prefect.exceptions import ParameterTypeError

from flows.evaluate_traces import evaluate_traces
from flows.options import EvalOptions
from sandbox.langfuse import LangfuseSandbox
from sandbox.tlm import TLMSandbox
from tasks.errors import ConfigError
from tests.support.seeding import with_options

pytestmark = pytest.mark.usefixtures("prefect_harness")

DAY = datetime(2026, 11, 28, tzinfo=UTC)
TAG = "TLM_eval_pipeline"
GOOD: dict[str, Any] = {"window_start": DAY, "window_end": DAY + timedelta(days=1), "tags": [TAG]}


@dataclass(frozen=True)
class Bad:
    id: str
    what: str  # one line for docs/RELIABILITY.md
    says: tuple[str, ...]  # every one of these must be in the message (case-insensitive)
    params: dict[str, Any] = field(default_factory=dict)  # overrides of GOOD
    env: dict[str, str] = field(default_factory=dict)
    unset: tuple[str, ...] = ()
    errors: tuple[type[Exception], ...] = (ConfigError,)


PARAM_TYPE = (ConfigError, ParameterTypeError)  # refused by us or by Prefect's own check

CASES = [
    # --- credentials
    Bad("no_langfuse_public_key", "LANGFUSE_PUBLIC_KEY unset", ("LANGFUSE_PUBLIC_KEY",),
        unset=("LANGFUSE_PUBLIC_KEY",)),
    Bad("no_langfuse_secret_key", "LANGFUSE_SECRET_KEY unset", ("LANGFUSE_SECRET_KEY",),
        unset=("LANGFUSE_SECRET_KEY",)),
    Bad("empty_langfuse_secret_key", "LANGFUSE_SECRET_KEY empty", ("LANGFUSE_SECRET_KEY",),
        env={"LANGFUSE_SECRET_KEY": ""}),
    Bad("no_tlm_key", "CLEANLAB_TLM_API_KEY unset", ("CLEANLAB_TLM_API_KEY",),
        unset=("CLEANLAB_TLM_API_KEY",)),
    Bad("langfuse_url_no_scheme", "LANGFUSE_BASE_URL without http(s)://",
        ("LANGFUSE_BASE_URL", "http"), env={"LANGFUSE_BASE_URL": "langfuse.example.com"}),
    Bad("langfuse_timeout_zero", "LANGFUSE_TIMEOUT=0", ("LANGFUSE_TIMEOUT",),
        env={"LANGFUSE_TIMEOUT": "0"}),
    # --- the window
    Bad("end_before_start", "window_end before window_start", ("window_end", "window_start"),
        {"window_end": DAY - timedelta(hours=1)}),
    Bad("only_start", "window_start without window_end", ("window_start", "window_end"),
        {"window_end": None}),
    Bad("naive_start", "window_start without a timezone", ("window_start", "timezone"),
        {"window_start": datetime(2026, 11, 28)}),
    Bad("window_in_future", "a window that ends in the future", ("window_end", "future"),
        {"window_start": datetime.now(UTC), "window_end": datetime.now(UTC) + timedelta(days=2)}),
    # --- TLM preset
    Bad("preset_low", "quality_preset=low with explain=all (cannot log)",
        ("quality_preset", "explain=low_trust"), {"quality_preset": "low"},
        errors=PARAM_TYPE),
    Bad("preset_base", "quality_preset=base with explain=all (cannot log)",
        ("quality_preset", "explain=low_trust"), {"quality_preset": "base"},
        errors=PARAM_TYPE),
    Bad("preset_unknown", "quality_preset=fastest (no such preset)",
        ("quality_preset", "'low' or 'base'"), {"quality_preset": "fastest"},
        errors=PARAM_TYPE),
    # --- tuning from the environment
    Bad("page_size_zero", "TRUST_EVAL_PAGE_SIZE=0", ("TRUST_EVAL_PAGE_SIZE", "1"),
        env={"TRUST_EVAL_PAGE_SIZE": "0"}),
    Bad("page_size_5000", "TRUST_EVAL_PAGE_SIZE=5000 (Langfuse caps pages at 1000)",
        ("TRUST_EVAL_PAGE_SIZE", "1000"), env={"TRUST_EVAL_PAGE_SIZE": "5000"}),
    Bad("page_size_text", "TRUST_EVAL_PAGE_SIZE=lots", ("TRUST_EVAL_PAGE_SIZE", "integer"),
        env={"TRUST_EVAL_PAGE_SIZE": "lots"}),
    Bad("tlm_timeout_zero", "TRUST_EVAL_TLM_TIMEOUT_S=0", ("TRUST_EVAL_TLM_TIMEOUT_S",),
        env={"TRUST_EVAL_TLM_TIMEOUT_S": "0"}),
    Bad("prompt_budget_tiny", "TRUST_EVAL_MAX_PROMPT_CHARS=10",
        ("TRUST_EVAL_MAX_PROMPT_CHARS",), env={"TRUST_EVAL_MAX_PROMPT_CHARS": "10"}),
    Bad("settle_lag_inf", "TRUST_EVAL_SETTLE_LAG_S=inf", ("TRUST_EVAL_SETTLE_LAG_S", "86400"),
        env={"TRUST_EVAL_SETTLE_LAG_S": "inf"}),
    Bad("settle_lag_huge", "TRUST_EVAL_SETTLE_LAG_S=1e12", ("TRUST_EVAL_SETTLE_LAG_S",),
        env={"TRUST_EVAL_SETTLE_LAG_S": "1e12"}),
    Bad("lock_lease_inf", "TRUST_EVAL_LOCK_LEASE_S=inf (its heartbeat thread would die)",
        ("TRUST_EVAL_LOCK_LEASE_S", "3600"), env={"TRUST_EVAL_LOCK_LEASE_S": "inf"}),
    Bad("lock_lease_tiny", "TRUST_EVAL_LOCK_LEASE_S=0.5", ("TRUST_EVAL_LOCK_LEASE_S", "1"),
        env={"TRUST_EVAL_LOCK_LEASE_S": "0.5"}),
    Bad("lock_timeout_text", "TRUST_EVAL_LOCK_TIMEOUT_S=soon", ("TRUST_EVAL_LOCK_TIMEOUT_S",),
        env={"TRUST_EVAL_LOCK_TIMEOUT_S": "soon"}),
    # --- flow parameters
    Bad("tags_empty", "tags=[]", ("tags",), {"tags": []}),
    Bad("tags_int", "tags=[1]", ("tags",), {"tags": [1]}, errors=PARAM_TYPE),
    Bad("tags_string", 'tags="x" (a string, not a list)', ("tags",), {"tags": "x"},
        errors=PARAM_TYPE),
    Bad("tags_blank", 'tags=[" "]', ("tags",), {"tags": [" "]}),
    Bad("sample_rate_zero", "sample_rate=0", ("sample_rate",), {"sample_rate": 0.0},
        errors=PARAM_TYPE),
    Bad("sample_rate_above_one", "sample_rate=1.5", ("sample_rate",), {"sample_rate": 1.5},
        errors=PARAM_TYPE),
    Bad("max_traces_zero", "max_traces=0", ("max_traces",), {"max_traces": 0},
        errors=PARAM_TYPE),
    Bad("threshold_above_one", "low_trust_threshold=2", ("low_trust_threshold",),
        {"low_trust_threshold": 2.0}, errors=PARAM_TYPE),
    Bad("score_name_blank", 'score_name=" "', ("score_name",), {"score_name": " "},
        errors=PARAM_TYPE),
]  # fmt: skip


@pytest.mark.parametrize("bad", [pytest.param(c, id=c.id) for c in CASES])
def test_refused_before_any_call(
    langfuse_sandbox: LangfuseSandbox,
    tlm: TLMSandbox,
    monkeypatch: pytest.MonkeyPatch,
    bad: Bad,
) -> None:
    langfuse_sandbox.store.add_trace(tags=(TAG,), start_time=DAY, input="Q?", output="A.")
    for name in bad.unset:
        monkeypatch.delenv(name, raising=False)
    for name, value in bad.env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(bad.errors) as info:
        evaluate_traces(**with_options(GOOD | bad.params))
    message = str(info.value)
    for needle in bad.says:
        assert re.search(re.escape(needle), message, re.I), f"{needle!r} not in: {message}"
    assert langfuse_sandbox.faults.requests == [], "Langfuse was called"
    assert tlm.faults.requests == [] and tlm.prompts == [], "TLM was called"


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"end_date": date(9999, 12, 31)}, "end_date 9999-12-31 is not over yet"),
        ({"days_on": "workers", "day_deployment": "no/such"}, "'no/such' is not a deployment"),
        ({"days_on": "workers", "day_deployment": "evaluate-traces-backfill/itself"},
         "runs the flow 'evaluate-traces-backfill', not 'evaluate-traces'"),
    ],
    ids=["end_date_far_ahead", "day_deployment_missing", "day_deployment_not_a_window"],
)  # fmt: skip
def test_a_backfill_is_refused_in_one_line_before_any_call(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, params: dict[str, Any], says: str
) -> None:
    from prefect import get_client

    from flows.backfill import backfill

    with get_client(sync_client=True) as client:  # a deployment of the backfill flow itself
        flow_id = client.create_flow_from_name("evaluate-traces-backfill")
        client.create_deployment(flow_id=flow_id, name="itself")
    kwargs: dict[str, Any] = {"start_date": DAY.date(), "end_date": DAY.date(), "tags": [TAG]}
    state = backfill(**(kwargs | params), return_state=True)
    message = state.message or ""
    assert state.is_failed() and says in message and "\n" not in message, message
    assert langfuse_sandbox.faults.requests == [] and tlm.faults.requests == []


def test_dry_run_needs_no_tlm_key_but_checks_the_rest(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dry run never calls TLM, so it runs without a TLM key; Langfuse keys it still needs."""
    monkeypatch.delenv("CLEANLAB_TLM_API_KEY")
    monkeypatch.delenv("LANGFUSE_SECRET_KEY")
    with pytest.raises(ConfigError, match="LANGFUSE_SECRET_KEY"):
        evaluate_traces(options=EvalOptions(dry_run=True), **with_options(GOOD))
    assert langfuse_sandbox.faults.requests == [] and tlm.faults.requests == []
