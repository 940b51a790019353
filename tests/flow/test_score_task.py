"""score_task inside a flow: chunks overlap on one quoted TLMEngine; a closed engine fails."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from prefect import flow
from prefect.utilities.annotations import quote
from pydantic import SecretStr

from sandbox.tlm import TLMSandbox
from tasks.config import TLMSettings
from tasks.models import Pair
from tasks.score import ScoreResult, TLMEngine, score_task

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("prefect_harness")]

T0 = datetime(2025, 6, 1, tzinfo=UTC)


def pairs(prefix: str, n: int) -> list[Pair]:
    return [
        Pair(f"{prefix}-{i}", T0, "t", None, f"{prefix} question {i}?", "An answer.", "chat")
        for i in range(n)
    ]


@pytest.fixture
def engine(tlm: TLMSandbox) -> Iterator[TLMEngine]:
    cfg = TLMSettings(api_key=SecretStr(tlm.api_key))
    with TLMEngine(cfg, quality_preset="medium", timeout_s=10) as eng:
        yield eng


def test_score_task_overlaps_chunks_with_a_quoted_engine(
    tlm: TLMSandbox, engine: TLMEngine
) -> None:
    closed = TLMEngine(
        TLMSettings(api_key=SecretStr(tlm.api_key)), quality_preset="medium", timeout_s=5
    )
    closed.close()

    @flow
    def two_chunks() -> list[ScoreResult]:
        futures = [
            score_task.submit(cast(Any, quote(pairs(f"f{n}", 20))), cast(Any, quote(engine)), n)
            for n in (1, 2)
        ]
        late = score_task(cast(Any, quote(pairs("late", 2))), cast(Any, quote(closed)), 3)
        return [f.result() for f in futures] + [late]

    tlm.set_latency(0.05)
    *results, late = two_chunks()
    assert [len(r.scored) for r in results] == [20, 20]
    assert all(r.fatal is None for r in results)
    assert late.fatal == "the TLM call failed: tlm_error: the TLM engine is closed"
    assert late.all_failed and len(late.failed) == 2 and late.tlm_requests == 0
