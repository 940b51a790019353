"""explain=low_trust through the real cleanlab-tlm client and TLMEngine, against the TLM
sandbox over HTTP: scores at base or low with no logged explanation, one get_explanation call
per score below the threshold, and our refusal agreeing with the client's own validation."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import get_args

import pytest
from pydantic import SecretStr

from flows.options import options_from
from sandbox.faults import Fault
from sandbox.tlm import PRESETS, TLMSandbox, marker, synthetic_explanation
from tasks.config import QualityPreset, TLMSettings
from tasks.errors import ConfigError
from tasks.explain import explanation_failed, not_explained
from tasks.models import Pair
from tasks.score import TLMEngine
from tests.support.tlm_client import fresh_session_sandbox

pytestmark = pytest.mark.timeout(120)
T0 = datetime(2025, 6, 1, tzinfo=UTC)


@pytest.fixture
def tlm_sandbox() -> Iterator[TLMSandbox]:
    yield from fresh_session_sandbox()


def low(yes: bool) -> str:
    return marker("trustworthiness", 0.1 if yes else 0.9)


def forced(n: int, low_every: int) -> list[Pair]:
    """``n`` pairs; every ``low_every``-th is forced to trust 0.1, the others to 0.9."""
    return [
        Pair(f"t{i}", T0, "t", None, f"Question {i}? {low(i % low_every == 0)}", f"A{i}.", "chat")
        for i in range(n)
    ]


@pytest.mark.parametrize("preset", ["base", "low"])
def test_low_trust_scores_without_a_logged_explanation_and_explains_only_the_tail(
    tlm_sandbox: TLMSandbox, preset: str
) -> None:
    cfg = TLMSettings(api_key=SecretStr(tlm_sandbox.api_key))
    chunk = forced(25, low_every=5)  # 5 below 0.5
    with TLMEngine(cfg, quality_preset=preset, timeout_s=10, explain_below=0.5) as engine:
        result = engine.submit(chunk).result(timeout=60)
    assert len(result.scored) == 25 and result.failed == []
    score_calls = tlm_sandbox.records("tlm.score")
    assert len(score_calls) == 25
    assert {(r.preset, r.log) for r in score_calls} == {(preset, ())}  # none asks to log one
    explained = tlm_sandbox.explain_calls
    low = [s for s in result.scored if s.score < 0.5]
    assert len(low) == 5 == len(explained) == result.explained.calls
    assert result.explained.chars == sum(len(s.pair.prompt) + len(s.pair.response) for s in low)
    for s in result.scored:
        if s.score < 0.5:  # the explanation the endpoint gave for exactly this pair
            assert s.explanation == synthetic_explanation(s.pair.prompt, s.pair.response, 0.1)
        else:
            assert s.explanation == not_explained(0.5)
    # what the client sent: the prompt, the response with its score, its options (no preset)
    sent = {c["prompt"]: c for c in explained}
    for s in low:
        body = sent[s.pair.prompt]
        assert body["response"] == {"response": s.pair.response, "trustworthiness_score": 0.1}
        assert "quality" not in body and "log" not in body["options"]


def test_a_failed_explanation_keeps_the_paid_score(tlm_sandbox: TLMSandbox) -> None:
    tlm_sandbox.faults.set("tlm.explain", Fault(status=422))  # not retried by the client
    cfg = TLMSettings(api_key=SecretStr(tlm_sandbox.api_key))
    with TLMEngine(cfg, quality_preset="base", timeout_s=10, explain_below=0.5) as engine:
        result = engine.submit(forced(4, low_every=2)).result(timeout=60)
    assert len(result.scored) == 4 and result.failed == []
    assert (result.explained.calls, result.explained.failed) == (2, 2)
    failed = [s.explanation for s in result.scored if s.score < 0.5]
    assert all(e and e.startswith(explanation_failed("")[:30]) for e in failed)


def test_explanations_are_served_like_one_medium_call_whatever_the_preset(
    tlm_sandbox: TLMSandbox,
) -> None:
    tlm_sandbox.set_latency(0.05)
    cfg = TLMSettings(api_key=SecretStr(tlm_sandbox.api_key))
    for preset in ("base", "low"):
        with TLMEngine(cfg, quality_preset=preset, timeout_s=10, explain_below=0.5) as engine:
            engine.submit(forced(1, low_every=1)).result(timeout=60)
    scored = [(r.preset, r.delay_s) for r in tlm_sandbox.records("tlm.score")]
    assert scored == [("base", 0.05 * PRESETS["base"].latency_x), ("low", 0.05 * 0.75)]
    explained = tlm_sandbox.records("tlm.explain")
    assert [r.delay_s for r in explained] == [0.05, 0.05]
    chars = explained[0].chars
    assert [r.tokens for r in explained] == [-(-chars // 4) * 4] * 2


@pytest.mark.parametrize("preset", list(get_args(QualityPreset)))
@pytest.mark.parametrize("explain", ["all", "low_trust"])
def test_our_refusal_is_the_clients(tlm_sandbox: TLMSandbox, preset: str, explain: str) -> None:
    """A preset/explain pair the options refuse is one the real client refuses to build."""
    from cleanlab_tlm import TLM

    logged = {"log": ["explanation"]} if explain == "all" else {}
    try:
        TLM(quality_preset=preset, api_key=tlm_sandbox.api_key, options=logged)  # type: ignore[arg-type]
        client_refuses = False
    except ValueError:
        client_refuses = True
    try:
        options_from({"quality_preset": preset, "explain": explain})
        we_refuse = False
    except ConfigError as err:
        assert "\n" not in str(err)
        we_refuse = True
    assert we_refuse == client_refuses
    assert client_refuses == (explain == "all" and preset in ("low", "base"))
