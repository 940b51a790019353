"""Serve the deployments from one process, no work pool or worker: ``python -m
deployments.serve`` (with PREFECT_API_URL pointing at a running ``prefect server``).

The deployments (names, entrypoints, parameters, schedules, concurrency) are read from
``prefect.yaml``, so ``daily``/``window``/``backfill`` behave exactly as when deployed to the
work pool. Runs execute as subprocesses of this process and inherit its environment: export the
credentials (LANGFUSE_*, CLEANLAB_TLM_API_KEY) here. Ctrl-C stops serving (and pauses the
schedules, Prefect's default for served deployments).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from prefect import Flow, serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
from prefect.schedules import Cron, Schedule

from flows.alert import notify_drift, notify_low_trust
from flows.backfill import backfill
from flows.daily import daily
from flows.evaluate_traces import evaluate_traces
from flows.report_range import report_range
from flows.review_loop import review_loop

REPO = Path(__file__).resolve().parents[1]
FLOWS: dict[str, Flow[Any, Any]] = {
    "flows/daily.py:daily": daily,
    "flows/evaluate_traces.py:evaluate_traces": evaluate_traces,
    "flows/backfill.py:backfill": backfill,
    "flows/alert.py:notify_low_trust": notify_low_trust,
    "flows/report_range.py:report_range": report_range,
    "flows/review_loop.py:review_loop": review_loop,
    "flows/alert.py:notify_drift": notify_drift,
}


def load_spec(path: Path = REPO / "prefect.yaml") -> list[dict[str, Any]]:
    spec = yaml.safe_load(path.read_text())
    deployments: list[dict[str, Any]] = spec["deployments"]
    return deployments


def schedules_of(dep: dict[str, Any]) -> list[Schedule]:
    out = []
    for s in dep.get("schedules") or []:
        if "cron" not in s:
            raise ValueError(f"{dep['name']}: only cron schedules are served, got {s}")
        out.append(
            Cron(
                s["cron"],
                timezone=s.get("timezone"),
                active=s.get("active", True),
                slug=s.get("slug"),
                parameters=s.get("parameters"),
            )
        )
    return out


def concurrency_of(dep: dict[str, Any]) -> int | ConcurrencyLimitConfig | None:
    limit = dep.get("concurrency_limit")
    if isinstance(limit, dict):
        return ConcurrencyLimitConfig(
            limit=limit["limit"],
            collision_strategy=ConcurrencyLimitStrategy(limit.get("collision_strategy", "ENQUEUE")),
        )
    return limit if isinstance(limit, int) else None


def runner_deployments(names: Sequence[str] = ()) -> list[RunnerDeployment]:
    out = []
    for dep in load_spec():
        if names and dep["name"] not in names:
            continue
        flow = FLOWS[dep["entrypoint"]]
        deployment = flow.to_deployment(
            name=dep["name"],
            description=dep.get("description"),
            tags=dep.get("tags"),
            parameters=dep.get("parameters"),
            schedules=schedules_of(dep),
            concurrency_limit=concurrency_of(dep),
            triggers=[DeploymentEventTrigger.model_validate(t) for t in dep.get("triggers") or []],
        )
        assert isinstance(deployment, RunnerDeployment)  # the sync call, not the coroutine
        out.append(deployment)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve the trust-score deployments.")
    parser.add_argument("names", nargs="*", help="deployments to serve (default: all)")
    parser.add_argument("--limit", type=int, default=None, help="max concurrent flow runs")
    args = parser.parse_args(argv)
    serve(*runner_deployments(args.names), limit=args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
