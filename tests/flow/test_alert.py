"""The low-trust alert reaches people through a Prefect notification block (a local webhook)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI, Request

from flows.alert import alert_message, notify_low_trust
from sandbox.runner import ServerThread

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
