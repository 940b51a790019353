"""Contract tests: the real ``openai`` client (and ``langfuse.openai``) against the local
OpenAI-compatible sandbox, over HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from sandbox.faults import Fault
from sandbox.openai_app import (
    ALICE_QUESTION,
    MODELS,
    TRIVIA,
    OpenAISandbox,
    answer_for,
    estimate_tokens,
    prompt_tokens,
)

SYSTEM = "You are a helpful assistant. Answer briefly."


@pytest.fixture(scope="module")
def server() -> Iterator[OpenAISandbox]:
    with OpenAISandbox() as sandbox:
        yield sandbox


@pytest.fixture
def oai(server: OpenAISandbox) -> Iterator[OpenAISandbox]:
    server.reset()
    yield server
    server.reset()


def client(sandbox: OpenAISandbox, max_retries: int = openai.DEFAULT_MAX_RETRIES) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=sandbox.base_url, api_key=sandbox.api_key, max_retries=max_retries
    )


def test_trivia_table_is_the_seed_questions() -> None:
    assert len(TRIVIA) == 5
    assert TRIVIA["What is the 3rd month of the year in alphabetical order?"] == "March"
    assert TRIVIA["What is the capital of France?"] == "The capital of France is Paris."
    assert "3,153,600,000 seconds" in TRIVIA["How many seconds are in 100 years?"]
    alice = TRIVIA[ALICE_QUESTION]
    assert "Charlie gets $7.20" in alice and "Bob gets $21.60" in alice
    assert "Alice gets $43.20" in alice
    assert TRIVIA["When was the Declaration of Independence signed?"] == (
        "The Declaration of Independence was signed on July 4, 1776."
    )


@pytest.mark.parametrize("question", list(TRIVIA))
def test_chat_completion_returns_the_recorded_answer(oai: OpenAISandbox, question: str) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": question},
    ]
    before = int(time.time())
    completion = client(oai).chat.completions.create(
        model="gpt-4.1-mini",
        messages=messages,
        temperature=0,
    )
    answer = TRIVIA[question]
    assert completion.choices[0].message.content == answer
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason == "stop"
    assert len(completion.choices) == 1
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-") and len(completion.id) > 20
    assert completion.model == "gpt-4.1-mini"
    assert before <= completion.created <= int(time.time())
    assert completion.usage is not None
    assert completion.usage.completion_tokens == estimate_tokens(answer)
    assert completion.usage.prompt_tokens == prompt_tokens([dict(m) for m in messages])
    assert completion.usage.prompt_tokens == (
        estimate_tokens(SYSTEM) + 4 + estimate_tokens(question) + 4 + 3
    )
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    body = oai.requests_bodies[-1]
    assert body["model"] == "gpt-4.1-mini"
    assert body["messages"] == messages
    assert body["temperature"] == 0


def test_matching_is_on_the_last_user_message(oai: OpenAISandbox) -> None:
    completion = client(oai).chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi! Ask me anything."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "  what is the capital of   FRANCE? "}],
            },
        ],
    )
    assert completion.choices[0].message.content == "The capital of France is Paris."
    assert completion.model == "gpt-4o-mini"


def test_unknown_questions_get_deterministic_answers(oai: OpenAISandbox) -> None:
    c = client(oai)
    question = "Why is the sky blue?"
    first = c.chat.completions.create(
        model="gpt-4.1-mini", messages=[{"role": "user", "content": question}]
    )
    second = c.chat.completions.create(
        model="gpt-4.1-mini", messages=[{"role": "user", "content": question}]
    )
    content = first.choices[0].message.content
    assert content == second.choices[0].message.content == answer_for(question)
    assert content is not None and question in content and content not in TRIVIA.values()
    assert first.id != second.id
    other = c.chat.completions.create(
        model="gpt-4.1-mini", messages=[{"role": "user", "content": "Why is grass green?"}]
    )
    assert other.choices[0].message.content != content


def test_n_and_max_tokens(oai: OpenAISandbox) -> None:
    question = "How many seconds are in 100 years?"
    completion = client(oai).chat.completions.create(
        model="gpt-4.1-mini",
        messages=[{"role": "user", "content": question}],
        n=2,
        max_tokens=5,
    )
    assert [c.index for c in completion.choices] == [0, 1]
    for choice in completion.choices:
        assert choice.finish_reason == "length"
        assert choice.message.content == TRIVIA[question][:20]
    assert completion.usage is not None and completion.usage.completion_tokens == 10


def test_streaming(oai: OpenAISandbox) -> None:
    question = "When was the Declaration of Independence signed?"
    stream = client(oai).chat.completions.create(
        model="gpt-4.1-mini",
        messages=[{"role": "user", "content": question}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == TRIVIA[question]
    assert len({c.id for c in chunks}) == 1
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert usage.completion_tokens == estimate_tokens(TRIVIA[question])


def test_models(oai: OpenAISandbox) -> None:
    c = client(oai)
    assert [m.id for m in c.models.list()] == list(MODELS)
    assert c.models.retrieve("gpt-4.1-mini").id == "gpt-4.1-mini"
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("no-such-model")


def test_bad_key_is_refused_without_retry(oai: OpenAISandbox) -> None:
    bad = openai.OpenAI(base_url=oai.base_url, api_key="sk-wrong")
    with pytest.raises(openai.AuthenticationError) as err:
        bad.chat.completions.create(
            model="gpt-4.1-mini", messages=[{"role": "user", "content": "Hi"}]
        )
    assert err.value.status_code == 401
    assert err.value.code == "invalid_api_key"
    assert oai.faults.count("openai.chat") == 1
    assert oai.requests_bodies == []


def test_429_is_retried_by_the_client(oai: OpenAISandbox) -> None:
    oai.faults.set("openai.chat", Fault(status=429, retry_after=0, first=1))
    completion = client(oai).chat.completions.create(
        model="gpt-4.1-mini",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
    )
    assert completion.choices[0].message.content == "The capital of France is Paris."
    assert [r.status for r in oai.faults.requests] == [429, 200]


def test_5xx_surfaces_when_retries_are_off(oai: OpenAISandbox) -> None:
    oai.faults.set("openai.chat", Fault(status=500))
    with pytest.raises(openai.InternalServerError) as err:
        client(oai, max_retries=0).chat.completions.create(
            model="gpt-4.1-mini", messages=[{"role": "user", "content": "Hi"}]
        )
    assert err.value.status_code == 500
    assert err.value.type == "server_error"
    assert oai.faults.count("openai.chat", status=500) == 1


def test_bad_requests_and_errors_are_json(oai: OpenAISandbox) -> None:
    auth = {"Authorization": f"Bearer {oai.api_key}"}
    with httpx.Client(base_url=oai.url, timeout=5) as http:
        for body in ({"messages": [{"role": "user", "content": "x"}]}, {"model": "m"}):
            r = http.post("/v1/chat/completions", json=body, headers=auth)
            assert r.status_code == 400
            assert r.headers["content-type"] == "application/json"
            assert r.json()["error"]["type"] == "invalid_request_error"
        missing = http.get("/v1/nope", headers=auth)
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/json"
    assert oai.env() == {"OPENAI_BASE_URL": oai.base_url, "OPENAI_API_KEY": oai.api_key}
    assert oai.base_url == oai.url + "/v1"


def test_langfuse_openai_wrapper_works_without_a_langfuse_server(
    oai: OpenAISandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tracing off and no Langfuse keys: the wrapper's client is a no-op and exports nothing.
    monkeypatch.setenv("LANGFUSE_TRACING_ENABLED", "false")
    for name in (
        "LANGFUSE_PUBLIC_KEY",
        "LANGFUSE_SECRET_KEY",
        "LANGFUSE_BASE_URL",
        "LANGFUSE_HOST",
    ):
        monkeypatch.delenv(name, raising=False)
    from langfuse.openai import OpenAI as LangfuseOpenAI  # type: ignore[attr-defined]

    lf = LangfuseOpenAI(base_url=oai.base_url, api_key=oai.api_key)
    completion = lf.chat.completions.create(  # type: ignore[call-overload]
        model="gpt-4.1-mini",
        messages=[
            {"role": "user", "content": "What is the 3rd month of the year in alphabetical order?"}
        ],
        name="sandbox-contract",  # a langfuse-only argument: must not reach the server
    )
    assert completion.choices[0].message.content == "March"
    assert completion.usage is not None and completion.usage.completion_tokens == 2
    body = oai.requests_bodies[-1]
    assert "name" not in body
    assert body["messages"][0]["content"].startswith("What is the 3rd month")
