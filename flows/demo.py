"""The offline demo: `make demo` (or `python -m flows.demo`).

1. starts the sandbox Langfuse and TLM servers on 127.0.0.1 (no keys, no network needed);
2. creates traces the seed's way, through the real Langfuse SDK: an ``@observe`` function tagged
   ``TLM_eval_pipeline`` with the system prompt in trace metadata, for the seed's five trivia
   questions and a few hundred varied synthetic ones;
3. runs the ``evaluate-traces`` flow on Prefect's embedded server and prints the least
   trustworthy traces;
4. runs it again and shows that nothing was scored or written twice.

Sandbox scores are SYNTHETIC: the TLM sandbox is not a trust model. To score real traces, set
LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY, LANGFUSE_BASE_URL and CLEANLAB_TLM_API_KEY and run
``python -m flows.cli window --since 24h --tag <your tag>`` instead.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from sandbox.openai_app import TRIVIA

TAG = "TLM_eval_pipeline"
SYSTEM_PROMPT = "You are a trivia master."

# the seed notebook's five questions and the answers its model gave (shared with the sandbox)
SEED_TRIVIA: dict[str, str] = TRIVIA

_CAPITALS = {
    "Japan": "Tokyo",
    "Canada": "Ottawa",
    "Australia": "Canberra",
    "Brazil": "Brasília",
    "Kenya": "Nairobi",
    "Norway": "Oslo",
    "Egypt": "Cairo",
    "Peru": "Lima",
    "Vietnam": "Hanoi",
    "Morocco": "Rabat",
    "Chile": "Santiago",
    "Turkey": "Ankara",
}
_WRONG_CAPITALS = {
    "Australia": "Sydney",
    "Canada": "Toronto",
    "Turkey": "Istanbul",
    "Brazil": "Rio de Janeiro",
    "Morocco": "Casablanca",
}
_FACTS = [
    ("Who wrote 'Pride and Prejudice'?", "Jane Austen wrote 'Pride and Prejudice' (1813)."),
    ("What is the boiling point of water at sea level in Celsius?", "100 °C."),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au."),
    ("How many planets are in the Solar System?", "There are eight planets in the Solar System."),
    ("Which ocean is the largest?", "The Pacific Ocean is the largest."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci painted the Mona Lisa."),
    ("What is the speed of light in vacuum?", "About 299,792 kilometres per second."),
    ("Which element has atomic number 1?", "Hydrogen has atomic number 1."),
]


def synthetic_questions(n: int, seed: int = 7) -> list[tuple[str, str]]:
    """Varied (question, answer) pairs, some of them wrong on purpose."""
    rng = random.Random(seed)
    out: list[tuple[str, str]] = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            country = rng.choice(sorted(_CAPITALS))
            wrong = country in _WRONG_CAPITALS and rng.random() < 0.5
            city = _WRONG_CAPITALS[country] if wrong else _CAPITALS[country]
            out.append((f"What is the capital of {country}? (#{i})", f"The capital is {city}."))
        elif kind == 1:
            a, b = rng.randint(12, 999), rng.randint(12, 999)
            product = a * b if rng.random() < 0.8 else a * b + rng.randint(1, 99)
            out.append((f"What is {a} times {b}?", f"{a} times {b} is {product:,}."))
        else:
            question, fact = rng.choice(_FACTS)
            out.append((f"{question} (#{i})", fact))
    return out


def create_traces(questions: list[tuple[str, str]]) -> None:
    """Trace each answer the seed's way: ``@observe`` + tags and system prompt as metadata."""
    from langfuse import get_client, observe, propagate_attributes

    @observe(name="generate_answer")
    def generate_answer(trivia_question: str, answer: str) -> str:
        with propagate_attributes(
            tags=[TAG], metadata={"system_prompt": SYSTEM_PROMPT}, trace_name="trivia"
        ):
            return answer

    for question, answer in questions:
        generate_answer(question, answer)
    get_client().flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", type=int, default=300, help="synthetic traces to add")
    args = parser.parse_args(argv)

    from sandbox.langfuse_app import LangfuseSandbox
    from sandbox.tlm_app import TLMSandbox

    with LangfuseSandbox() as lf, TLMSandbox() as tlm:
        # before anything imports cleanlab_tlm (it reads its base URL once, at import)
        os.environ.update(lf.env() | tlm.env())
        os.environ.setdefault("TRUST_EVAL_SETTLE_LAG_S", "0")
        os.environ.setdefault("LANGFUSE_TRACING_ENVIRONMENT", "demo")
        print(f"Sandbox Langfuse: {lf.url}   Sandbox TLM: {tlm.base_url}")
        print("Sandbox scores are SYNTHETIC (a deterministic stand-in, not a trust model).\n")

        start = datetime.now(UTC) - timedelta(seconds=1)
        questions = list(SEED_TRIVIA.items()) + synthetic_questions(args.synthetic)
        create_traces(questions)
        end = datetime.now(UTC)
        print(f"Traced {len(questions)} answers through the Langfuse SDK (tag {TAG!r}).")

        from flows.evaluate_traces import evaluate_traces
        from tasks.report import text_table

        params: dict[str, Any] = {"window_start": start, "window_end": end, "tags": [TAG]}
        first = evaluate_traces(**params)
        print("\nRun 1:", _counts(first))
        print("\nLeast trustworthy answers, lowest first:\n" + text_table(first, limit=10))
        landed = len(lf.store.all_scores())
        print(
            f"\nScores in the sandbox Langfuse: {landed} (one per trace: "
            f"{landed == first.uploaded})"
        )

        second = evaluate_traces(**params)
        again = len(lf.store.all_scores())
        print("\nRun 2 (same window):", _counts(second))
        print(
            f"Scores in the sandbox Langfuse after run 2: {again} "
            f"({'nothing duplicated' if again == landed else 'DUPLICATES!'}), "
            f"TLM items sent in run 2: {second.tlm_requests}"
        )
        print(
            "\nTo run against real services: export LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY, "
            "LANGFUSE_BASE_URL and CLEANLAB_TLM_API_KEY (see README)."
        )
        ok = first.ok and second.ok and again == landed == first.uploaded
        return 0 if ok else 1


def _counts(report: Any) -> str:
    return f"fetched {report.fetched}: " + ", ".join(
        f"{k.replace('_', ' ')} {v}" for k, v in report.counts().items() if v
    )


if __name__ == "__main__":
    sys.exit(main())
