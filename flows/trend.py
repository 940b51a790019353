"""A stream's trust over time, published: the trend table and chart artifacts, and the
``trust.drift`` event for a day whose low-trust share jumps.

It reads the days' records (``flows/evaluated_days.py``) with one request, whatever the volume:
O(days), never a re-read of the scores. The records are what the runs over each whole day
wrote, so a day re-run or backfilled replaces its row. Each day is judged for drift once
(``tasks/trend.py: judge``): its verdict is written into its record before the event is sent,
so no later run sends it again (at most once: an event lost on the way is logged, not resent).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event

from flows.evaluated_days import KEEP_DAYS, mark_drift, read_days
from flows.options import EvalOptions
from flows.publish import artifact_url, run_url
from tasks.config import RunLogger
from tasks.report import md_code, md_escape, md_link
from tasks.retry import describe
from tasks.stream import Stream
from tasks.trend import BASELINE_DAYS, DayRecord, chart_markdown, judge, pct, trend_rows

EVENT_DRIFT = "trust.drift"
TREND_KEY, CHART_KEY = "trust-trend", "trust-trend-chart"


@dataclass
class Trend:
    """What one refresh published."""

    days: list[date]  # the days shown, oldest first
    records: dict[date, DayRecord]
    rows: int = 0  # days with figures
    fired: list[date] = field(default_factory=list)  # days whose drift event was sent now
    table_url: str | None = None
    chart_url: str | None = None


def history_note(stream: Stream) -> str:
    return (
        f"History: one Prefect Variable per day ({md_escape(stream.day_record_prefix)}"
        f"\\<day\\>, kept {KEEP_DAYS} days) in the Prefect server's database. A day re-run or "
        "backfilled replaces its row; a lost day is rebuilt by a backfill over it "
        "(already-scored traces cost no TLM)."
    )


def refresh_trend(
    stream: Stream,
    opts: EvalOptions,
    last: date,
    traces_url: str | None,
    logger: RunLogger,
) -> Trend:
    """Judge the days not judged yet, publish the trend of the ``trend_days`` days up to
    ``last``, then send the drift events (their payload links the trend)."""
    days = [last - timedelta(days=i) for i in range(opts.trend_days - 1, -1, -1)]
    history = [days[0] - timedelta(days=i) for i in range(BASELINE_DAYS, 0, -1)]
    records = read_days(stream, history + days, logger)
    trend = Trend(days, records)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    for day in days:
        mark = judge(day, records, opts.drift_points, now)
        if mark is not None and mark_drift(stream, day, mark, logger):
            records[day] = records[day].model_copy(update={"drift": mark})
            trend.fired += [day] if mark.fired else []
    try:
        publish_trend(trend, stream, traces_url)
    except Exception as err:
        logger.warning("could not write the trend artifacts: %s", describe(err))
    for day in trend.fired:
        try:
            emit_drift(stream, records[day], opts.drift_points, trend, traces_url)
            logger.warning("drift on %s: %s", day, drift_line(records[day]))
        except Exception as err:
            logger.warning("could not emit the drift event of %s: %s", day, describe(err))
    return trend


def _run_link(run_id: str) -> str:
    url = run_url(run_id)
    return md_link(run_id[:8], url) if url else md_code(run_id[:8])


def publish_trend(trend: Trend, stream: Stream, traces_url: str | None) -> None:
    span = f"{trend.days[0]} → {trend.days[-1]}"
    rows = trend_rows(trend.records, trend.days, _run_link)
    trend.rows = len(rows)
    title = f"Trust trend: {md_escape(stream.label)}, {span}"
    if rows:
        made = create_table_artifact(
            table=rows,
            key=stream.artifact_key(TREND_KEY),
            description=f"Trust per day, newest first ({len(rows)} of {len(trend.days)} days)",
        )
        trend.table_url = artifact_url(made if isinstance(made, UUID) else None)
    links = [md_link("the table, a row per day", trend.table_url)] if trend.table_url else []
    links += [md_link("the traces in Langfuse", traces_url)] if traces_url else []
    made = create_markdown_artifact(
        markdown=chart_markdown(title, trend.records, trend.days, links, history_note(stream)),
        key=stream.artifact_key(CHART_KEY),
        description=f"Trust trend {span}",
    )
    trend.chart_url = artifact_url(made if isinstance(made, UUID) else None)


def drift_line(rec: DayRecord) -> str:
    assert rec.drift is not None and rec.figures is not None
    d = rec.drift
    return (
        f"low-trust share {pct(d.share)} against {pct(d.baseline)} over the {BASELINE_DAYS} "
        f"days before (+{(d.share - d.baseline) * 100:.1f} points; {rec.figures.low} of "
        f"{rec.figures.scored} scored below {rec.figures.threshold})"
    )


def drift_payload(
    stream: Stream, rec: DayRecord, drift_points: float, trend: Trend, traces_url: str | None
) -> dict[str, Any]:
    d, f = rec.drift, rec.figures
    assert d is not None and f is not None
    return {
        "day": rec.day.isoformat(),
        "tags": list(stream.tags),
        "score_name": stream.score_name,
        "low_trust_share": d.share,
        "baseline_share": d.baseline,
        "points": round((d.share - d.baseline) * 100, 2),
        "drift_points": drift_points,
        "fetched": f.fetched,
        "scored": f.scored,
        "low_trust_count": f.low,
        "low_trust_threshold": f.threshold,
        "mean_score": f.mean,
        "flow_run_id": rec.flow_run_id,
        "run_url": run_url(rec.flow_run_id),
        "trend_url": trend.chart_url or trend.table_url,
        "langfuse_traces_url": traces_url,
    }


def emit_drift(
    stream: Stream, rec: DayRecord, drift_points: float, trend: Trend, traces_url: str | None
) -> Any:
    resource = {
        "prefect.resource.id": f"trust-eval.stream.{stream.key}",
        "prefect.resource.name": stream.label,
        "trust-eval.score-name": stream.score_name,
        "trust-eval.tags": ",".join(stream.tags),
    }
    related = (
        [{"prefect.resource.id": f"prefect.flow-run.{rec.flow_run_id}",
          "prefect.resource.role": "day-run"}]
        if rec.flow_run_id else []
    )  # fmt: skip
    payload = drift_payload(stream, rec, drift_points, trend, traces_url)
    return emit_event(event=EVENT_DRIFT, resource=resource, related=related, payload=payload)
