"""Closing the review loop: a test plays the reviewer in the Langfuse sandbox's annotation queue
(what Langfuse's UI writes: ANNOTATION scores), the loop reads the verdicts back through the
real SDK and publishes the flag's precision; a stream's days side by side, drift events, and
the daily run that will not stay green on nothing."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs
from uuid import uuid4

import pytest
from langfuse import Langfuse
from langfuse.api import ScoreConfigDataType
from prefect.exceptions import ParameterTypeError

from flows.backfill import backfill
from flows.cli import main
from flows.daily import NothingToEvaluate, daily
from flows.evaluate_traces import EvaluationFailed, evaluate_traces
from flows.evaluated_days import read_days
from flows.options import EvalOptions
from flows.review_loop import PRECISION_KEY, review_loop
from flows.trend import EVENT_DRIFT, TREND_KEY
from sandbox.langfuse import LangfuseSandbox
from sandbox.tlm import TLMSandbox
from tasks.errors import ConfigError
from tasks.stream import Stream
from tasks.windows import midnight
from tests.support.seeding import seed, stream_of
from tests.unit.test_review_rules import BY_HAND, UNITS

pytestmark = pytest.mark.usefixtures("prefect_harness")

LOG = logging.getLogger("test")
TODAY = datetime.now(UTC).date()
YESTERDAY = TODAY - timedelta(days=1)


def seed_scores(
    lf: LangfuseSandbox, tag: str, day: date, scores: list[float], first: int = 0
) -> list[str]:
    """A trace per score on ``day``, each forcing its TLM score with a sandbox marker."""
    start = midnight(day) + timedelta(hours=1)
    return [
        seed(lf, 1, tags=(tag,), start=start + timedelta(minutes=5 * i),
             question=f"Question {first + i} [tlm:trustworthiness={s}]?")[0]
        for i, s in enumerate(scores)
    ]  # fmt: skip


def latest_artifact(key: str) -> Any:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        by_key = ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        found = client.read_artifacts(artifact_filter=by_key)
    assert found, f"no artifact {key}"
    return max(found, key=lambda a: a.created or datetime.min.replace(tzinfo=UTC))


def precision_markdown(stream: Stream) -> str:
    return str(latest_artifact(stream.artifact_key(PRECISION_KEY)).data)


# --- the reviewer's verdicts -----------------------------------------------------------------


def test_a_reviewer_s_verdicts_give_the_flag_s_precision_and_a_suggested_threshold(
    langfuse_sandbox: LangfuseSandbox,
    tlm: TLMSandbox,
    langfuse_client: Langfuse,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lf, tag = langfuse_sandbox, f"review-{uuid4().hex[:8]}"
    ids = seed_scores(lf, tag, YESTERDAY, [score for score, _ in UNITS])
    window = {"window_start": midnight(YESTERDAY), "window_end": midnight(TODAY)}
    opts = EvalOptions(review_queue="Low trust")
    report = evaluate_traces(tags=[tag], options=opts, **window)
    assert report.uploaded == 30 and report.queued_for_review == 15  # every score below 0.5

    # the queue the run created offers the verdict: a CATEGORICAL correct/incorrect config
    (queue,) = lf.store.annotation_queues()
    configs = {c.name: c for c in lf.store.score_configs()}
    verdict = configs["trust_verdict"]
    assert verdict.data_type == "CATEGORICAL" and verdict.id in queue.score_config_ids
    assert {c["label"]: c["value"] for c in verdict.categories or []} == {
        "incorrect": 0, "correct": 1,
    }  # fmt: skip
    items = {i.object_id: i.id for i in lf.store.queue_items(queue.id)}
    api = langfuse_client.api.annotation_queues
    for trace_id, (_, said) in zip(ids, UNITS, strict=True):  # spot checks of unflagged ones
        if said is not None and trace_id not in items:
            items[trace_id] = api.create_queue_item(
                queue.id, object_id=trace_id, object_type="TRACE"
            ).id

    def review(which: range, flip: dict[int, bool] | None = None) -> None:
        for i in which:
            correct = (flip or {}).get(i, UNITS[i][1])
            label = "correct" if correct else "incorrect"
            lf.store.annotate(queue.id, items[ids[i]], value=label, config_id=verdict.id)

    # day 1: the 6 lowest flagged ones and 3 unflagged; one of those wrongly marked incorrect
    review(range(6))
    review(range(12, 15), flip={14: False})
    stream = stream_of(lf, [tag])
    first = review_loop(tags=[tag], options=opts).verdicts
    assert first is not None
    assert (first.reviewed, first.flagged_reviewed, first.flagged_incorrect) == (9, 6, 6)
    assert (first.unflagged_reviewed, first.unflagged_incorrect) == (3, 3)
    text = precision_markdown(stream)
    assert "Too few verdicts to conclude: 6 flagged ones reviewed, at least 10 needed" in text

    # day 2: the rest; the wrong verdict corrected (it updates the first: counted once)
    lf.advance_clock(86400)
    review(range(6, 20))
    lf.faults.reset_log()
    result = review_loop(tags=[tag], options=opts)
    v = result.verdicts
    assert v is not None and (v.scored, v.reviewed, v.unreadable) == (30, 20, 0)
    assert (v.flagged_reviewed, v.flagged_incorrect) == (12, 10)
    assert (v.unflagged_reviewed, v.unflagged_incorrect) == (8, 3)
    assert {r.threshold: (r.would_flag, r.reviewed, r.incorrect) for r in v.table} == BY_HAND
    assert v.suggestion == 0.7
    text = precision_markdown(stream)
    assert "Precision of the flag (score below 0.5): 10/12 = 83%" in text
    assert "Reviewed but not flagged, marked incorrect: 3 of 8" in text
    assert "Suggested threshold: 0.7" in text and "Too few" not in text
    rows = [line for line in text.splitlines() if line.startswith("| 0.")]
    assert rows[4] == "| 0.5 ◀ now | 15 | 12 | 10 | 83% |"
    assert rows[6] == "| 0.7 ◀ suggested | 21 | 16 | 13 | 81% |"
    assert rows[0] == "| 0.1 | 3 | 2 | 2 | 100% (few) |"
    # one page of our 30 scores, then one GET for the verdicts on their 30 traces
    gets = [parse_qs(r.query) for r in lf.faults.requests if r.endpoint == "scores.list"]
    assert len(gets) == v.langfuse_requests == 2
    assert (gets[0]["source"], gets[0]["name"]) == (["API"], ["trust_score"])
    assert (gets[1]["source"], gets[1]["name"]) == (["ANNOTATION"], ["trust_verdict"])
    assert sorted(gets[1]["traceId"][0].split(",")) == sorted(ids)
    # the CLI reads the same figures
    assert main(["verdicts", "--tag", tag, "--review-queue", "Low trust"]) == 0
    out = capsys.readouterr().out
    assert "Precision of the flag (score below 0.5): 10/12 = 83%" in out
    assert "Suggested threshold: 0.7" in out


def test_boolean_and_numeric_verdicts_are_read_as_documented(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, langfuse_client: Langfuse
) -> None:
    lf, tag = langfuse_sandbox, f"review-{uuid4().hex[:8]}"
    ids = seed_scores(lf, tag, YESTERDAY, [0.1, 0.2, 0.3, 0.9])
    evaluate_traces(tags=[tag], window_start=midnight(YESTERDAY), window_end=midnight(TODAY))
    configs = langfuse_client.api.score_configs
    flag = configs.create(name="answer_ok", data_type=ScoreConfigDataType.BOOLEAN)
    queue = langfuse_client.api.annotation_queues.create_queue(name="q", score_config_ids=[flag.id])
    items = [lf.store.add_queue_item(queue.id, object_id=t, object_type="TRACE").id for t in ids]
    for item, ok in zip(items, [False, False, True, True], strict=True):
        lf.store.annotate(queue.id, item, value=ok, config_id=flag.id)
    v = review_loop(tags=[tag], options=EvalOptions(review_score="answer_ok")).verdicts
    assert v is not None and (v.flagged_reviewed, v.flagged_incorrect) == (3, 2)
    assert (v.unflagged_reviewed, v.unflagged_incorrect) == (1, 0)
    # NUMERIC 0/1, given without a config; a 0.5 says neither and is left out
    for item, value in zip(items, [0, 1, 0.5, 1], strict=True):
        lf.store.annotate(queue.id, item, value=value, name="answer_num", data_type="NUMERIC")
    v = review_loop(tags=[tag], options=EvalOptions(review_score="answer_num")).verdicts
    assert v is not None and (v.reviewed, v.unreadable, v.flagged_incorrect) == (3, 1, 1)


# --- refused before anything is paid ------------------------------------------------------------


def test_bad_review_input_is_refused_in_one_line_before_any_call(
    langfuse_sandbox: LangfuseSandbox,
    tlm: TLMSandbox,
    langfuse_client: Langfuse,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lf, tag = langfuse_sandbox, f"review-{uuid4().hex[:8]}"
    seed_scores(lf, tag, YESTERDAY, [0.1, 0.9])
    bad: list[tuple[dict[str, Any], str]] = [
        ({"options": {"review_days": 0}}, "review_days"),
        ({"options": {"review_target_precision": 0}}, "review_target_precision"),
        ({"options": {"review_target_precision": 1.5}}, "review_target_precision"),
    ]
    for given, says in bad:
        for flow in (review_loop, daily, evaluate_traces):  # the flows' own parameter check
            with pytest.raises((ConfigError, ParameterTypeError), match=says):
                flow(tags=[tag], **given)
        flag, value = next(iter(given["options"].items()))
        for command in ("verdicts", "window --since 1h"):  # the CLI: one line, exit 2
            argv = [*command.split(), "--tag", tag, f"--{flag.replace('_', '-')}", str(value)]
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert err.startswith("error: options.") and says in err and err.count("\n") == 1
    with pytest.raises(ParameterTypeError, match="empty_days"):  # the form's bound: 0 to 31
        daily(tags=[tag], empty_days=-1)
    assert lf.faults.requests == [] and tlm.prompts == []  # not one call

    # a review score whose existing config cannot say correct/incorrect: refused after the
    # config is read, before any trace is read or any TLM item paid
    langfuse_client.api.score_configs.create(
        name="trust_verdict", data_type=ScoreConfigDataType.TEXT
    )
    queued = EvalOptions(review_queue="Low trust")
    says = "review_score 'trust_verdict' names a TEXT config in Langfuse"
    with pytest.raises(EvaluationFailed, match=says) as failed:
        evaluate_traces(tags=[tag], options=queued, window_start=midnight(YESTERDAY),
                        window_end=midnight(TODAY))  # fmt: skip
    assert failed.value.report.fetched == 0
    for flow in (daily, review_loop):
        with pytest.raises(ConfigError, match=says) as info:
            flow(tags=[tag], options=queued)
        assert "\n" not in str(info.value)
    assert tlm.prompts == [] and lf.store.all_scores() == []
    assert lf.faults.count("observations") == 0 and lf.faults.count("scores.list") == 0


# --- trust over time ---------------------------------------------------------------------------


def drift_events(stream: Stream, expect: int, wait_s: float = 20.0) -> list[dict[str, Any]]:
    """The stream's drift events as the Prefect server stored them (they arrive within
    seconds): once ``expect`` are there, or after ``wait_s``."""
    from prefect.client.orchestration import get_client

    async def read() -> list[dict[str, Any]]:
        async with get_client() as client:
            resp = await client._client.post(
                "/events/filter",
                json={
                    "filter": {
                        "event": {"name": [EVENT_DRIFT]},
                        "resource": {"id": [f"trust-eval.stream.{stream.key}"]},
                    },
                    "limit": 50,
                },
            )
            resp.raise_for_status()
            return list(resp.json()["events"])

    deadline = time.monotonic() + wait_s
    while True:
        found = asyncio.run(read())
        if len(found) >= expect or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


N_DAYS = 12  # a day's drift needs 3 days of history (its baseline: the 7 before it)


def trend_table(stream: Stream) -> list[dict[str, Any]]:
    data = latest_artifact(stream.artifact_key(TREND_KEY)).data
    rows = json.loads(data) if isinstance(data, str) else data
    assert isinstance(rows, list)
    return rows


def test_days_side_by_side_a_backfill_replaces_rows_and_a_jump_drifts_once(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    lf, tag = langfuse_sandbox, f"trend-{uuid4().hex[:8]}"
    days = [TODAY - timedelta(days=i) for i in range(N_DAYS, 0, -1)]
    jump = days[8]  # after a full baseline of 7 days
    for k, day in enumerate(days):  # 10 a day: 1 or 2 low-trust (noise of 10 points), then 7
        low = 7 if day == jump else 1 + k % 2
        seed_scores(lf, tag, day, [0.2] * low + [0.8] * (10 - low), first=10 * k)
    first = backfill(days[0], days[-1], tags=[tag], max_concurrency=4)
    assert first.ok and first.total("uploaded") == 10 * N_DAYS
    stream = stream_of(lf, [tag])

    rows = trend_table(stream)
    assert [r["day"] for r in rows] == [d.isoformat() for d in reversed(days)]
    by_day = {r["day"]: r for r in rows}
    assert by_day[jump.isoformat()]["low-trust share"] == "70.0%"
    assert by_day[jump.isoformat()]["drift"].startswith("▲ +")
    assert [r["day"] for r in rows if r["drift"]] == [jump.isoformat()]
    records = read_days(stream, days, LOG)
    assert [d for d, r in records.items() if r.drift and r.drift.fired] == [jump]
    assert sum(r.drift is not None for r in records.values()) == N_DAYS - 3  # 3 lack history
    (event,) = drift_events(stream, expect=1)
    payload = event["payload"]
    assert payload["day"] == jump.isoformat() and payload["low_trust_share"] == 0.7
    assert payload["points"] > 10 and payload["drift_points"] == 10.0
    assert payload["low_trust_count"] == 7 and payload["scored"] == 10
    assert payload["flow_run_id"] == records[jump].flow_run_id
    assert payload["langfuse_traces_url"].endswith(f"/project/{stream.project}/traces")
    chart = str(latest_artifact(stream.artifact_key("trust-trend-chart")).data)
    assert "low-trust share" in chart and f"**Drift:** {jump}" in chart

    # five days again, the jump among them: their rows are replaced, nothing fires again
    sent = len(tlm.prompts)
    again = backfill(days[6], days[10], tags=[tag], max_concurrency=2)
    assert again.ok and again.total("uploaded") == 0 and len(tlm.prompts) == sent
    rows = trend_table(stream)
    assert len(rows) == N_DAYS and len({r["day"] for r in rows}) == N_DAYS
    for d in again.days:
        assert d.report is not None and d.report.flow_run_id is not None
        row = next(r for r in rows if r["day"] == d.day.isoformat())
        assert d.report.flow_run_id[:8] in row["run"]  # the re-run's row, not a second one
        assert (row["traces"], row["scored"]) == (10, 10)  # read back: already scored
    assert review_loop(tags=[tag]).drift_days == []
    assert len(drift_events(stream, expect=2, wait_s=5)) == 1  # still the one event


def scheduled_daily(day: date, **params: Any) -> tuple[Any, Any]:
    """The daily run scheduled for the morning after ``day`` (a flow run whose scheduled time
    the server knows, run in this process): (its result or the error it raised, the run read
    back)."""
    from prefect import get_client
    from prefect.flow_engine import run_flow
    from prefect.states import Scheduled

    due = midnight(day + timedelta(days=1)) + timedelta(minutes=15)
    # a run due later would wait for its time on the server, not fail
    assert due < datetime.now(UTC), f"the daily run for {day} is not due before {due}"
    with get_client(sync_client=True) as client:
        run = client.create_flow_run(daily, parameters=params, state=Scheduled(scheduled_time=due))
        try:
            outcome: Any = run_flow(daily, flow_run=run, parameters=params)
        except Exception as err:
            outcome = err
        return outcome, client.read_flow_run(run.id)


def test_the_daily_run_fails_on_the_third_empty_day_not_before(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    lf, tag = langfuse_sandbox, f"daily-{uuid4().hex[:8]}"
    # the run for days[2] is due at 00:15 the morning after: past even when the suite crosses
    # midnight UTC (a run due later is made to wait for its time by the server)
    days = [TODAY - timedelta(days=i) for i in (4, 3, 2)]
    for day in days:
        seed_scores(lf, tag, day, [0.3, 0.7])
    typo = tag.replace("daily", "dialy")  # the deployment's tag, mistyped
    params = {"tags": [typo], "catch_up_days": 0}

    for day in days[:2]:
        summary, run = scheduled_daily(day, **params)
        assert run.state.is_completed() and [d.day for d in summary.days] == [day]
    error, run = scheduled_daily(days[2], **params)
    assert isinstance(error, NothingToEvaluate)
    message = (
        f"no trace tagged {typo} in the last 3 days ({days[0]} → {days[2]}): check the tags "
        "(renamed?) and the Langfuse project; empty_days=0 allows empty days"
    )
    assert str(error) == message and run.state.is_failed() and run.state.message == message
    for more in ({"empty_days": 0}, {"empty_days": 4}):  # off; a 4th empty day is not known
        _, run = scheduled_daily(days[2], **params, **more)
        assert run.state.is_completed()
    assert tlm.prompts == []
    fixed, _ = scheduled_daily(days[2], tags=[tag], catch_up_days=0)  # the tag put right
    assert fixed.total("uploaded") == 2
