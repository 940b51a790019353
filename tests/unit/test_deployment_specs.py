"""prefect.yaml's deployments, and the same deployments built for ``serve``: no server needed."""

from __future__ import annotations

from uuid import uuid4

from prefect.client.schemas.schedules import CronSchedule

from deployments import local
from deployments.serve import runner_deployments
from tests.support.prefect_yaml import PREFECT_YAML, declared_deployments


def test_prefect_yaml_declares_the_deployments_without_secrets() -> None:
    deps = declared_deployments()
    assert set(deps) == {
        "daily",
        "window",
        "backfill",
        "report",
        "notify-low-trust",
        "review-loop",
        "notify-drift",
    }
    assert deps["daily"]["parameters"]["empty_days"] == 3
    (sched,) = deps["daily"]["schedules"]
    assert sched == {
        "cron": "15 0 * * *",
        "timezone": "UTC",
        "slug": "daily-previous-utc-day",
        "active": True,
    }
    assert "window_start" not in deps["daily"]["parameters"]  # derived from the scheduled time
    assert deps["window"]["schedules"] == [] and deps["backfill"]["schedules"] == []
    assert deps["backfill"]["entrypoint"] == "flows/backfill.py:backfill"
    assert deps["report"]["entrypoint"] == "flows/report_range.py:report_range"
    assert deps["report"]["schedules"] == [] and deps["report"]["parameters"]["since"] == "7d"
    assert all(d["work_pool"]["name"] == local.POOL for d in deps.values())
    (trigger,) = deps["notify-low-trust"]["triggers"]
    assert trigger["expect"] == ["trust-eval.window.low-trust", "trust-eval.backfill.low-trust"]
    assert trigger["match"] == {
        "prefect.resource.id": ["trust-eval.window.*", "trust-eval.backfill.*"]
    }
    (drift,) = deps["notify-drift"]["triggers"]
    assert drift["expect"] == ["trust.drift"]
    assert drift["match"] == {"prefect.resource.id": "trust-eval.stream.*"}
    for t in (trigger, drift):  # the automation says what it does (not "…__automation_1")
        assert t["name"].endswith(": send the alert") and len(t["description"]) > 80
    assert deps["review-loop"]["entrypoint"] == "flows/review_loop.py:review_loop"
    text = PREFECT_YAML.read_text()
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "KEY" not in body and "SECRET" not in body and "env:" not in body


def test_serve_builds_the_same_deployments() -> None:
    deps = declared_deployments()
    served = {d.name: d for d in runner_deployments()}
    assert set(served) == set(deps)
    for name, d in served.items():
        assert d.parameters == deps[name].get("parameters", {})
        assert d.entrypoint == deps[name]["entrypoint"]
    (daily,) = served["daily"].schedules or []
    assert isinstance(daily.schedule, CronSchedule)
    assert daily.schedule.cron == "15 0 * * *"
    assert daily.slug == "daily-previous-utc-day" and daily.active
    assert served["window"].schedules == [] and served["backfill"].schedules == []
    (trigger,) = served["notify-low-trust"].triggers
    trigger.set_deployment_id(uuid4())  # as `prefect deploy` does before creating it
    automation = trigger.as_automation()
    assert automation.name == "Low trust: send the alert"
    assert automation.description.startswith("When a window run's")
