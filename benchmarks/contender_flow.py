"""Our flow: ``evaluate_traces`` on Prefect's ephemeral server (a temporary PREFECT_HOME).

The server is started before the clock starts (in production it is already running); the
timed part is the flow call itself. Prefect task runs are counted through the Prefect API
(``POST /task_runs/count`` for this flow run). The peak RSS is this process's own; the
ephemeral server's is reported apart (``aux_peak_rss_mb``).
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.child import Clock, Spec, main, peak_rss_mb


def count_task_runs(flow_run_id: str, *, settle_s: float = 30.0) -> int | None:
    """Task runs of the flow run, once the server has recorded them (they arrive as events)."""
    from prefect.client.orchestration import get_client

    body = {"flow_runs": {"id": {"any_": [flow_run_id]}}}
    last: int | None = None
    deadline = time.monotonic() + settle_s
    with get_client(sync_client=True) as client:
        while True:
            resp = client.request("POST", "/task_runs/count", json=body)
            resp.raise_for_status()
            n = int(resp.json())
            if (n == last and n > 0) or time.monotonic() > deadline:
                return n
            last = n
            time.sleep(1.0)


def prefect_server_peak_rss_mb() -> float | None:
    from prefect.server.api.server import SubprocessASGIServer

    for server in SubprocessASGIServer._instances.values():
        if server.server_process is not None:
            return peak_rss_mb(server.server_process.pid)
    return None


def work(spec: Spec, figures: dict[str, Any]) -> None:
    from prefect.client.orchestration import get_client

    t_warm = time.perf_counter()
    with get_client(sync_client=True) as client:  # starts the ephemeral server
        client.hello()
    from flows.evaluate_traces import evaluate_traces
    from flows.options import EvalOptions

    figures["server_start_s"] = round(time.perf_counter() - t_warm, 3)
    clock = Clock()
    state = evaluate_traces(
        window_start=spec.window_start,
        window_end=spec.window_end,
        tags=[spec.tag],
        options=EvalOptions(score_name=spec.score_name, **spec.options),
        return_state=True,
    )
    clock.stop(figures)
    figures["flow_state"] = state.type.value
    outcome: Any = state.result(raise_on_failure=False)
    if isinstance(outcome, BaseException):
        figures["error"] = f"{type(outcome).__name__}: {str(outcome)[:500]}"
        outcome = getattr(outcome, "report", None)  # EvaluationFailed carries the report
    report: Any = outcome
    if report is not None:
        figures["fetched"] = report.fetched
        figures["scored"] = report.uploaded
        figures["report_counts"] = report.counts()
        figures["report_langfuse_requests"] = report.langfuse_requests
        figures["report_tlm_requests"] = report.tlm_requests
        figures["stages"] = {k: v.model_dump() for k, v in report.stages.items()}
        every = report.explain_all
        figures["explain_all"] = every.model_dump() if every is not None else None
        figures["explain_all_preset"] = report.explain_all_preset
        figures["explanations_failed"] = report.explanations_failed
        figures["low_trust_count"] = report.low_trust_count
    flow_run_id = state.state_details.flow_run_id
    figures["prefect_task_runs"] = count_task_runs(str(flow_run_id)) if flow_run_id else None
    figures["aux_peak_rss_mb"] = prefect_server_peak_rss_mb()


if __name__ == "__main__":
    main(work)
