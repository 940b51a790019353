"""The low-trust alert reaches people through a Prefect notification block (a local webhook);
a backfill sends one for its whole range."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from fastapi import FastAPI, Request

from flows.alert import alert_message, notify_low_trust
from flows.backfill import backfill
from flows.options import EvalOptions
from flows.publish import EVENT_RANGE_LOW_TRUST
from sandbox.langfuse import LangfuseSandbox
from sandbox.runner import ServerThread
from sandbox.tlm import TLMSandbox
from tasks.report import EVENT_EVALUATED, EVENT_LOW_TRUST
from tasks.windows import midnight
from tests.support.seeding import seed, stream_of

pytestmark = pytest.mark.usefixtures("prefect_harness")

FIGURES: dict[str, Any] = {
    "window_start": "2026-11-27T00:00:00+00:00",
    "window_end": "2026-11-28T00:00:00+00:00",
    "tags": ["support-bot"],
    "score_name": "trust_score",
    "fetched": 120,
    "uploaded": 100,
    "skipped": 20,
    "failures": 0,
    "low_trust_count": 31,
    "low_trust_share": 0.31,
    "mean_score": 0.612,
    "alert_low_trust_share": 0.2,
}


def test_alert_message_states_the_figures() -> None:
    subject, body = alert_message(FIGURES)
    assert subject == "Low trust: 31% of answers tagged support-bot"
    assert "31 of 100 scored answers" in body and "alert above 20%" in body
    assert "Mean trust: 0.612." in body


def test_notify_sends_through_a_notification_block() -> None:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    received: list[dict[str, Any]] = []
    app = FastAPI()

    @app.post("/hook")
    async def hook(request: Request) -> dict[str, str]:
        received.append(await request.json())
        return {"ok": "yes"}

    with ServerThread(app) as server:
        CustomWebhookNotificationBlock(
            name="test-hook",
            url=f"{server.url}/hook",
            json_data={"title": "{{subject}}", "text": "{{body}}"},
            allow_private_urls=True,
            headers=None,
            cookies=None,
        ).save("trust-alerts-test", overwrite=True)
        body = notify_low_trust(FIGURES, block="custom-webhook/trust-alerts-test")

    assert received == [{"title": "Low trust: 31% of answers tagged support-bot", "text": body}]


def test_a_block_that_cannot_notify_is_refused() -> None:
    from prefect.blocks.system import Secret
    from pydantic import SecretStr

    Secret(value=SecretStr("x")).save("not-a-notifier", overwrite=True)
    with pytest.raises(TypeError, match="not a notification block"):
        notify_low_trust(FIGURES, block="secret/not-a-notifier")


# --- a backfill alerts once for its range -------------------------------------------------------


def _stored(stream_key: str, names: list[str]) -> list[dict[str, Any]]:
    """The stream's window and backfill events of ``names``, as the Prefect server stored them."""
    from prefect.client.orchestration import get_client

    async def read() -> list[dict[str, Any]]:
        async with get_client() as client:
            resp = await client._client.post(
                "/events/filter",
                json={
                    "filter": {
                        "event": {"name": names},
                        "resource": {
                            "id_prefix": [
                                f"trust-eval.window.{stream_key}.",
                                f"trust-eval.backfill.{stream_key}.",
                            ]
                        },
                    },
                    "limit": 50,
                },
            )
            resp.raise_for_status()
            return list(resp.json()["events"])

    return asyncio.run(read())


def test_a_backfill_of_ten_days_nine_over_the_share_sends_one_alert_with_nine_day_links(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    lf, tag = langfuse_sandbox, f"alert-{uuid4().hex[:8]}"
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    days = [yesterday - timedelta(days=i) for i in range(9, -1, -1)]
    quiet = days[4]
    for k, day in enumerate(days):  # 10 a day: half below 0.5 (50% > 20%), none on the quiet day
        scores = [0.8] * 10 if day == quiet else [0.2] * 5 + [0.8] * 5
        start = midnight(day) + timedelta(hours=1)
        for i, s in enumerate(scores):
            seed(lf, 1, tags=(tag,), start=start + timedelta(minutes=5 * i),
                 question=f"Question {10 * k + i} [tlm:trustworthiness={s}]?")  # fmt: skip

    summary = backfill(
        days[0], days[-1], tags=[tag], options=EvalOptions(alert_low_trust_share=0.2)
    )
    assert summary.ok and summary.total("uploaded") == 100
    key = stream_of(lf, [tag]).key

    deadline = time.monotonic() + 30  # events are stored within seconds, in batches
    while time.monotonic() < deadline:
        evaluated = _stored(key, [EVENT_EVALUATED])
        alerts = _stored(key, [EVENT_LOW_TRUST, EVENT_RANGE_LOW_TRUST])
        if len(evaluated) >= 10 and alerts:
            break
        time.sleep(0.3)
    assert len(evaluated) == 10  # every day reported its figures...
    (alert,) = alerts  # ...and only the backfill alerted: once, for the range
    assert alert["event"] == EVENT_RANGE_LOW_TRUST
    figures = alert["payload"]
    assert [d["day"] for d in figures["days"]] == [d.isoformat() for d in days if d != quiet]
    runs = {d.day.isoformat(): d.report.flow_run_id for d in summary.days if d.report}
    for d in figures["days"]:
        assert d["low_trust_share"] == 0.5 and d["run_url"].endswith(runs[d["day"]])
    assert figures["run_url"].endswith(str(summary.flow_run_id))
    assert figures["table_url"] and figures["summary_url"]
    assert figures["langfuse_traces_url"].endswith(f"/project/{lf.store.project_id}/traces")

    sent = notify_through_a_hook(figures)  # what people get: one message, nine day links
    (message,) = sent
    assert message["title"] == f"Low trust on 9 of 10 days ({days[0]} → {days[-1]}), " \
        f"answers tagged {tag}"  # fmt: skip
    lines = message["text"].splitlines()
    day_lines = [line for line in lines if line.startswith("- ")]
    assert len(day_lines) == 9 and all("/runs/flow-run/" in line for line in day_lines)
    assert quiet.isoformat() not in message["text"]
    for what in ("Run: ", "Lowest-trust table: ", "Traces in Langfuse: "):
        assert any(line.startswith(what + "http") for line in lines), what


def notify_through_a_hook(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """Run notify-low-trust with ``figures`` through a webhook block: what the hook received."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    received: list[dict[str, Any]] = []
    app = FastAPI()

    @app.post("/hook")
    async def hook(request: Request) -> dict[str, str]:
        received.append(await request.json())
        return {"ok": "yes"}

    with ServerThread(app) as server:
        CustomWebhookNotificationBlock(
            name="range-hook",
            url=f"{server.url}/hook",
            json_data={"title": "{{subject}}", "text": "{{body}}"},
            allow_private_urls=True,
            headers=None,
            cookies=None,
        ).save("trust-alerts-range", overwrite=True)
        notify_low_trust(figures, block="custom-webhook/trust-alerts-range")
    return received


def test_a_window_alert_links_its_run_table_and_traces() -> None:
    links = {
        "run_url": "http://ui/runs/flow-run/1",
        "table_url": "http://ui/artifacts/artifact/2",
        "langfuse_traces_url": "http://lf/project/p/traces",
    }
    _, body = alert_message(FIGURES | links)
    assert body.splitlines()[-3:] == [
        "Run: http://ui/runs/flow-run/1",
        "Lowest-trust table: http://ui/artifacts/artifact/2",
        "Traces in Langfuse: http://lf/project/p/traces",
    ]
