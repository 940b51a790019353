"""The real cleanlab-tlm TrustworthyRAG client against the TLM sandbox's RAG endpoint, over HTTP.

``POST {base}/v1/rag_trustworthy_llm/score``: one request per item, the evals sent by name and
answered by name. No test bounds an elapsed time from above.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandbox.faults import Fault
from sandbox.tlm import (
    EXPLANATION_REFUSED,
    RAG_SCORE_PATH,
    SCORE_PATH,
    TLMSandbox,
    eval_score,
    marker,
    session_tlm_sandbox,
    synthetic_explanation,
    synthetic_score,
)
from tests.support.tlm_client import Background, error_slot, fresh_session_sandbox, wait_for

session_tlm_sandbox()  # must run before cleanlab_tlm is imported

from cleanlab_tlm import TLM  # noqa: E402
from cleanlab_tlm.errors import (  # noqa: E402
    APIError,
    AuthError,
    TlmBadRequestError,
    ValidationError,
)
from cleanlab_tlm.utils.rag import Eval, TrustworthyRAG, get_default_evals  # noqa: E402

TIMEOUT = 10.0
DEFAULT_EVALS = [
    "context_sufficiency",
    "response_groundedness",
    "response_helpfulness",
    "query_ease",
]
QUERY = "What is the capital of France?"
CONTEXT = "France is a country in Western Europe. Its capital and largest city is Paris."
RESPONSE = "Paris"
CONCISE = Eval(
    name="concise",
    criteria="Is the Answer short and to the point?",
    response_identifier="Answer",
)
ON_TOPIC = Eval(
    name="on_topic",
    criteria="Does the Document talk about the Question?",
    query_identifier="Question",
    context_identifier="Document",
)


@pytest.fixture
def tlm_sandbox() -> Iterator[TLMSandbox]:
    yield from fresh_session_sandbox()


def make_rag(sandbox: TLMSandbox, **kwargs: Any) -> TrustworthyRAG:
    args: dict[str, Any] = {"timeout": TIMEOUT, "api_key": sandbox.api_key}
    args.update(kwargs)
    return TrustworthyRAG(**args)


def expected_scores(
    query: str, context: str, response: str, prompt: str, evals: list[Eval] | None = None
) -> dict[str, Any]:
    """What the sandbox answers (and the client returns) for an item, no marker involved."""
    out: dict[str, Any] = {"trustworthiness": {"score": synthetic_score(prompt, response)}}
    for ev in get_default_evals() if evals is None else evals:
        out[ev.name] = {
            "score": eval_score(
                ev.name,
                query=query if ev.query_identifier else None,
                context=context if ev.context_identifier else None,
                response=response if ev.response_identifier else None,
            )
        }
    return out


def default_prompt(query: str, context: str) -> str:
    return TrustworthyRAG._default_prompt_formatter(query, context)


def score_one(rag: TrustworthyRAG, **kwargs: Any) -> dict[str, Any]:
    result = rag.score(**kwargs)
    assert isinstance(result, dict)
    return dict(result)


def score_list(rag: TrustworthyRAG, **kwargs: Any) -> list[dict[str, Any]]:
    result = rag.score(**kwargs)
    assert isinstance(result, list)
    return [dict(r) for r in result]


# --------------------------------------------------------------------------- happy paths


def test_default_evals_payload_and_answer(tlm_sandbox: TLMSandbox) -> None:
    rag = make_rag(tlm_sandbox)
    result = score_one(rag, query=QUERY, context=CONTEXT, response=RESPONSE)
    prompt = default_prompt(QUERY, CONTEXT)
    assert result == expected_scores(QUERY, CONTEXT, RESPONSE, prompt)
    assert list(result) == ["trustworthiness", *DEFAULT_EVALS]  # the client keeps eval order
    assert result["trustworthiness"]["score"] == 0.985  # the demo's known pair

    # exactly what cleanlab-tlm 1.1.39 sends (internal/api/api.py tlm_rag_score)
    assert tlm_sandbox.rag_calls == [
        {
            "response": {"response": RESPONSE},
            "prompt": prompt,
            "query": QUERY,
            "context": CONTEXT,
            "evals": [vars(ev) for ev in get_default_evals()],
            "quality": "medium",
            "options": {"model": "gpt-4.1-mini", "max_timeout": TIMEOUT},
            "user_id": tlm_sandbox.api_key,
            "client_id": tlm_sandbox.api_key,
            "constrain_outputs": None,
        }
    ]
    assert tlm_sandbox.calls == [] and tlm_sandbox.prompts == []  # the TLM endpoint's captures
    headers = tlm_sandbox.headers[0]
    assert headers["authorization"] == f"bearer {tlm_sandbox.api_key}"
    assert headers["content-type"] == "application/json"
    assert headers["client-type"] == "python-api"
    [record] = tlm_sandbox.records()
    assert (record.endpoint, record.status, record.preset, record.model) == (
        "tlm.rag_score",
        200,
        "medium",
        "gpt-4.1-mini",
    )
    assert record.evals == tuple(DEFAULT_EVALS) and record.criteria == ()
    assert (record.prompt, record.query) == (prompt, QUERY)
    assert tlm_sandbox.faults.count("tlm.rag_score", status=200) == 1


def test_explicit_prompt_is_sent_as_given(tlm_sandbox: TLMSandbox) -> None:
    prompt = f"System: answer from the documents.\nDocs: {CONTEXT}\nUser: {QUERY}"
    result = score_one(
        make_rag(tlm_sandbox), query=QUERY, context=CONTEXT, response=RESPONSE, prompt=prompt
    )
    assert result == expected_scores(QUERY, CONTEXT, RESPONSE, prompt)
    assert tlm_sandbox.rag_calls[0]["prompt"] == prompt


def test_extra_evals_with_identifiers_and_no_evals(tlm_sandbox: TLMSandbox) -> None:
    evals = [*get_default_evals(), CONCISE, ON_TOPIC]
    result = score_one(
        make_rag(tlm_sandbox, evals=evals), query=QUERY, context=CONTEXT, response=RESPONSE
    )
    prompt = default_prompt(QUERY, CONTEXT)
    assert result == expected_scores(QUERY, CONTEXT, RESPONSE, prompt, evals)
    assert list(result) == ["trustworthiness", *DEFAULT_EVALS, "concise", "on_topic"]
    sent = tlm_sandbox.rag_calls[0]["evals"]
    assert sent[-2:] == [
        {
            "name": "concise",
            "criteria": "Is the Answer short and to the point?",
            "query_identifier": None,
            "context_identifier": None,
            "response_identifier": "Answer",
        },
        {
            "name": "on_topic",
            "criteria": "Does the Document talk about the Question?",
            "query_identifier": "Question",
            "context_identifier": "Document",
            "response_identifier": None,
        },
    ]
    # an eval scores only what its identifiers name: on_topic ignores the response
    other = score_one(
        make_rag(tlm_sandbox, evals=evals), query=QUERY, context=CONTEXT, response="Lyon"
    )
    assert other["on_topic"] == result["on_topic"]
    assert other["query_ease"] == result["query_ease"]
    assert other["concise"] != result["concise"]

    only_trust = score_one(
        make_rag(tlm_sandbox, evals=[]), query=QUERY, context=CONTEXT, response=RESPONSE
    )
    assert only_trust == {"trustworthiness": {"score": 0.985}}
    assert tlm_sandbox.rag_calls[-1]["evals"] == []


def test_batch_and_async_forms(tlm_sandbox: TLMSandbox) -> None:
    queries = [QUERY, "Who wrote Hamlet?", "What is 2 + 2?"]
    contexts = [CONTEXT, "Hamlet is a tragedy by William Shakespeare.", "Arithmetic."]
    responses = [RESPONSE, "Shakespeare", "4"]
    want = [
        expected_scores(q, c, r, default_prompt(q, c))
        for q, c, r in zip(queries, contexts, responses, strict=True)
    ]
    rag = make_rag(tlm_sandbox)
    assert score_list(rag, query=queries, context=contexts, response=responses) == want

    async def both() -> tuple[Any, Any]:
        one = await rag.score_async(query=QUERY, context=CONTEXT, response=RESPONSE)
        many = await rag.score_async(query=queries, context=contexts, response=responses)
        return one, many

    one, many = asyncio.run(both())
    assert dict(one) == want[0]
    assert [dict(r) for r in many] == want
    # one request per item, every time
    records = tlm_sandbox.records("tlm.rag_score")
    assert len(records) == 3 + 1 + 3
    assert sorted(r.query or "" for r in records) == sorted([*queries, QUERY, *queries])


def test_tool_call_only_response_gets_none_for_response_evals_from_the_client(
    tlm_sandbox: TLMSandbox,
) -> None:
    """cleanlab_tlm/internal/rag.py: for a response that is only tool calls, the CLIENT sends
    only the evals without a response_identifier and fills the others in as {"score": None}."""
    response = '<tool_call>\n{"name": "lookup", "arguments": {"city": "Paris"}}\n</tool_call>'
    result = score_one(make_rag(tlm_sandbox), query=QUERY, context=CONTEXT, response=response)
    prompt = default_prompt(QUERY, CONTEXT)
    full = expected_scores(QUERY, CONTEXT, response, prompt)
    assert result == {
        **full,
        "response_groundedness": {"score": None},
        "response_helpfulness": {"score": None},
    }
    assert [e["name"] for e in tlm_sandbox.rag_calls[0]["evals"]] == [
        "context_sufficiency",
        "query_ease",
    ]
    assert tlm_sandbox.records()[0].evals == ("context_sufficiency", "query_ease")


def test_disable_trustworthiness_answers_a_none_score(tlm_sandbox: TLMSandbox) -> None:
    rag = make_rag(tlm_sandbox, options={"disable_trustworthiness": True})
    result = score_one(rag, query=QUERY, context=CONTEXT, response=RESPONSE)
    assert result["trustworthiness"] == {"score": None}
    assert result["query_ease"] == {"score": eval_score("query_ease", query=QUERY)}


# --------------------------------------------------------------------------- explanations


def test_logged_explanation_at_high_and_get_explanation(tlm_sandbox: TLMSandbox) -> None:
    rag = make_rag(tlm_sandbox, quality_preset="high", options={"log": ["explanation"]})
    result = rag.score(query=QUERY, context=CONTEXT, response="Lyon")
    assert isinstance(result, dict)
    prompt = default_prompt(QUERY, CONTEXT)
    score = synthetic_score(prompt, "Lyon")
    assert result["trustworthiness"] == {
        "score": score,
        "log": {"explanation": synthetic_explanation(prompt, "Lyon", score)},
    }
    assert all(set(result[name]) == {"score"} for name in DEFAULT_EVALS)  # evals carry no log
    assert tlm_sandbox.rag_calls[0]["quality"] == "high"
    assert tlm_sandbox.rag_calls[0]["options"]["log"] == ["explanation"]
    # already explained: answered locally
    explained = rag.get_explanation(
        query=QUERY, context=CONTEXT, response="Lyon", tlm_result=result
    )
    assert explained == result["trustworthiness"]["log"]["explanation"]
    assert tlm_sandbox.explain_calls == []


def test_get_explanation_of_a_score_without_one(tlm_sandbox: TLMSandbox) -> None:
    rag = make_rag(tlm_sandbox)
    result = rag.score(query=QUERY, context=CONTEXT, response="Lyon")
    assert isinstance(result, dict)
    explanation = rag.get_explanation(
        query=QUERY, context=CONTEXT, response="Lyon", tlm_result=result
    )
    prompt = default_prompt(QUERY, CONTEXT)
    score = synthetic_score(prompt, "Lyon")
    assert explanation == synthetic_explanation(prompt, "Lyon", score)
    assert result["trustworthiness"]["log"] == {"explanation": explanation}  # mutated in place
    # what the client sends: no preset, the score and the response, the instance's options
    assert tlm_sandbox.explain_calls == [
        {
            "prompt": prompt,
            "response": {"response": "Lyon", "trustworthiness_score": score},
            "options": {"model": "gpt-4.1-mini", "max_timeout": TIMEOUT},
        }
    ]
    assert [(r.endpoint, r.preset) for r in tlm_sandbox.records()] == [
        ("tlm.rag_score", "medium"),
        ("tlm.explain", None),
    ]


def test_logged_explanation_is_refused_where_the_client_refuses_it(
    tlm_sandbox: TLMSandbox,
) -> None:
    """TrustworthyRAG logs explanations only at best/high (internal/validation.py
    validate_logging): the client raises at construction; the sandbox answers 422 if a request
    gets through anyway, which the client does not retry."""
    for preset in ("medium", "low", "base"):
        with pytest.raises(ValueError, match="does not support logged explanations"):
            make_rag(tlm_sandbox, quality_preset=preset, options={"log": ["explanation"]})
    with pytest.raises(ValidationError, match="custom_eval_criteria is not supported"):
        make_rag(tlm_sandbox, options={"custom_eval_criteria": [{"name": "x", "criteria": "y"}]})

    rag = make_rag(tlm_sandbox)
    rag._options["log"] = ["explanation"]  # what validation would have refused
    with pytest.raises(TlmBadRequestError) as raised:
        rag.score(query=QUERY, context=CONTEXT, response=RESPONSE)
    assert (raised.value.message, raised.value.retryable) == (EXPLANATION_REFUSED, False)
    assert [r.status for r in tlm_sandbox.records()] == [422]
    assert tlm_sandbox.faults.count("tlm.rag_score") == 1  # not retried

    body = dict(tlm_sandbox.rag_calls[0])
    auth = {"Authorization": f"bearer {tlm_sandbox.api_key}"}
    with httpx.Client(base_url=tlm_sandbox.url, timeout=60) as http:
        for quality, status in (("base", 422), ("medium", 422), ("high", 200), ("best", 200)):
            answer = http.post(RAG_SCORE_PATH, json={**body, "quality": quality}, headers=auth)
            assert answer.status_code == status, quality
            if status == 422:
                assert answer.json() == {"error": EXPLANATION_REFUSED}
        custom = {**body, "options": {"custom_eval_criteria": [{"name": "x", "criteria": "y"}]}}
        assert http.post(RAG_SCORE_PATH, json=custom, headers=auth).status_code == 422


# --------------------------------------------------------------------------- markers


def test_markers_force_scores_none_and_nan(tlm_sandbox: TLMSandbox) -> None:
    query = f"{QUERY} {marker('query_ease', 'nan')}"
    context = f"{CONTEXT} {marker('context_sufficiency', 0.1)} {marker('trustworthiness', 0.2)}"
    response = f"Paris {marker('response_groundedness', None)}"
    result = score_one(make_rag(tlm_sandbox), query=query, context=context, response=response)
    assert result["trustworthiness"] == {"score": 0.2}
    assert result["context_sufficiency"] == {"score": 0.1}
    assert result["response_groundedness"] == {"score": None}
    assert math.isnan(result["query_ease"]["score"])
    prompt = default_prompt(query, context)
    assert (
        result["response_helpfulness"]
        == expected_scores(query, context, response, prompt)["response_helpfulness"]
    )


def test_marker_eval_error_leaves_the_eval_out(tlm_sandbox: TLMSandbox) -> None:
    """The client reads ``res_json[eval.name]`` inside its retry loop: a missing eval is a
    KeyError, retried 4 times (1 + 2 + 4 s), then the whole item is an error result."""
    query = f"{QUERY} {marker('eval_error', 'response_helpfulness')}"
    with pytest.warns(UserWarning, match=r"prompt\[1\] failed\. Worth retrying"):
        results = score_list(
            make_rag(tlm_sandbox),
            query=[QUERY, query],
            context=[CONTEXT, CONTEXT],
            response=[RESPONSE, RESPONSE],
        )
    assert results[0] == expected_scores(QUERY, CONTEXT, RESPONSE, default_prompt(QUERY, CONTEXT))
    message = str(("TLM failed after 4 attempts. 'response_helpfulness'", -1))
    assert results[1] == {
        "trustworthiness": {"score": None, "log": error_slot(message, retryable=True)},
        **{name: {"score": None} for name in DEFAULT_EVALS},
    }
    failed = [r for r in tlm_sandbox.records() if r.query == query]
    assert len(failed) == 4 and all(r.status == 200 for r in failed)
    assert "response_helpfulness" not in raw_rag_answer(tlm_sandbox, query)

    # a single call raises what the list call put in the slot
    with pytest.raises(APIError, match="TLM failed after 4 attempts"):
        make_rag(tlm_sandbox).score(query=query, context=CONTEXT, response=RESPONSE)


def raw_rag_answer(sandbox: TLMSandbox, query: str) -> dict[str, Any]:
    """The sandbox's raw answer to the last RAG call with this query, sent again over HTTP."""
    body = next(c for c in reversed(sandbox.rag_calls) if c["query"] == query)
    with httpx.Client(base_url=sandbox.url, timeout=60) as http:
        answer = http.post(
            RAG_SCORE_PATH, json=body, headers={"Authorization": f"bearer {sandbox.api_key}"}
        )
    assert answer.status_code == 200
    out: dict[str, Any] = answer.json()
    return out


