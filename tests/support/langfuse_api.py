"""Helpers over the Langfuse public API, for the contract tests of the Langfuse sandbox."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from langfuse import Langfuse
from langfuse.api import ConfigCategory, ObservationV2, ScoreConfig, ScoreConfigDataType

from sandbox.langfuse import LangfuseSandbox, iso, to_ms

NO_RETRY: dict[str, Any] = {"max_retries": 0}  # request_options: one attempt, its answer as is
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def fetch_all(client: Langfuse, **query: Any) -> Iterator[list[ObservationV2]]:
    """Yield every page of GET /api/public/v2/observations, following ``meta.cursor``."""
    cursor: str | None = None
    while True:
        page = client.api.observations.get_many(cursor=cursor, **query)
        yield page.data
        cursor = page.meta.cursor
        if not cursor:
            return


def score_body(trace_id: str, n: int, **extra: Any) -> dict[str, Any]:
    """Score ``n`` of a batch: id ``score-<n>``, value n/10, stamped ``n`` minutes after T0."""
    return {
        "id": f"score-{n}",
        "traceId": trace_id,
        "name": "trust",
        "value": n / 10,
        "dataType": "NUMERIC",
        "timestamp": iso(to_ms(T0 + timedelta(minutes=n))),
        "comment": f"explanation {n}",
        "metadata": {"n": n},
        **extra,
    }


def config_score(trace_id: str, name: str, value: Any, **extra: Any) -> dict[str, Any]:
    """A score body for the score-config tests: subject, name and value, plus ``extra``."""
    return {"traceId": trace_id, "name": name, "value": value, **extra}


def raw(
    sandbox: LangfuseSandbox, method: str, path: str, body: Any = None, **params: Any
) -> httpx.Response:
    """A plain HTTP call (for bodies the SDK's types would not let through)."""
    return httpx.request(
        method,
        f"{sandbox.url}{path}",
        json=body,
        params=params,
        auth=(sandbox.public_key, sandbox.secret_key),
    )


def make_configs(client: Langfuse) -> dict[str, ScoreConfig]:
    """One score config of each kind, created through the SDK."""
    api = client.api.score_configs
    return {
        "trust": api.create(
            name="trust",
            data_type=ScoreConfigDataType.NUMERIC,
            min_value=0,
            max_value=1,
            description="TLM trustworthiness",
        ),
        "verdict": api.create(
            name="verdict",
            data_type=ScoreConfigDataType.CATEGORICAL,
            categories=[
                ConfigCategory(label="correct", value=1),
                ConfigCategory(label="incorrect", value=0),
                ConfigCategory(label="unsure", value=0.5),
            ],
        ),
        "flag": api.create(name="flag", data_type=ScoreConfigDataType.BOOLEAN),
        "note": api.create(name="review note", data_type=ScoreConfigDataType.TEXT),
    }
