"""The real cleanlab-tlm TLM client against the TLM sandbox: custom evaluation criteria, markers,
quality presets (latency, tokens, the logged-explanation rule) and the explanation endpoint.

No test bounds an elapsed time from above.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandbox.faults import Fault
from sandbox.tlm import (
    EXPLANATION_REFUSED,
    PRESETS,
    SCORE_PATH,
    TLMSandbox,
    criteria_score,
    estimate_tokens,
    marker,
    session_tlm_sandbox,
    synthetic_explanation,
    synthetic_score,
)
from tests.support.tlm_client import error_slot, fresh_session_sandbox

session_tlm_sandbox()  # must run before cleanlab_tlm is imported

from cleanlab_tlm import TLM  # noqa: E402
from cleanlab_tlm.errors import TlmBadRequestError  # noqa: E402

TIMEOUT = 10.0
CRITERIA = [
    {"name": "concise", "criteria": "Is the response short and to the point?"},
    {"name": "polite", "criteria": "Is the response polite?"},
]


@pytest.fixture
def tlm_sandbox() -> Iterator[TLMSandbox]:
    yield from fresh_session_sandbox()


def make_tlm(sandbox: TLMSandbox, **kwargs: Any) -> TLM:
    args: dict[str, Any] = {"timeout": TIMEOUT, "api_key": sandbox.api_key}
    args.update(kwargs)
    return TLM(**args)


def score_list(tlm: TLM, prompts: list[str], responses: list[str]) -> list[dict[str, Any]]:
    result = tlm.get_trustworthiness_score(prompts, responses)
    assert isinstance(result, list)
    return [dict(r) for r in result]


def criteria_log(prompt: str, response: str, **forced: float | None) -> list[dict[str, Any]]:
    return [
        {
            "name": c["name"],
            "score": forced.get(c["name"], criteria_score(c["name"], prompt, response)),
        }
        for c in CRITERIA
    ]


# --------------------------------------------------------------------------- custom criteria


def test_custom_eval_criteria_are_sent_and_scored_by_name(tlm_sandbox: TLMSandbox) -> None:
    tlm = make_tlm(tlm_sandbox, options={"custom_eval_criteria": CRITERIA, "log": ["explanation"]})
    result = tlm.get_trustworthiness_score("Q?", "A.")
    score = synthetic_score("Q?", "A.")
    assert result == {
        "trustworthiness_score": score,
        "log": {
            "explanation": synthetic_explanation("Q?", "A.", score),
            "custom_eval_criteria": criteria_log("Q?", "A."),
        },
    }
    assert tlm_sandbox.calls == [
        {
            "prompt": "Q?",
            "response": {"response": "A."},
            "quality": "medium",
            "task": "default",
            "options": {
                "model": "gpt-4.1-mini",
                "custom_eval_criteria": CRITERIA,
                "log": ["explanation"],
                "max_timeout": TIMEOUT,
            },
        }
    ]
    [record] = tlm_sandbox.records()
    assert (record.endpoint, record.criteria, record.log) == (
        "tlm.score",
        ("concise", "polite"),
        ("explanation",),
    )


def test_custom_criteria_without_log_option_still_get_a_log(tlm_sandbox: TLMSandbox) -> None:
    """custom_eval_criteria alone makes the client read ``log`` (internal/base.py): the answer
    carries it, with the criteria only."""
    tlm = make_tlm(tlm_sandbox, options={"custom_eval_criteria": CRITERIA})
    results = score_list(tlm, ["Q1?", "Q2?"], ["A.", "B."])
    assert results == [
        {
            "trustworthiness_score": synthetic_score(p, r),
            "log": {"custom_eval_criteria": criteria_log(p, r)},
        }
        for p, r in (("Q1?", "A."), ("Q2?", "B."))
    ]
    assert "log" not in tlm_sandbox.calls[0]["options"]


def test_disable_trustworthiness_with_criteria(tlm_sandbox: TLMSandbox) -> None:
    tlm = make_tlm(
        tlm_sandbox, options={"custom_eval_criteria": CRITERIA, "disable_trustworthiness": True}
    )
    assert tlm.get_trustworthiness_score("Q?", "A.") == {
        "trustworthiness_score": None,
        "log": {"custom_eval_criteria": criteria_log("Q?", "A.")},
    }


def test_markers_force_criteria_and_trustworthiness(tlm_sandbox: TLMSandbox) -> None:
    tlm = make_tlm(tlm_sandbox, options={"custom_eval_criteria": CRITERIA})
    prompt = f"Q? {marker('concise', 0.1)} {marker('trustworthiness', 0.2)}"
    response = f"A. {marker('polite', None)}"
    assert tlm.get_trustworthiness_score(prompt, response) == {
        "trustworthiness_score": 0.2,
        "log": {"custom_eval_criteria": criteria_log(prompt, response, concise=0.1, polite=None)},
    }
    # eval_error on a criterion: left out of the list (the client passes the list through)
    prompt = f"Q? {marker('eval_error', 'concise')}"
    result = tlm.get_trustworthiness_score(prompt, "A.")
    assert isinstance(result, dict)
    assert result["log"]["custom_eval_criteria"] == criteria_log(prompt, "A.")[1:]


def test_markers_on_the_trustworthiness_score(tlm_sandbox: TLMSandbox) -> None:
    prompts = [
        f"Q0? {marker('trustworthiness', None)}",
        f"Q1? {marker('trustworthiness', 'nan')}",
        f"Q2? {marker('trustworthiness', 1)}",
        f"Q3? {marker('deberta_success', False)}",
    ]
    results = score_list(make_tlm(tlm_sandbox), prompts, ["A."] * 4)
    assert results[0] == {"trustworthiness_score": None}
    assert math.isnan(results[1]["trustworthiness_score"])
    assert results[2] == {"trustworthiness_score": 1.0}
    # a partial success: the client shrinks its window and still returns the score
    assert results[3] == {"trustworthiness_score": synthetic_score(prompts[3], "A.")}
    assert tlm_sandbox.faults.count("tlm.score", status=200) == 4


def test_marker_errors_on_plain_tlm(tlm_sandbox: TLMSandbox) -> None:
    """eval_error=trustworthiness: no ``confidence_score``, a KeyError the client raises outside
    its retry loop (one request). status=422: an error result, not retried."""
    prompts = [
        f"Q0? {marker('eval_error', 'trustworthiness')}",
        f"Q1? {marker('status', 422)}",
    ]
    with pytest.warns(UserWarning, match="failed"):
        results = score_list(make_tlm(tlm_sandbox), prompts, ["A.", "A."])
    assert results == [
        {"trustworthiness_score": None, "log": error_slot("'confidence_score'", retryable=True)},
        {
            "trustworthiness_score": None,
            "log": error_slot(
                "Error executing query at index 1:\nTLM sandbox: status 422 by marker.",
                retryable=False,
            ),
        },
    ]
    assert [r.status for r in tlm_sandbox.records()] in ([200, 422], [422, 200])
    assert tlm_sandbox.faults.count("tlm.score") == 2  # neither was retried


# --------------------------------------------------------------------------- presets


def test_presets_are_recorded_with_their_token_estimate(tlm_sandbox: TLMSandbox) -> None:
    prompt, response = "What is the capital of France?", "Paris"
    for preset in PRESETS:
        make_tlm(tlm_sandbox, quality_preset=preset).get_trustworthiness_score(prompt, response)
    records = tlm_sandbox.records()
    assert [r.preset for r in records] == list(PRESETS)
    chars = len(prompt) + len(response)
    assert [r.chars for r in records] == [chars] * len(PRESETS)
    assert [r.tokens for r in records] == [
        math.ceil(chars / 4) * p.tokens_x for p in PRESETS.values()
    ]
    by_preset = tlm_sandbox.tokens_by_preset()
    assert by_preset == {p: estimate_tokens(chars, p) for p in PRESETS}
    assert by_preset["base"] < by_preset["low"] < by_preset["medium"]
    assert by_preset["medium"] < by_preset["high"] < by_preset["best"]
    # the criteria count too
    make_tlm(tlm_sandbox, options={"custom_eval_criteria": CRITERIA}).get_trustworthiness_score(
        prompt, response
    )
    extra = sum(len(c["name"]) + len(c["criteria"]) for c in CRITERIA)
    assert tlm_sandbox.records()[-1].chars == chars + extra


def test_latency_scales_with_the_preset(tlm_sandbox: TLMSandbox) -> None:
    tlm_sandbox.set_latency(0.2)
    for preset in ("base", "best"):
        make_tlm(tlm_sandbox, quality_preset=preset).get_trustworthiness_score("Q?", "A.")
    assert [(r.preset, r.delay_s) for r in tlm_sandbox.records()] == [("base", 0.1), ("best", 0.4)]
    spans = tlm_sandbox.spans()
    assert spans[0].end - spans[0].start >= 0.1 and spans[1].end - spans[1].start >= 0.4


def test_logged_explanation_at_low_or_base_is_refused(tlm_sandbox: TLMSandbox) -> None:
    """The client refuses it at construction (ValueError from validate_logging); a request that
    gets through anyway is a 422 with the same words, which the client does not retry."""
    for preset in ("low", "base"):
        with pytest.raises(ValueError, match="does not support logged explanations"):
            make_tlm(tlm_sandbox, quality_preset=preset, options={"log": ["explanation"]})
    make_tlm(tlm_sandbox, quality_preset="medium", options={"log": ["explanation"]})  # fine

    tlm = make_tlm(tlm_sandbox, quality_preset="low")
    tlm._options["log"] = ["explanation"]  # what validation would have refused
    tlm._return_log = True
    with pytest.raises(TlmBadRequestError) as raised:
        tlm.get_trustworthiness_score("Q?", "A.")
    assert (raised.value.message, raised.value.retryable) == (EXPLANATION_REFUSED, False)
    assert tlm_sandbox.faults.count("tlm.score", status=422) == 1
    assert [(r.preset, r.status) for r in tlm_sandbox.records()] == [("low", 422)]

    auth = {"Authorization": f"bearer {tlm_sandbox.api_key}"}
    body = {"prompt": "Q?", "response": {"response": "A."}, "options": {"log": ["explanation"]}}
    with httpx.Client(base_url=tlm_sandbox.url, timeout=60) as http:
        for quality, status in (("base", 422), ("low", 422), ("medium", 200), ("best", 200)):
            answer = http.post(SCORE_PATH, json={**body, "quality": quality}, headers=auth)
            assert answer.status_code == status, quality
            if status == 422:
                assert answer.json() == {"error": EXPLANATION_REFUSED}
        # what the client would accept at low: consistency samples make an explanation
        sampled = {**body, "quality": "low"}
        sampled["options"] = {"log": ["explanation"], "num_consistency_samples": 2}
        assert http.post(SCORE_PATH, json=sampled, headers=auth).status_code == 200
        unknown = http.post(SCORE_PATH, json={**body, "quality": "ultra"}, headers=auth)
        assert unknown.status_code == 422


# --------------------------------------------------------------------------- explanations


def test_get_explanation_sends_the_result_and_no_preset(tlm_sandbox: TLMSandbox) -> None:
    """TLM.get_explanation sends ``{"response": <response>, **tlm_result}``: the score, and the
    log when the result has one without an explanation (here: the custom criteria)."""
    tlm = make_tlm(
        tlm_sandbox, quality_preset="high", options={"custom_eval_criteria": CRITERIA[:1]}
    )
    result = tlm.get_trustworthiness_score("Q?", "A.")
    assert isinstance(result, dict)
    log = {
        "custom_eval_criteria": [
            {"name": "concise", "score": criteria_score("concise", "Q?", "A.")}
        ]
    }
    assert result["log"] == log
    explanation = tlm.get_explanation(prompt="Q?", response="A.", tlm_result=result)
    score = synthetic_score("Q?", "A.")
    assert explanation == synthetic_explanation("Q?", "A.", score)
    assert tlm_sandbox.explain_calls == [
        {
            "prompt": "Q?",
            "response": {"response": "A.", "trustworthiness_score": score, "log": log},
            "options": {
                "model": "gpt-4.1-mini",
                "custom_eval_criteria": CRITERIA[:1],
                "max_timeout": TIMEOUT,
            },
        }
    ]
    assert result["log"]["explanation"] == explanation  # the client adds it to the result
    [scored, explained] = tlm_sandbox.records()
    assert (scored.endpoint, scored.preset) == ("tlm.score", "high")
    assert (explained.endpoint, explained.preset, explained.status) == ("tlm.explain", None, 200)
    assert explained.tokens == math.ceil(len("Q?A.") / 4) * 4  # served like one medium call


def test_explanation_faults_reach_the_caller(tlm_sandbox: TLMSandbox) -> None:
    """get_explanation has no per-item capture: a 422 raises, once."""
    tlm_sandbox.faults.set("tlm.explain", Fault(status=422))
    tlm = make_tlm(tlm_sandbox)
    with pytest.raises(TlmBadRequestError):
        tlm.get_explanation(prompt="Q?", response="A.", tlm_result={"trustworthiness_score": 0.5})
    assert tlm_sandbox.faults.count("tlm.explain", status=422) == 1
    assert tlm_sandbox.explain_calls == []