def test_marker_eval_error_on_trustworthiness_drops_the_key(tlm_sandbox: TLMSandbox) -> None:
    """The client copies ``trustworthiness`` only if present: no error, the key is absent."""
    context = f"{CONTEXT} {marker('eval_error', 'trustworthiness')}"
    result = score_one(make_rag(tlm_sandbox), query=QUERY, context=context, response=RESPONSE)
    assert list(result) == DEFAULT_EVALS
    assert tlm_sandbox.faults.count("tlm.rag_score") == 1


def test_marker_status_422_is_an_error_result_not_retried(tlm_sandbox: TLMSandbox) -> None:
    query = f"{QUERY} {marker('status', 422)}"
    with pytest.warns(UserWarning, match="Retrying will not help"):
        results = score_list(
            make_rag(tlm_sandbox, evals=[*get_default_evals(), CONCISE]),
            query=[query, QUERY],
            context=[CONTEXT, CONTEXT],
            response=[RESPONSE, RESPONSE],
        )
    message = "Error executing query at index 0:\nTLM sandbox: status 422 by marker."
    assert results[0] == {
        "trustworthiness": {"score": None, "log": error_slot(message, retryable=False)},
        **{name: {"score": None} for name in [*DEFAULT_EVALS, "concise"]},
    }
    assert results[1]["trustworthiness"] == {"score": 0.985}
    assert [r.status for r in tlm_sandbox.records() if r.query == query] == [422]

    with pytest.raises(TlmBadRequestError):
        make_rag(tlm_sandbox).score(query=query, context=CONTEXT, response=RESPONSE)


