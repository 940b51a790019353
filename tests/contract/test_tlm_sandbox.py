"""The real cleanlab-tlm client against the local TLM sandbox, over HTTP.

cleanlab-tlm reads CLEANLAB_API_BASE_URL once, at import: the session sandbox is configured
before the import below (the contract conftest did it already). The client's backoff has no
knob: one transient 5xx (1 s), one 429 (1 s) and one exhausted 5xx (7 s) wait it out.

No test bounds an elapsed time from above: "no retry" is exactly one request recorded, a hang
bounded by the client's timeout is the timeout error coming back while the sandbox still holds
the request, concurrency is requests held at once. Lower bounds (a backoff honoured) stay.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandbox.faults import Fault
from sandbox.openai_app import TRIVIA
from sandbox.tlm import (
    EXPLAIN_PATH,
    RICH_SUFFIX,
    SCORE_PATH,
    Latency,
    Span,
    TLMSandbox,
    in_flight_series,
    session_tlm_sandbox,
    synthetic_explanation,
    synthetic_score,
)
from sandbox.tlm.app import AUTH_DESCRIPTION
from tests.support.tlm_client import Background, error_slot, fresh_session_sandbox, wait_for

_SANDBOX = session_tlm_sandbox()  # must run before cleanlab_tlm is imported

import cleanlab_tlm  # noqa: E402
import cleanlab_tlm.internal.api.api as tlm_api  # noqa: E402
from cleanlab_tlm import TLM  # noqa: E402
from cleanlab_tlm.errors import (  # noqa: E402
    APITimeoutError,
    AuthError,
    TlmBadRequestError,
)
from cleanlab_tlm.tlm import TLMScore  # noqa: E402

TIMEOUT = 10.0
HELD_TIMEOUT = 120.0  # for a call the sandbox holds until the test releases it
EXPECTED_OPTIONS = {"model": "gpt-4.1-mini", "log": ["explanation"], "max_timeout": TIMEOUT}

PROMPTS = list(TRIVIA)
RESPONSES = [TRIVIA[p] for p in PROMPTS]


@pytest.fixture
def tlm_sandbox() -> Iterator[TLMSandbox]:
    yield from fresh_session_sandbox()


def make_tlm(sandbox: TLMSandbox, **kwargs: Any) -> TLM:
    args: dict[str, Any] = {
        "quality_preset": "medium",
        "options": {"log": ["explanation"]},
        "timeout": TIMEOUT,
        "api_key": sandbox.api_key,
    }
    args.update(kwargs)
    return TLM(**args)


def score_one(tlm: TLM, prompt: str, response: str) -> TLMScore:
    result = tlm.get_trustworthiness_score(prompt, response)
    assert not isinstance(result, list)  # one pair, one score
    return result


def score_list(tlm: TLM, prompts: list[str], responses: list[str]) -> list[dict[str, Any]]:
    result = tlm.get_trustworthiness_score(prompts, responses)
    assert isinstance(result, list)
    return [dict(r) for r in result]


# --------------------------------------------------------------------------- base URL / wiring


def test_client_was_imported_against_the_session_sandbox(tlm_sandbox: TLMSandbox) -> None:
    assert tlm_sandbox is _SANDBOX
    assert os.environ["CLEANLAB_API_BASE_URL"] == tlm_sandbox.base_url
    assert tlm_sandbox.base_url == tlm_sandbox.url + "/api"
    # the module globals the client builds its URLs from, frozen at import time
    assert tlm_api.base_url == tlm_sandbox.base_url
    assert tlm_api.tlm_base_url == tlm_sandbox.base_url + "/v0/trustworthy_llm"
    assert tlm_api.tlm_explanation_base_url == tlm_sandbox.base_url + "/v1/tlm_explanation"
    assert tlm_sandbox.env() == {
        "CLEANLAB_TLM_API_KEY": tlm_sandbox.api_key,
        "CLEANLAB_API_BASE_URL": tlm_sandbox.base_url,
    }
    assert cleanlab_tlm.TLM is TLM


# --------------------------------------------------------------------------- happy paths


def test_list_call_scores_each_item_with_explanations(tlm_sandbox: TLMSandbox) -> None:
    results = score_list(make_tlm(tlm_sandbox), PROMPTS, RESPONSES)

    assert len(results) == len(PROMPTS)
    for prompt, response, result in zip(PROMPTS, RESPONSES, results, strict=True):
        assert set(result) == {"trustworthiness_score", "log"}
        assert result["trustworthiness_score"] == synthetic_score(prompt, response)
        assert result["log"] == {"explanation": synthetic_explanation(prompt, response)}
        assert 200 <= len(result["log"]["explanation"]) <= 600
    by_prompt = {p: r["trustworthiness_score"] for p, r in zip(PROMPTS, results, strict=True)}
    assert by_prompt["What is the capital of France?"] > 0.95
    assert by_prompt["What is the 3rd month of the year in alphabetical order?"] < 0.2
    assert by_prompt["How many seconds are in 100 years?"] < 0.5
    assert by_prompt["When was the Declaration of Independence signed?"] < 0.6

    # one request per item, each with the exact wire shape (arrival order may vary)
    calls = tlm_sandbox.calls
    assert len(calls) == len(PROMPTS)
    assert sorted(calls, key=lambda c: c["prompt"]) == sorted(
        (
            {
                "prompt": p,
                "response": {"response": r},
                "quality": "medium",
                "task": "default",
                "options": EXPECTED_OPTIONS,
            }
            for p, r in zip(PROMPTS, RESPONSES, strict=True)
        ),
        key=lambda c: str(c["prompt"]),
    )
    assert sorted(tlm_sandbox.prompts) == sorted(PROMPTS)
    for headers in tlm_sandbox.headers:
        assert headers["authorization"] == f"bearer {tlm_sandbox.api_key}"
        assert headers["content-type"] == "application/json"
    assert tlm_sandbox.faults.count("tlm.score", status=200) == len(PROMPTS)


def test_single_pair_returns_one_result(tlm_sandbox: TLMSandbox) -> None:
    prompt, response = "What is the capital of France?", "Paris"
    result = make_tlm(tlm_sandbox).get_trustworthiness_score(prompt, response)
    assert result == {
        "trustworthiness_score": 0.985,
        "log": {"explanation": synthetic_explanation(prompt, response)},
    }
    assert tlm_sandbox.prompts == [prompt]


def test_unknown_pairs_get_stable_hash_scores(tlm_sandbox: TLMSandbox) -> None:
    prompts = ["Name a prime number.", "Name a prime number."]
    responses = ["7", "8"]
    tlm = make_tlm(tlm_sandbox)
    first = score_list(tlm, prompts, responses)
    second = score_list(tlm, prompts, responses)
    assert first == second
    scores = [r["trustworthiness_score"] for r in first]
    assert scores == [synthetic_score(p, r) for p, r in zip(prompts, responses, strict=True)]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores[0] != scores[1]
    assert "synthetic" in first[0]["log"]["explanation"].lower()


def test_without_log_option_no_log_is_sent_or_returned(tlm_sandbox: TLMSandbox) -> None:
    tlm = TLM(quality_preset="medium", timeout=TIMEOUT, api_key=tlm_sandbox.api_key)
    result = tlm.get_trustworthiness_score(["What is the capital of France?"], ["Paris"])
    assert result == [{"trustworthiness_score": 0.985}]
    assert tlm_sandbox.calls[0]["options"] == {"model": "gpt-4.1-mini", "max_timeout": TIMEOUT}


def test_rich_explanations_are_opt_in(tlm_sandbox: TLMSandbox) -> None:
    tlm_sandbox.rich_explanations = True
    result = score_list(make_tlm(tlm_sandbox), ["Q?"], ["A."])
    explanation = result[0]["log"]["explanation"]
    assert explanation.endswith(RICH_SUFFIX)
    assert "<" in explanation and "|" in explanation and "*" in explanation
    tlm_sandbox.reset()
    assert "<" not in synthetic_explanation("Q?", "A.")


def test_get_explanation_endpoint(tlm_sandbox: TLMSandbox) -> None:
    tlm = TLM(quality_preset="medium", timeout=TIMEOUT, api_key=tlm_sandbox.api_key)
    prompt = "When was the Declaration of Independence signed?"
    response = TRIVIA[prompt]
    score = tlm.get_trustworthiness_score(prompt, response)
    assert score == {"trustworthiness_score": 0.42}

    explanation = tlm.get_explanation(prompt=prompt, response=response, tlm_result=score)
    assert explanation == synthetic_explanation(prompt, response)
    assert "August 2, 1776" in explanation
    assert score["log"] == {"explanation": explanation}
    assert tlm_sandbox.explain_calls == [
        {
            "prompt": prompt,
            "response": {"response": response, "trustworthiness_score": 0.42},
            "options": {"model": "gpt-4.1-mini", "max_timeout": TIMEOUT},
        }
    ]
    # a result that already carries an explanation is answered locally, without a call
    again = tlm.get_explanation(prompt=prompt, response=response, tlm_result=score)
    assert again == explanation
    assert tlm_sandbox.faults.count("tlm.explain") == 1


def test_get_explanation_for_a_list(tlm_sandbox: TLMSandbox) -> None:
    tlm = TLM(quality_preset="medium", timeout=TIMEOUT, api_key=tlm_sandbox.api_key)
    prompts, responses = PROMPTS[:2], RESPONSES[:2]
    scores = tlm.get_trustworthiness_score(prompts, responses)
    explanations = tlm.get_explanation(prompt=prompts, response=responses, tlm_result=scores)
    assert explanations == [
        synthetic_explanation(p, r) for p, r in zip(prompts, responses, strict=True)
    ]
    assert tlm_sandbox.faults.count("tlm.explain", status=200) == 2


# --------------------------------------------------------------------------- auth


def test_bad_key_single_call_raises_at_once_without_retry(tlm_sandbox: TLMSandbox) -> None:
    tlm = make_tlm(tlm_sandbox, api_key="wrong-key")
    with pytest.raises(AuthError, match="Invalid API key"):
        tlm.get_trustworthiness_score("What is the capital of France?", "Paris")
    # no retry: the call returned after exactly one request (a retry would come before it)
    assert tlm_sandbox.faults.count("tlm.score") == 1
    assert tlm_sandbox.faults.count("tlm.score", status=401) == 1
    assert tlm_sandbox.calls == []


def test_bad_key_list_call_fills_error_slots_without_retry(tlm_sandbox: TLMSandbox) -> None:
    tlm = make_tlm(tlm_sandbox, api_key="wrong-key")
    with pytest.warns(UserWarning, match="Retrying will not help"):
        results = score_list(tlm, PROMPTS[:2], RESPONSES[:2])
    assert (
        results
        == [
            {
                "trustworthiness_score": None,
                "log": {
                    "error": {
                        "message": "Invalid API key. Check https://tlm.cleanlab.ai/ for your "
                        "current API key.",
                        "retryable": False,
                    }
                },
            }
        ]
        * 2
    )
    assert tlm_sandbox.faults.count("tlm.score", status=401) == 2


UNAUTHORIZED_GENERIC = (
    "TLM query failed. Please try again and contact support@cleanlab.ai if the problem persists."
)


def test_401_of_another_shape_is_a_bad_request_not_retried(tlm_sandbox: TLMSandbox) -> None:
    """``{"error": "Unauthorized"}``: not ``invalid_api_key``, so no AuthError; the 4xx handler
    raises TlmBadRequestError(error, retryable=False), which the client never retries."""
    tlm_sandbox.auth_shape = "error"
    tlm = make_tlm(tlm_sandbox, api_key="wrong-key")
    with pytest.raises(TlmBadRequestError) as raised:
        tlm.get_trustworthiness_score("Q?", "A.")
    assert (raised.value.message, raised.value.retryable) == ("Unauthorized", False)
    assert tlm_sandbox.faults.count("tlm.score", status=401) == 1

    with pytest.warns(UserWarning, match="Retrying will not help"):
        results = score_list(tlm, ["Q1?", "Q2?"], ["A.", "A."])
    assert results == [
        {
            "trustworthiness_score": None,
            "log": error_slot(
                f"Error executing query at index {i}:\nUnauthorized", retryable=False
            ),
        }
        for i in range(2)
    ]
    assert tlm_sandbox.faults.count("tlm.score", status=401) == 3


def test_401_json_without_code_or_error_is_marked_retryable_but_not_retried(
    tlm_sandbox: TLMSandbox,
) -> None:
    tlm_sandbox.auth_shape = "detail"
    with pytest.raises(TlmBadRequestError) as raised:
        make_tlm(tlm_sandbox, api_key="wrong-key").get_trustworthiness_score("Q?", "A.")
    assert (raised.value.message, raised.value.retryable) == (UNAUTHORIZED_GENERIC, True)
    assert tlm_sandbox.faults.count("tlm.score", status=401) == 1


def test_401_in_plain_text_is_retried_like_a_5xx(tlm_sandbox: TLMSandbox) -> None:
    """A text/plain 401: the client's ``resp.json()`` raises before any status is looked at, a
    generic error it retries 4 times (1 + 2 + 4 s), then an APIError."""
    tlm_sandbox.auth_shape = "text"
    with pytest.warns(UserWarning, match=r"prompt\[0\] failed\. Worth retrying"):
        results = score_list(make_tlm(tlm_sandbox, api_key="wrong-key"), ["Q?"], ["A."])
    error = results[0]["log"]["error"]
    assert results[0]["trustworthiness_score"] is None and error["retryable"] is True
    assert error["message"].startswith("(\"TLM failed after 4 attempts. 401, message='Attempt")
    assert "unexpected mimetype: text/plain" in error["message"]
    assert tlm_sandbox.faults.count("tlm.score", status=401) == 4


WIRE_401: dict[str, tuple[dict[str, Any], dict[str, Any]] | str] = {
    # shape: (body of the auth refusal, body of an injected 401), or the plain text of both
    "invalid_api_key": (
        {"code": "invalid_api_key", "description": AUTH_DESCRIPTION},
        {"code": "invalid_api_key", "description": "Invalid API key (injected fault)."},
    ),
    "error": ({"error": "Unauthorized"}, {"error": "Unauthorized"}),
    "detail": ({"detail": "Not authenticated"}, {"detail": "Not authenticated"}),
    "text": "Unauthorized",
}


@pytest.mark.parametrize("shape", list(WIRE_401))
def test_401_shapes_on_the_wire(tlm_sandbox: TLMSandbox, shape: str) -> None:
    """Every 401 takes the shape, whether auth refused the key or a fault injected it."""
    tlm_sandbox.auth_shape = shape
    body = {"prompt": "Q?", "response": {"response": "A."}, "options": {}}
    good = {"Authorization": f"bearer {tlm_sandbox.api_key}"}
    with httpx.Client(base_url=tlm_sandbox.url, timeout=60) as http:
        refused = http.post(SCORE_PATH, json=body, headers={"Authorization": "bearer nope"})
        tlm_sandbox.faults.set("tlm.score", Fault(status=401))
        injected = http.post(SCORE_PATH, json=body, headers=good)
    assert refused.status_code == injected.status_code == 401
    want = WIRE_401[shape]
    if isinstance(want, str):
        for answer in (refused, injected):
            assert answer.headers["content-type"].startswith("text/plain")
            assert answer.text == want
    else:
        assert refused.headers["content-type"] == injected.headers["content-type"]
        assert refused.headers["content-type"] == "application/json"
        assert (refused.json(), injected.json()) == want
    tlm_sandbox.reset()
    assert tlm_sandbox.auth_shape == "invalid_api_key"
    with pytest.raises(ValueError):
        tlm_sandbox.auth_shape = "html"


# --------------------------------------------------------------------------- retries


def test_429_with_retry_after_zero_is_retried_without_limit(tlm_sandbox: TLMSandbox) -> None:
    # 6 rate-limited answers: more than the 4 attempts allowed for other errors
    tlm_sandbox.faults.set("tlm.score", Fault(status=429, retry_after=0, first=6))
    result = score_one(make_tlm(tlm_sandbox), "What is the capital of France?", "Paris")
    assert result["trustworthiness_score"] == 0.985
    assert tlm_sandbox.faults.count("tlm.score", status=429) == 6
    assert tlm_sandbox.faults.count("tlm.score", status=200) == 1


def test_429_without_retry_after_is_retried_at_once_without_limit(
    tlm_sandbox: TLMSandbox,
) -> None:
    """No Retry-After: the client reads 0 (``int(headers.get("Retry-After", 0))``) and retries
    at once, outside its 4-attempt budget, until its own timeout ends the call. In a 3 s timeout
    a backoff of 1 + 2 + 4 s would allow 3 attempts: many more prove there is none."""
    tlm_sandbox.faults.set("tlm.score", Fault(status=429))  # retry_after=None: no header
    with httpx.Client(base_url=tlm_sandbox.url, timeout=60) as http:
        raw = http.post(SCORE_PATH, json={}, headers={"Authorization": "bearer x"})
    assert raw.status_code == 429 and "retry-after" not in raw.headers
    tlm_sandbox.reset()
    tlm_sandbox.faults.set("tlm.score", Fault(status=429))

    with pytest.raises(APITimeoutError):
        make_tlm(tlm_sandbox, timeout=3.0).get_trustworthiness_score("Q?", "A.")
    assert tlm_sandbox.faults.count("tlm.score", status=429) >= 8
    assert tlm_sandbox.faults.count("tlm.score", status=200) == 0 and tlm_sandbox.calls == []

    # transient: without a header, six refusals in a row still end in the score (reset takes
    # up the request the client abandoned on its timeout before it clears the log)
    tlm_sandbox.reset()
    tlm_sandbox.faults.set("tlm.score", Fault(status=429, first=6))
    assert score_one(make_tlm(tlm_sandbox), "Q?", "A.")["trustworthiness_score"] == (
        synthetic_score("Q?", "A.")
    )
    assert [r.status for r in tlm_sandbox.faults.requests] == [429] * 6 + [200]


def test_ceiling_429_without_retry_after_loops_until_the_client_timeout(
    tlm_sandbox: TLMSandbox,
) -> None:
    """The ceiling's 429 with ``retry_after=None``: one call held at the ceiling of 1, a second
    call is refused again and again, at once, until its timeout."""
    tlm_sandbox.set_ceiling(1, retry_after=None)
    tlm_sandbox.faults.set("tlm.score", Fault(hold_items={"HOLD"}))
    held = Background(
        lambda: score_one(make_tlm(tlm_sandbox, timeout=HELD_TIMEOUT), "HOLD Q?", "A.")
    )
    wait_for(lambda: tlm_sandbox.holding == 1, "the first call held")
    with pytest.raises(APITimeoutError):
        make_tlm(tlm_sandbox, timeout=3.0).get_trustworthiness_score("Q?", "A.")
    assert tlm_sandbox.faults.count("tlm.score", status=429) >= 8
    # the request the client abandoned on its timeout, if any, is refused before the release
    tlm_sandbox.barrier()
    wait_for(lambda: tlm_sandbox.in_flight == 1, "only the held call in flight")
    tlm_sandbox.faults.release_hangs()
    assert held.result()["trustworthiness_score"] == synthetic_score("HOLD Q?", "A.")
    assert tlm_sandbox.prompts == ["HOLD Q?"]


def test_429_retry_after_is_honoured(tlm_sandbox: TLMSandbox) -> None:
    tlm_sandbox.faults.set("tlm.score", Fault(status=429, retry_after=1, first=1))
    started = time.monotonic()
    result = score_one(make_tlm(tlm_sandbox), "Q?", "A.")
    elapsed = time.monotonic() - started
    assert result["trustworthiness_score"] == synthetic_score("Q?", "A.")
    assert elapsed >= 0.9  # the 1 s Retry-After was slept
    assert [r.status for r in tlm_sandbox.faults.requests] == [429, 200]


def test_transient_5xx_is_retried_after_one_second(tlm_sandbox: TLMSandbox) -> None:
    tlm_sandbox.faults.set("tlm.score", Fault(status=503, first=1))
    started = time.monotonic()
    result = score_one(make_tlm(tlm_sandbox), "Q?", "A.")
    elapsed = time.monotonic() - started
    assert result["trustworthiness_score"] == synthetic_score("Q?", "A.")
    assert elapsed >= 0.9  # the first backoff (1 s) was slept
    assert [r.status for r in tlm_sandbox.faults.requests] == [503, 200]


def test_persistent_5xx_on_one_item_gives_its_slot_an_error(tlm_sandbox: TLMSandbox) -> None:
    """fail_items (500): 4 attempts over 1 + 2 + 4 s, then the slot carries the error."""
    tlm_sandbox.faults.set("tlm.score", Fault(fail_items={"FAIL-ME"}))
    prompts = ["What is the capital of France?", "Please FAIL-ME now", "Q?"]
    responses = ["Paris", "whatever", "A."]
    started = time.monotonic()
    with pytest.warns(UserWarning, match=r"prompt\[1\] failed\. Worth retrying"):
        results = score_list(make_tlm(tlm_sandbox), prompts, responses)
    elapsed = time.monotonic() - started

    assert results[0]["trustworthiness_score"] == 0.985
    assert results[2]["trustworthiness_score"] == synthetic_score("Q?", "A.")
    failed = results[1]
    assert failed["trustworthiness_score"] is None
    assert failed["log"]["error"]["retryable"] is True
    # the client stringifies its exceptions' args tuples: that is the exact message
    inner = str(
        ("Error executing query at index 1:\nTLM sandbox: injected failure for this item.", 500)
    )
    assert failed["log"]["error"]["message"] == str((f"TLM failed after 4 attempts. {inner}", -1))
    assert tlm_sandbox.prompts.count("Please FAIL-ME now") == 4
    assert tlm_sandbox.faults.count("tlm.score", status=500) == 4
    assert elapsed >= 6.9  # backoffs of 1 + 2 + 4 s between the 4 attempts


def test_per_item_422_fails_fast_without_retry(tlm_sandbox: TLMSandbox) -> None:
    tlm_sandbox.fail_status = 422
    tlm_sandbox.faults.set("tlm.score", Fault(fail_items={"FAIL-ME"}))
    with pytest.warns(UserWarning, match="Retrying will not help"):
        results = score_list(make_tlm(tlm_sandbox), ["FAIL-ME", "Q?"], ["x", "A."])
    assert results[0] == {
        "trustworthiness_score": None,
        "log": {
            "error": {
                "message": "Error executing query at index 0:\n"
                "TLM sandbox: injected failure for this item.",
                "retryable": False,
            }
        },
    }
    assert results[1]["trustworthiness_score"] == synthetic_score("Q?", "A.")
    assert tlm_sandbox.faults.count("tlm.score", status=422) == 1  # the list returned: no retry
    assert tlm_sandbox.prompts.count("FAIL-ME") == 1


# --------------------------------------------------------------------------- timeouts, missing log


def test_hang_is_bounded_by_the_per_item_timeout(tlm_sandbox: TLMSandbox) -> None:
    """The hang is never released: the calls come back with the client's timeout error while
    the sandbox still holds every request and has answered none."""
    tlm_sandbox.faults.set("tlm.score", Fault(hang=True))
    tlm = make_tlm(tlm_sandbox, timeout=2.0)  # long enough for both requests to arrive
    with pytest.warns(UserWarning, match="Timeout while waiting for prediction"):
        results = score_list(tlm, ["Q1?", "Q2?"], ["A1.", "A2."])
    assert tlm_sandbox.in_flight == 2  # both still held: the timeout, not an answer, ended them
    assert tlm_sandbox.faults.requests == []  # nothing was answered
    assert (
        results
        == [
            {
                "trustworthiness_score": None,
                "log": {
                    "error": {
                        "message": "Timeout while waiting for prediction. Please retry or consider "
                        "increasing the timeout.",
                        "retryable": True,
                    }
                },
            }
        ]
        * 2
    )
    assert tlm_sandbox.calls == []  # held by the fault before reaching the handler

    with pytest.raises(APITimeoutError):
        tlm.get_trustworthiness_score("Q3?", "A3.")
    assert tlm_sandbox.in_flight == 3 and tlm_sandbox.faults.requests == []


def test_missing_log_is_an_item_error_without_retry(tlm_sandbox: TLMSandbox) -> None:
    """The client indexes ``response_json["log"]``: a missing log is a KeyError('log')."""
    tlm_sandbox.faults.set("tlm.score", Fault(missing_log=True))
    tlm = make_tlm(tlm_sandbox)
    with pytest.warns(UserWarning, match="prompt\\[0\\] failed. Worth retrying. Error: 'log'"):
        results = score_list(tlm, ["Q?"], ["A."])
    assert results == [
        {"trustworthiness_score": None, "log": {"error": {"message": "'log'", "retryable": True}}}
    ]
    with pytest.raises(KeyError, match="log"):
        tlm.get_trustworthiness_score("Q?", "A.")
    assert tlm_sandbox.faults.count("tlm.score", status=200) == 2  # no retries


def test_latency_fault_delays_each_call(tlm_sandbox: TLMSandbox) -> None:
    tlm_sandbox.faults.set("tlm.score", Fault(latency=0.3))
    started = time.monotonic()
    result = score_one(make_tlm(tlm_sandbox), "Q?", "A.")
    assert time.monotonic() - started >= 0.3
    assert result["trustworthiness_score"] == synthetic_score("Q?", "A.")


# --------------------------------------------------------------------------- raw wire


def test_wire_errors_are_json(tlm_sandbox: TLMSandbox) -> None:
    auth = {"Authorization": f"bearer {tlm_sandbox.api_key}"}
    body = {"prompt": "Q?", "response": {"response": "A."}, "options": {}}
    with httpx.Client(base_url=tlm_sandbox.url, timeout=5) as http:
        ok = http.post(SCORE_PATH, json=body, headers=auth)
        assert ok.status_code == 200
        assert ok.headers["content-type"] == "application/json"
        assert ok.json() == {"confidence_score": synthetic_score("Q?", "A.")}

        # the scheme is case-insensitive ("Bearer" as well as the client's "bearer")
        assert http.post(
            SCORE_PATH, json=body, headers={"Authorization": f"Bearer {tlm_sandbox.api_key}"}
        ).is_success

        for headers in ({"Authorization": "bearer nope"}, {}):
            denied = http.post(SCORE_PATH, json=body, headers=headers)
            assert denied.status_code == 401
            assert denied.headers["content-type"] == "application/json"
            assert denied.json()["code"] == "invalid_api_key"
            assert denied.json()["description"]

        bad = http.post(SCORE_PATH, json={"prompt": "Q?"}, headers=auth)
        assert bad.status_code == 422
        assert bad.headers["content-type"] == "application/json"
        assert "error" in bad.json()

        missing = http.post("/api/v0/nope", json=body, headers=auth)
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/json"
        assert "error" in missing.json()

        explained = http.post(
            EXPLAIN_PATH,
            json={"prompt": "Q?", "response": {"response": "A.", "trustworthiness_score": 0.5}},
            headers=auth,
        )
        assert explained.json() == {"explanation": synthetic_explanation("Q?", "A.", 0.5)}

        tlm_sandbox.faults.set("tlm.score", Fault(status=500))
        injected = http.post(SCORE_PATH, json=body, headers=auth)
        assert injected.status_code == 500
        assert injected.headers["content-type"] == "application/json"
        assert "error" in injected.json()
    tlm_sandbox.reset()
    assert tlm_sandbox.calls == [] and tlm_sandbox.faults.requests == []


# --------------------------------------------------------------------------- latency and ceiling


def test_lognormal_latency_has_the_asked_mean_and_p99() -> None:
    lat = Latency.lognormal(2.0, 15.0, seed=7)
    assert lat.quantile(0.99) == pytest.approx(15.0, rel=1e-6)
    draws = sorted(lat.for_item(f"Q{i}?", "A.") for i in range(20_000))
    assert sum(draws) / len(draws) == pytest.approx(2.0, rel=0.08)
    assert draws[int(0.99 * len(draws))] == pytest.approx(15.0, rel=0.15)
    assert draws == sorted(
        Latency.lognormal(2.0, 15.0, seed=7).for_item(f"Q{i}?", "A.") for i in range(20_000)
    )
    assert lat.for_item("Q1?", "A.") != Latency.lognormal(2.0, 15.0, seed=8).for_item("Q1?", "A.")
    assert Latency.fixed(0.05).for_item("Q?", "A.") == 0.05
    with pytest.raises(ValueError):
        Latency.lognormal(1.0, 30.0)  # p99 beyond what a log-normal with that mean allows


def test_in_flight_series_counts_overlaps() -> None:
    spans = [Span(0.0, 2.0, 200), Span(1.0, 3.0, 200), Span(1.5, 1.5, 429), Span(2.0, 4.0, 200)]
    assert in_flight_series(spans) == [(0.0, 1), (1.0, 2), (2.0, 2), (3.0, 1), (4.0, 0)]


def test_fixed_latency_is_honoured_per_item(tlm_sandbox: TLMSandbox) -> None:
    tlm_sandbox.set_latency(0.2)
    started = time.monotonic()
    results = score_list(make_tlm(tlm_sandbox), ["Q1?", "Q2?", "Q3?"], ["A.", "A.", "A."])
    elapsed = time.monotonic() - started
    assert all(r["trustworthiness_score"] is not None for r in results)
    assert elapsed >= 0.2
    spans = tlm_sandbox.spans()
    assert len(spans) == 3 and all(s.end - s.start >= 0.2 for s in spans)
    assert [r.delay_s for r in tlm_sandbox.records()] == [0.2] * 3  # medium: the latency as set
    tlm_sandbox.reset()
    assert tlm_sandbox.latency is None and tlm_sandbox.spans() == []


def test_list_items_are_sent_concurrently(tlm_sandbox: TLMSandbox) -> None:
    """All three items are held by the sandbox at once (the client starts with 4 in flight):
    concurrent, not one after another. Nothing is answered until they are released."""
    tlm_sandbox.faults.set("tlm.score", Fault(hold_items={"Q"}))
    prompts = ["Q1?", "Q2?", "Q3?"]
    tlm = make_tlm(tlm_sandbox, timeout=HELD_TIMEOUT)
    call = Background(lambda: score_list(tlm, prompts, ["A."] * 3))
    wait_for(lambda: tlm_sandbox.holding == 3, "three items held at once")
    assert tlm_sandbox.calls == [] and not call.done()
    tlm_sandbox.faults.release_hangs()
    results = call.result()
    assert [r["trustworthiness_score"] for r in results] == [
        synthetic_score(p, "A.") for p in prompts
    ]
    assert tlm_sandbox.peak_in_flight() == 3


def test_lognormal_latency_is_honoured_per_item(tlm_sandbox: TLMSandbox) -> None:
    lat = Latency.lognormal(0.03, 0.2, seed=3)
    tlm_sandbox.set_latency(lat)
    prompts = [f"Question {i}?" for i in range(24)]
    results = score_list(make_tlm(tlm_sandbox), prompts, ["A."] * len(prompts))
    assert all(r["trustworthiness_score"] is not None for r in results)
    assert sorted(tlm_sandbox.prompts) == sorted(prompts)
    # each item was served its own draw (medium: x1), and no span was shorter than its draw
    assert {r.prompt: r.delay_s for r in tlm_sandbox.records()} == {
        p: lat.for_item(p, "A.") for p in prompts
    }
    want = sorted(lat.for_item(p, "A.") for p in prompts)
    got = sorted(s.end - s.start for s in tlm_sandbox.spans())
    for w, g in zip(want, got, strict=True):
        assert w <= g
    assert max(want) > 2 * min(want)  # a spread, not a constant


@pytest.mark.parametrize("status", [429, 503])
def test_ceiling_refuses_then_the_client_finishes_every_item(
    tlm_sandbox: TLMSandbox, status: int
) -> None:
    tlm_sandbox.set_latency(0.1)
    tlm_sandbox.set_ceiling(2, status=status, retry_after=1)
    # the first two items are held until a third has been refused (the client starts at 4 in
    # flight), so a refusal happens however slowly this machine runs
    tlm_sandbox.faults.set("tlm.score", Fault(hold_items={"Q"}))
    prompts = [f"Q{i}?" for i in range(8)]
    tlm = make_tlm(tlm_sandbox, timeout=HELD_TIMEOUT)
    call = Background(lambda: score_list(tlm, prompts, ["A."] * len(prompts)))
    wait_for(
        lambda: (
            tlm_sandbox.faults.count("tlm.score", status=status) >= 1 and tlm_sandbox.holding == 2
        ),
        "two items held and a third refused",
    )
    tlm_sandbox.faults.set("tlm.score", None)
    tlm_sandbox.faults.release_hangs()
    results = call.result()
    assert [r["trustworthiness_score"] for r in results] == [
        synthetic_score(p, "A.") for p in prompts
    ]
    refused = tlm_sandbox.faults.count("tlm.score", status=status)
    assert refused >= 1
    assert tlm_sandbox.faults.count("tlm.score", status=200) == len(prompts)
    assert tlm_sandbox.peak_in_flight() <= 2
    assert sum(1 for s in tlm_sandbox.spans() if s.status == status) == refused


@pytest.mark.parametrize(("status", "retry_after"), [(429, 2), (503, 2), (429, None)])
def test_ceiling_answer_on_the_wire(
    tlm_sandbox: TLMSandbox, status: int, retry_after: int | None
) -> None:
    tlm_sandbox.set_ceiling(1, status=status, retry_after=retry_after)
    tlm_sandbox.faults.set("tlm.score", Fault(hold_items={"HOLD"}))
    auth = {"Authorization": f"bearer {tlm_sandbox.api_key}"}
    held = {"prompt": "HOLD Q?", "response": {"response": "A."}, "options": {}}
    body = {"prompt": "Q?", "response": {"response": "A."}, "options": {}}
    with httpx.Client(base_url=tlm_sandbox.url, timeout=60) as http:
        first = Background(lambda: http.post(SCORE_PATH, json=held, headers=auth))
        wait_for(lambda: tlm_sandbox.holding == 1, "the first call held")
        over = http.post(SCORE_PATH, json=body, headers=auth)
        tlm_sandbox.faults.release_hangs()
        assert first.result().status_code == 200
    assert over.status_code == status
    if retry_after is None:
        assert "retry-after" not in over.headers
    else:
        assert over.headers["retry-after"] == str(retry_after)
    assert over.headers["content-type"] == "application/json"
    assert "error" in over.json()
