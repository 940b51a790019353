"""The offline demo: `make demo` (or `python -m sandbox.demo`).

1. starts the sandbox Langfuse, TLM and OpenAI servers on 127.0.0.1 (no keys, no network);
2. creates traces the way a real app does (sandbox/trivia_app.py): an ``@observe`` function tagged
   ``TLM_eval_pipeline`` that asks the model through ``langfuse.openai`` (system prompt
   ``You are a trivia master.``, also kept in trace metadata as the seed did), for the seed's
   five trivia questions and a few hundred varied synthetic ones;
3. runs the ``evaluate-traces`` flow on an embedded Prefect server (flows/prefect_server.py:
   its start-up shown as it goes, up to PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, 180 s
   unless set) and prints the least trustworthy traces;
4. runs it again and shows that nothing was scored or written twice;
5. plays a (simulated) reviewer on the "Low trust" annotation queue the first run filled, and
   reads the verdicts back: how often the low-trust flag was right.

Sandbox scores are SYNTHETIC: the TLM sandbox is not a trust model. To score real traces, set
LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY, LANGFUSE_BASE_URL and CLEANLAB_TLM_API_KEY and run
``python -m flows.cli window --since 24h --tag <your tag>`` instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from flows import prefect_server
from sandbox.langfuse import LangfuseSandbox
from sandbox.openai_app import OpenAISandbox
from sandbox.reviewer import play_reviewer
from sandbox.tlm import TLMSandbox
from sandbox.trivia_app import (
    SEED_QUESTIONS,
    TAG,
    rag_questions,
    synthetic_questions,
    trace_answers,
    trace_rag_answers,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", type=int, default=300, help="synthetic traces to add")
    parser.add_argument("--rag", type=int, default=40, help="traces of the RAG app to add")
    args = parser.parse_args(argv)
    # offline: no telemetry from Prefect's embedded server
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")

    # the Prefect server starts (in its own process) while the sandboxes start and the traces
    # are recorded; before anything imports Prefect, which reads PREFECT_API_URL once
    prefect = prefect_server.choose(None, print)
    try:
        return demo(args.synthetic, prefect, args.rag)
    finally:
        prefect.close()


def demo(synthetic: int, prefect: prefect_server.PrefectApi, rag: int = 40) -> int:
    with LangfuseSandbox() as lf, TLMSandbox() as tlm, OpenAISandbox() as oai:
        # before anything imports cleanlab_tlm (it reads its base URL once, at import)
        os.environ.update(lf.env() | tlm.env() | oai.env())
        os.environ.setdefault("TRUST_EVAL_SETTLE_LAG_S", "0")
        os.environ.setdefault("LANGFUSE_TRACING_ENVIRONMENT", "demo")
        print(f"Sandbox Langfuse: {lf.url}   TLM: {tlm.base_url}   OpenAI: {oai.base_url}")
        print("Sandbox scores are SYNTHETIC (a deterministic stand-in, not a trust model).\n")

        start = datetime.now(UTC) - timedelta(seconds=1)
        questions = SEED_QUESTIONS + synthetic_questions(synthetic)
        trace_answers(questions)
        trace_rag_answers(rag_questions(rag))
        end = datetime.now(UTC)
        print(
            f"Traced {len(questions)} answers: @observe + langfuse.openai, tag {TAG!r} "
            "(each model call is a GENERATION holding the full messages), and "
            f"{rag} answers of a RAG app (a retrieval step, a RETRIEVER observation, first)."
        )

        prefect.ready(print)
        from flows.evaluate_traces import evaluate_traces
        from flows.options import EvalOptions
        from tasks.report import text_table

        params: dict[str, Any] = {
            "window_start": start,
            "window_end": end,
            "tags": [TAG],
            "options": EvalOptions(review_queue="Low trust", rag_evals=True),
        }
        first = evaluate_traces(**params)
        print("\nRun 1:", _counts(first))
        print("\nLeast trustworthy answers, lowest first:\n" + text_table(first, limit=10))
        print(
            f"\nRAG evals: {first.rag_units} traces with retrieved context scored by "
            f"TrustworthyRAG (one call each), {first.no_context_units} without by TLM. Causes of "
            "low trust: "
            + ", ".join(f"{c} {n}" for c, n in sorted(first.causes.items(), key=lambda x: -x[1]))
        )
        print("\nThe seed notebook's five questions:")
        for score, question in seed_scores(lf):
            print(f"  {score:.3f}  {question}")
        landed = trust_scores(lf)
        print(
            f"\nTrust scores in the sandbox Langfuse: {landed} (one per trace: "
            f"{landed == first.uploaded}), {len(lf.store.all_scores())} scores in all "
            "(RAG evals, causes, the review queue's)"
        )

        second = evaluate_traces(**params)
        again = trust_scores(lf)
        print("\nRun 2 (same window):", _counts(second))
        print(
            f"Scores in the sandbox Langfuse after run 2: {again} "
            f"({'nothing duplicated' if again == landed else 'DUPLICATES!'}), "
            f"TLM items sent in run 2: {second.tlm_requests}"
        )
        reviewed = play_reviewer(lf)
        print(
            f"\nA reviewer (simulated) gave {reviewed} verdicts in the 'Low trust' queue "
            "(the low-trust traces, and every other one above the threshold as a spot check). "
            "Read back:"
        )
        from flows.review_loop import review_loop, verdicts_text

        loop = review_loop(tags=[TAG], options=params["options"])
        if loop.verdicts is not None:
            print(verdicts_text(loop.verdicts))
        print(
            "\nTo run against real services: export LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY, "
            "LANGFUSE_BASE_URL and CLEANLAB_TLM_API_KEY (see README)."
        )
        ok = first.ok and second.ok and again == landed == first.uploaded
        return 0 if ok else 1


def trust_scores(lf: Any) -> int:
    return sum(s.name == "trust_score" for s in lf.store.all_scores())


def seed_scores(lf: Any) -> list[tuple[float, str]]:
    """The sandbox's stored scores of the seed's questions, read back from the store."""
    rows = []
    for score in lf.store.all_scores():
        if score.name != "trust_score":
            continue
        root = [o for o in lf.store.observations_for(score.trace_id or "") if o.is_root]
        text = root[0].input or "" if root else ""
        rows += [(float(score.value), q) for q in SEED_QUESTIONS if json.dumps(q)[1:-1] in text]
    return sorted(rows)


def _counts(report: Any) -> str:
    return f"fetched {report.fetched}: " + ", ".join(
        f"{k.replace('_', ' ')} {v}" for k, v in report.counts().items() if v
    )


if __name__ == "__main__":
    sys.exit(main())