def test_unreadable_marker_is_a_422(tlm_sandbox: TLMSandbox) -> None:
    with pytest.raises(TlmBadRequestError) as raised:
        make_rag(tlm_sandbox).score(
            query=f"{QUERY} [tlm:query_ease=high]", context=CONTEXT, response=RESPONSE
        )
    assert "unreadable marker" in raised.value.message
    assert "[tlm:query_ease=high]" in raised.value.message


# --------------------------------------------------------------------------- statuses


def test_fatal_and_retried_statuses(tlm_sandbox: TLMSandbox) -> None:
    """401 (invalid_api_key): AuthError, once. A transient 500 and a 429: retried, then the
    score. (A persistent 5xx: 4 attempts, as on the TLM endpoint.)"""
    with pytest.raises(AuthError):
        make_rag(tlm_sandbox, api_key="wrong").score(
            query=QUERY, context=CONTEXT, response=RESPONSE
        )
    assert tlm_sandbox.faults.count("tlm.rag_score", status=401) == 1

    want = expected_scores(QUERY, CONTEXT, RESPONSE, default_prompt(QUERY, CONTEXT))
    for status, retry_after in ((500, None), (503, None), (429, 0), (429, None)):
        tlm_sandbox.reset()
        tlm_sandbox.faults.set(
            "tlm.rag_score", Fault(status=status, retry_after=retry_after, first=1)
        )
        result = score_one(make_rag(tlm_sandbox), query=QUERY, context=CONTEXT, response=RESPONSE)
        assert result == want, status
        assert [r.status for r in tlm_sandbox.faults.requests] == [status, 200]

    tlm_sandbox.reset()
    tlm_sandbox.fail_status = 422
    tlm_sandbox.faults.set("tlm.rag_score", Fault(fail_items={"FAIL-ME"}))
    with pytest.raises(TlmBadRequestError):  # matched in the context, not only the prompt
        make_rag(tlm_sandbox).score(query=QUERY, context="FAIL-ME", response=RESPONSE)
    assert tlm_sandbox.faults.count("tlm.rag_score", status=422) == 1


