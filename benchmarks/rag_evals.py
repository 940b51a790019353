"""RAG evals cost one TLM call per trace: the window flow with ``rag_evals`` on against the
same flow trust-only, on the same traces, at the same TLM latency.

Every trace of the window has retrieved context (a RETRIEVER observation), so with
``rag_evals`` each one goes to TrustworthyRAG; trust-only sends the same prompts (the context
in them) to TLM. Each repetition runs both, alternating which goes first, on a fresh sandbox
store and a fresh score ledger, and records the wall time of the flow run, the score calls per
trace (TrustworthyRAG ``score`` + TLM ``get_confidence_score``) and the explanation calls (low-
trust RAG answers at the medium preset; the sandbox serves those without latency).

    uv run python -m benchmarks.rag_evals --traces 2000 --repeat 3 --tlm-latency 0.05

Writes ``benchmarks/results/rag-<UTC stamp>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sandbox.langfuse import LangfuseSandbox
from sandbox.tlm import Latency, TLMSandbox

RESULTS = Path(__file__).resolve().parent / "results"
TAG = "rag_bench"
DAY = datetime(2025, 6, 2, tzinfo=UTC)


def seed(lf: LangfuseSandbox, n: int) -> None:
    step = timedelta(seconds=86_000 / n)
    for i in range(n):
        q = f"What does document {i} say about the opening hours of shop {i % 97}?"
        t = lf.store.add_trace(
            tags=(TAG,), start_time=DAY + i * step, input={"args": [q], "kwargs": {}},
            output=f"Shop {i % 97} opens at {8 + i % 3}:00 and closes at {18 + i % 4}:00.",
            metadata={"system_prompt": "Answer from the context."},
        )  # fmt: skip
        lf.store.add_observation(
            trace_id=t, type="RETRIEVER", name="search", start_time=DAY + i * step,
            input=q, output=[{"page_content": f"Shop {i % 97} opens at {8 + i % 3}:00 on "
                              f"weekdays and at {9 + i % 2}:00 on Saturdays."}],
        )  # fmt: skip


def one(n: int, rag: bool, latency: Latency) -> dict[str, Any]:
    """One flow run over a fresh store of ``n`` RAG traces; its figures."""
    from flows.evaluate_traces import evaluate_traces
    from flows.options import EvalOptions

    os.environ["TRUST_EVAL_LEDGER_URL"] = tempfile.mkdtemp(prefix="rag-bench-ledger-")
    with LangfuseSandbox() as lf:
        os.environ.update(lf.env())
        seed(lf, n)
        tlm = TLM_SANDBOX
        tlm.reset()
        tlm.set_latency(latency)
        opts = EvalOptions(rag_evals=rag, score_config=False)
        start = time.perf_counter()
        report = evaluate_traces(
            tags=[TAG], window_start=DAY, window_end=DAY + timedelta(days=1), options=opts
        )
        wall = time.perf_counter() - start
        score_calls = len(tlm.records("tlm.rag_score")) + len(tlm.records("tlm.score"))
        return {
            "rag_evals": rag,
            "traces": n,
            "uploaded": report.uploaded,
            "ok": report.ok,
            "wall_s": round(wall, 3),
            "ms_per_trace": round(wall / n * 1000, 3),
            "score_calls": score_calls,
            "score_calls_per_trace": round(score_calls / n, 4),
            "explain_calls": len(tlm.records("tlm.explain")),
            "scores_written": len(lf.store.all_scores()),
        }


TLM_SANDBOX: TLMSandbox


def main(argv: list[str] | None = None) -> int:
    global TLM_SANDBOX
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tlm-latency", type=float, default=0.05, help="seconds per item")
    parser.add_argument("--tlm-latency-p99", type=float, default=None, help="log-normal p99")
    args = parser.parse_args(argv)
    latency = (
        Latency.fixed(args.tlm_latency)
        if args.tlm_latency_p99 is None
        else Latency.lognormal(args.tlm_latency, args.tlm_latency_p99, seed=7)
    )
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ["TRUST_EVAL_SETTLE_LAG_S"] = "0"
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    with TLMSandbox() as tlm:
        TLM_SANDBOX = tlm
        os.environ.update(tlm.env())  # before cleanlab_tlm is imported
        from prefect.testing.utilities import prefect_test_harness

        runs: list[dict[str, Any]] = []
        with prefect_test_harness(server_startup_timeout=180):
            one(50, True, Latency.fixed(0.01))  # warm-up: imports, the first flow run
            for r in range(args.repeat):
                order = (False, True) if r % 2 == 0 else (True, False)
                for rag in order:
                    runs.append(one(args.traces, rag, latency) | {"repeat": r})
                    print(json.dumps(runs[-1]))
    summary = summarize(runs, args)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"rag-{stamp}.json").write_text(json.dumps(summary | {"runs": runs}, indent=2))
    (RESULTS / f"rag-{stamp}.md").write_text(markdown(summary, stamp))
    print(markdown(summary, stamp))
    return 0 if summary["calls_per_trace_is_1"] and summary["ratio_within_1_1"] else 1


def summarize(runs: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    def med(rag: bool, key: str) -> float:
        return float(statistics.median(r[key] for r in runs if r["rag_evals"] is rag))

    ratio = med(True, "ms_per_trace") / med(False, "ms_per_trace")
    return {
        "traces": args.traces,
        "repeat": args.repeat,
        "tlm_latency_s": args.tlm_latency,
        "tlm_latency_p99_s": args.tlm_latency_p99,
        "trust_only_ms_per_trace": med(False, "ms_per_trace"),
        "rag_ms_per_trace": med(True, "ms_per_trace"),
        "ratio": round(ratio, 3),
        "rag_score_calls_per_trace": med(True, "score_calls_per_trace"),
        "trust_only_score_calls_per_trace": med(False, "score_calls_per_trace"),
        "rag_explain_calls": med(True, "explain_calls"),
        "calls_per_trace_is_1": all(r["score_calls_per_trace"] == 1.0 for r in runs),
        "ratio_within_1_1": ratio <= 1.1,
        "all_ok": all(r["ok"] and r["uploaded"] == r["traces"] for r in runs),
    }


def markdown(s: dict[str, Any], stamp: str) -> str:
    return "\n".join(
        [
            f"# RAG evals against trust-only (run rag-{stamp})",
            "",
            f"{s['traces']} traces with retrieved context, TLM latency {s['tlm_latency_s']} s "
            + (
                "per item (fixed)"
                if s["tlm_latency_p99_s"] is None
                else f"mean per item, p99 {s['tlm_latency_p99_s']} s (log-normal)"
            )
            + f", {s['repeat']} repetitions each (alternating), medians.",
            "",
            "| | ms per trace | score calls per trace |",
            "|---|--:|--:|",
            f"| trust only | {s['trust_only_ms_per_trace']:.2f} | "
            f"{s['trust_only_score_calls_per_trace']} |",
            f"| rag_evals | {s['rag_ms_per_trace']:.2f} | {s['rag_score_calls_per_trace']} |",
            "",
            f"Time per trace, rag_evals over trust-only: **{s['ratio']}x** (target <= 1.1). "
            f"Explanation calls (low-trust RAG answers, medium preset; no latency in the "
            f"sandbox): {s['rag_explain_calls']:.0f}. Every run landed every trace: "
            f"{s['all_ok']}.",
            "",
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
