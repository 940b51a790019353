"""The seed's trivia app, instrumented the way real Langfuse users do it (an example app that
feeds the demo, the tests and ``python -m sandbox seed``; not shipped in the wheel).

An ``@observe`` function calls the model through Langfuse's OpenAI integration
(``langfuse.openai.OpenAI``), which records the call as a GENERATION observation holding the full
message list, system prompt included. Tags and the trace name are set with
``propagate_attributes``; the system prompt is also kept in trace metadata (the seed's shape).

Against the sandbox (``OPENAI_BASE_URL`` pointing at ``python -m sandbox``) the answers are
recorded ones; with a real ``OPENAI_API_KEY`` and no ``OPENAI_BASE_URL`` the same code asks OpenAI.

    python -m sandbox.trivia_app --synthetic 50     # trace the seed's 5 questions + 50 more
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Iterable
from typing import Any

from sandbox.openai_app import TRIVIA

TAG = "TLM_eval_pipeline"
SYSTEM_PROMPT = "You are a trivia master."
MODEL = "gpt-4o-mini"
TRACE_NAME = "trivia"  # the trace's name (propagate_attributes)
ROOT_NAME = "answer_trivia"  # the @observe'd function: the root span's name

# the seed notebook's five questions (the sandbox model gives the seed's recorded answers)
SEED_QUESTIONS: list[str] = list(TRIVIA)

_COUNTRIES = ["Japan", "Canada", "Australia", "Brazil", "Kenya", "Norway", "Egypt", "Peru",
              "Vietnam", "Morocco", "Chile", "Turkey"]  # fmt: skip
_FACTS = [
    "Who wrote 'Pride and Prejudice'?",
    "What is the boiling point of water at sea level in Celsius?",
    "What is the chemical symbol for gold?",
    "How many planets are in the Solar System?",
    "Which ocean is the largest?",
    "Who painted the Mona Lisa?",
    "What is the speed of light in vacuum?",
    "Which element has atomic number 1?",
]


def synthetic_questions(n: int, seed: int = 7) -> list[str]:
    """Varied trivia questions, deterministic for a given seed."""
    rng = random.Random(seed)
    out: list[str] = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            out.append(f"What is the capital of {rng.choice(_COUNTRIES)}? (#{i})")
        elif kind == 1:
            out.append(f"What is {rng.randint(12, 999)} times {rng.randint(12, 999)}?")
        else:
            out.append(f"{rng.choice(_FACTS)} (#{i})")
    return out


def messages_for(question: str, system_prompt: str = SYSTEM_PROMPT) -> list[dict[str, str]]:
    """The chat messages the app sends for a question."""
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": question}]


def trace_answers(
    questions: Iterable[str],
    *,
    tags: list[str] | None = None,
    system_prompt: str = SYSTEM_PROMPT,
    langfuse_public_key: str | None = None,
    tag_root_only: bool = False,
) -> list[str]:
    """Answer each question through the traced app; flushes the traces before returning.

    ``langfuse_public_key`` picks the Langfuse client when a process holds several (tests).
    ``tag_root_only`` tags the root span alone, as apps that set tags once per request do:
    the generation then carries no tag of its own.
    """
    from langfuse import Langfuse, get_client, observe, propagate_attributes
    from langfuse.openai import OpenAI  # type: ignore[attr-defined]  # set at import

    # keys, base URL from LANGFUSE_* (a named key registers that client for @observe to find)
    langfuse = Langfuse(public_key=langfuse_public_key) if langfuse_public_key else get_client()
    client = OpenAI()
    tag_list = tags or [TAG]

    def ask(question: str) -> str:
        messages: Any = messages_for(question, system_prompt)  # the SDK's typed-dict union
        completion: Any = client.chat.completions.create(
            model=MODEL, messages=messages, temperature=0
        )
        return str(completion.choices[0].message.content)

    @observe(name=ROOT_NAME)
    def answer(question: str) -> str:
        attrs = propagate_attributes(
            tags=tag_list, trace_name=TRACE_NAME, metadata={"system_prompt": system_prompt}
        )
        if tag_root_only:
            with attrs:  # sets them on the current (root) span; spans started later lack them
                pass
            return ask(question)
        with attrs:
            return ask(question)

    key_kw: dict[str, Any] = (
        {"langfuse_public_key": langfuse_public_key} if langfuse_public_key else {}
    )
    answers = [answer(q, **key_kw) for q in questions]
    langfuse.flush()
    return answers


# the knowledge base of the app's RAG questions (about a fictional shop): what its retrieval
# step finds for each question; some questions find nothing useful (a retrieval gap)
SHOP_DOCS: dict[str, str] = {
    "opening": "The Corner Shop opens at 8:00 and closes at 20:00, Monday to Saturday.",
    "returns": "Items can be returned within 30 days with the receipt.",
    "delivery": "Delivery within the city takes two working days and costs 4 euros.",
    "payment": "The shop takes cash and cards; it does not take cheques.",
}
RAG_QUESTIONS: list[tuple[str, str]] = [
    ("When does the Corner Shop open on Saturdays?", "opening"),
    ("Can I return an item after six weeks?", "returns"),
    ("How much is delivery within the city?", "delivery"),
    ("Do you take cheques?", "payment"),
    ("Is the shop open on Sundays?", "opening"),
    ("Do you deliver abroad?", "delivery"),
    ("Can I pay with a voucher?", "payment"),
    ("What is the return policy for sale items?", "returns"),
]


def rag_questions(n: int) -> list[tuple[str, str]]:
    """``n`` questions for the RAG app, with the document each retrieves (deterministic)."""
    return [
        (f"{q} (#{i})" if i >= len(RAG_QUESTIONS) else q, doc)
        for i, (q, doc) in ((i, RAG_QUESTIONS[i % len(RAG_QUESTIONS)]) for i in range(n))
    ]


def trace_rag_answers(
    questions: Iterable[tuple[str, str]],
    *,
    tags: list[str] | None = None,
    langfuse_public_key: str | None = None,
) -> list[str]:
    """The app's RAG path: a retrieval step (``@observe(as_type="retriever")``, a RETRIEVER
    observation whose output is the documents found), then the model call through the OpenAI
    integration with the documents in its system prompt."""
    from langfuse import Langfuse, get_client, observe, propagate_attributes
    from langfuse.openai import OpenAI  # type: ignore[attr-defined]  # set at import

    langfuse = Langfuse(public_key=langfuse_public_key) if langfuse_public_key else get_client()
    client = OpenAI()
    tag_list = tags or [TAG]

    @observe(name="search_docs", as_type="retriever")
    def retrieve(question: str, doc: str) -> list[dict[str, str]]:
        return [{"page_content": SHOP_DOCS[doc]}]

    @observe(name="answer_shop_question")
    def answer(question: str, doc: str) -> str:
        with propagate_attributes(tags=tag_list, trace_name="shop-rag"):
            docs = retrieve(question, doc)
            system = "Answer from the context.\n\nContext:\n" + "\n".join(
                d["page_content"] for d in docs
            )
            messages: Any = messages_for(question, system)
            completion: Any = client.chat.completions.create(
                model=MODEL, messages=messages, temperature=0
            )
            return str(completion.choices[0].message.content)

    key_kw: dict[str, Any] = (
        {"langfuse_public_key": langfuse_public_key} if langfuse_public_key else {}
    )
    answers = [answer(q, d, **key_kw) for q, d in questions]
    langfuse.flush()
    return answers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Trace trivia answers into Langfuse.")
    parser.add_argument("--synthetic", type=int, default=0, help="extra synthetic questions")
    parser.add_argument("--tag", action="append", dest="tags", help=f"trace tag (default {TAG})")
    args = parser.parse_args(argv)
    questions = SEED_QUESTIONS + synthetic_questions(args.synthetic)
    trace_answers(questions, tags=args.tags)
    print(f"traced {len(questions)} answers")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