def test_the_ceiling_is_shared_by_both_score_endpoints(tlm_sandbox: TLMSandbox) -> None:
    tlm_sandbox.set_ceiling(1, retry_after=1)
    tlm_sandbox.faults.set("tlm.score", Fault(hold_items={"HOLD"}))
    auth = {"Authorization": f"bearer {tlm_sandbox.api_key}"}
    held = {"prompt": "HOLD", "response": {"response": "A."}}
    with httpx.Client(base_url=tlm_sandbox.url, timeout=60) as http:
        first = Background(lambda: http.post(SCORE_PATH, json=held, headers=auth))
        wait_for(lambda: tlm_sandbox.holding == 1, "the TLM call held")
        body = {
            "prompt": "P",
            "response": {"response": "R"},
            "query": "Q",
            "context": "C",
            "evals": [],
        }
        over = http.post(RAG_SCORE_PATH, json=body, headers=auth)
        tlm_sandbox.faults.release_hangs()
        assert first.result().status_code == 200
    assert over.status_code == 429 and over.headers["retry-after"] == "1"
    spans = tlm_sandbox.spans()
    assert [(s.endpoint, s.status) for s in spans] == [("tlm.rag_score", 429), ("tlm.score", 200)]


# --------------------------------------------------------------------------- one call per trace


def test_records_count_one_call_per_trace_across_endpoints(tlm_sandbox: TLMSandbox) -> None:
    traces = [f"trace-{i}" for i in range(6)]
    rag_traces, tlm_traces = traces[:3], traces[3:]
    score_list(
        make_rag(tlm_sandbox),
        query=[f"{t}: {QUERY}" for t in rag_traces],
        context=[CONTEXT] * 3,
        response=[RESPONSE] * 3,
    )
    tlm = TLM(quality_preset="high", timeout=TIMEOUT, api_key=tlm_sandbox.api_key)
    tlm.get_trustworthiness_score([f"{t}: {QUERY}" for t in tlm_traces], [RESPONSE] * 3)
    records = tlm_sandbox.records()
    per_trace = {t: [r for r in records if f"{t}:" in r.prompt] for t in traces}
    assert {t: len(rs) for t, rs in per_trace.items()} == dict.fromkeys(traces, 1)
    assert {t: rs[0].endpoint for t, rs in per_trace.items()} == {
        **dict.fromkeys(rag_traces, "tlm.rag_score"),
        **dict.fromkeys(tlm_traces, "tlm.score"),
    }
    assert {r.preset for r in records if r.endpoint == "tlm.score"} == {"high"}
    assert all(r.evals == tuple(DEFAULT_EVALS) for r in records if r.endpoint == "tlm.rag_score")
