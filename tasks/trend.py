"""A stream's days side by side: the per-day record, the trend table and chart, the drift rule.

Pure functions; where the records live (one Prefect Variable per stream and day) is
``flows/evaluated_days.py``, what is published from them ``flows/trend.py``.

A day's record says two things that are decided apart:

- ``complete``: a run evaluated the whole day with nothing left for a later run (the daily
  catch-up skips it). Once true it stays true: a later run that fails on that day does not undo
  the scores the complete one landed.
- ``figures``: what the day looked like (traces, scored, mean trust, low-trust count), written
  by every run over exactly that whole day that read all of it (not a dry run, not capped, no
  stage failure), complete or not; the newest such run replaces them and becomes the row's run.

``drift`` is the day's verdict on drift, written once when the day is first judged, so a day
re-run or backfilled later never fires its event again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, timedelta
from typing import Any

from pydantic import BaseModel, ValidationError

BASELINE_DAYS = 7  # a day is compared with the mean of the 7 days before it
MIN_BASELINE_DAYS = 3  # of which at least this many must have figures
SPARKS = "▁▂▃▄▅▆▇█"


class DayFigures(BaseModel):
    """One whole UTC day of a stream, as the run over that day found it."""

    fetched: int
    scored: int  # units carrying a score now (this run's and those scored before)
    mean: float | None = None  # None: nothing scored
    low: int  # scored units below the threshold
    threshold: float
    sampled: bool = False  # sample_rate < 1: mean and share are a sample's
    causes: dict[str, int] | None = None  # cause -> low-trust units, once runs classify causes

    @property
    def share(self) -> float | None:
        return self.low / self.scored if self.scored else None


class DriftMark(BaseModel):
    fired: bool
    share: float
    baseline: float
    judged_at: str


class DayRecord(BaseModel):
    day: date
    complete: bool = False
    flow_run_id: str | None = None  # the run whose figures these are (or that completed it)
    evaluated_at: str | None = None
    figures: DayFigures | None = None
    drift: DriftMark | None = None


def parse_record(day: date, value: Any) -> DayRecord | None:
    """A record as stored; None for a value this project did not write."""
    if not isinstance(value, dict) or not isinstance(value.get("complete"), bool):
        return None
    try:
        return DayRecord.model_validate({**value, "day": day})
    except ValidationError:
        return None


def record_value(record: DayRecord, stream_label: str) -> dict[str, Any]:
    """What is stored (a Prefect Variable value: JSON, at most 5000 characters)."""
    value = record.model_dump(mode="json", exclude={"day"}, exclude_none=True)
    return value | {"stream": stream_label}


def merge(
    old: DayRecord | None,
    day: date,
    *,
    complete: bool,
    figures: DayFigures | None,
    run_id: str | None,
    at: str,
) -> DayRecord:
    """A run's news about a day, on top of what was recorded: complete stays complete; new
    figures replace the old ones (and the row's run with them); the drift verdict is kept."""
    old = old or DayRecord(day=day)
    news = figures is not None or (complete and not old.complete)
    return DayRecord(
        day=day,
        complete=old.complete or complete,
        flow_run_id=run_id if news else old.flow_run_id,
        evaluated_at=at if news else old.evaluated_at,
        figures=figures if figures is not None else old.figures,
        drift=old.drift,
    )


# --- drift and empty days -------------------------------------------------------------------


def baseline(day: date, records: Mapping[date, DayRecord]) -> float | None:
    """The mean low-trust share of the 7 days before ``day`` (None with fewer than 3 known)."""
    shares = []
    for i in range(1, BASELINE_DAYS + 1):
        rec = records.get(day - timedelta(days=i))
        share = rec.figures.share if rec and rec.figures else None
        if share is not None:
            shares.append(share)
    return sum(shares) / len(shares) if len(shares) >= MIN_BASELINE_DAYS else None


def judge(
    day: date, records: Mapping[date, DayRecord], drift_points: float, at: str
) -> DriftMark | None:
    """The day's drift verdict: its share above the trailing mean by more than
    ``drift_points`` percentage points fires. None: not judged (already judged, no share, or
    too little history)."""
    rec = records.get(day)
    if rec is None or rec.drift is not None or rec.figures is None:
        return None
    share, base = rec.figures.share, baseline(day, records)
    if share is None or base is None:
        return None
    fired = (share - base) * 100 > drift_points
    return DriftMark(fired=fired, share=round(share, 4), baseline=round(base, 4), judged_at=at)


def empty_streak(records: Mapping[date, DayRecord], last: date) -> int:
    """How many days in a row, ending with ``last``, fetched no trace. A day without figures
    (not evaluated, or its run failed) ends the streak: nothing is known of it."""
    n = 0
    while True:
        rec = records.get(last - timedelta(days=n))
        if rec is None or rec.figures is None or rec.figures.fetched != 0:
            return n
        n += 1


# --- rendering ------------------------------------------------------------------------------


def sparkline(values: list[float | None], top: float | None = None) -> str:
    """One character per value, ``▁`` (0) to ``█`` (``top``, default the largest); a day with
    no value is a space."""
    known = [v for v in values if v is not None]
    top = top if top is not None else max(known, default=0.0)
    if top <= 0:
        return "".join(" " if v is None else SPARKS[0] for v in values)
    last = len(SPARKS) - 1
    return "".join(
        " " if v is None else SPARKS[max(0, min(last, round(v / top * last)))] for v in values
    )


def pct(share: float | None) -> str:
    return "–" if share is None else f"{share:.1%}"


def causes_text(causes: dict[str, int] | None) -> str:
    if not causes:
        return ""
    ranked = sorted(causes.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{cause} {n}" for cause, n in ranked)


def trend_rows(
    records: Mapping[date, DayRecord],
    days: list[date],
    run_link: Callable[[str], str],
) -> list[dict[str, Any]]:
    """One row per day of ``days`` that has figures, newest first. ``run_link`` renders a flow
    run id (markdown). The causes column appears once any day has a cause mix."""
    shown = [records[d] for d in sorted(days, reverse=True) if d in records]
    shown = [r for r in shown if r.figures is not None]
    with_causes = any(r.figures and r.figures.causes for r in shown)
    rows = []
    for r in shown:
        f = r.figures
        assert f is not None
        row: dict[str, Any] = {
            "day": r.day.isoformat(),
            "run": run_link(r.flow_run_id) if r.flow_run_id else "–",
            "traces": f.fetched,
            "scored": f.scored,
            "mean trust": "–" if f.mean is None else f"{f.mean:.3f}",
            "low trust": f.low,
            "low-trust share": pct(f.share) + (" (sampled)" if f.sampled else ""),
        }
        if with_causes:
            row["causes"] = causes_text(f.causes)
        row["drift"] = drift_text(r.drift)
        row["complete"] = "yes" if r.complete else "no"
        rows.append(row)
    return rows


def drift_text(mark: DriftMark | None) -> str:
    if mark is None or not mark.fired:
        return ""
    return f"▲ +{(mark.share - mark.baseline) * 100:.1f} pts over {mark.baseline:.1%}"


def chart_markdown(
    title: str,
    records: Mapping[date, DayRecord],
    days: list[date],
    links: list[str],
    history: str,
) -> str:
    """The trend as unicode sparklines, oldest day left, one character per day (a space: no
    figures that day), from the stream's first day with figures; then the drift days, the
    days with no figures since, links and where the history lives."""
    days = sorted(days)
    first = next((d for d in days if d in records and records[d].figures), None)
    days = [d for d in days if first is not None and d >= first] or days
    figs = [records[d].figures if d in records else None for d in days]
    shares = [f.share if f else None for f in figs]
    means = [f.mean if f else None for f in figs]
    volume: list[float | None] = [float(f.fetched) if f else None for f in figs]
    known = [f for f in figs if f is not None]
    last = known[-1] if known else None
    top_share = max((s for s in shares if s is not None), default=None)
    width = len(days)
    axis = f"{days[0]:%m-%d}".ljust(max(width - 5, 6)) + f"{days[-1]:%m-%d}" if days else ""
    lines = [
        f"# {title}",
        "",
        "```",
        f"low-trust share  {sparkline(shares)}  max {pct(top_share)}, "
        f"last {pct(last.share if last else None)}",
        f"mean trust       {sparkline(means, top=1.0)}  last "
        + ("–" if last is None or last.mean is None else f"{last.mean:.3f}"),
        f"traces           {sparkline(volume)}  last {last.fetched if last else '–'}",
        f"                 {axis}",
        "```",
        "",
    ]
    drifted = [(d, records[d].drift) for d in days if d in records and records[d].drift]
    fired = [f"{d} ({drift_text(m)})" for d, m in drifted if m is not None and m.fired]
    if fired:
        lines.append(f"**Drift:** {'; '.join(fired)}  ")
    missing = [d.isoformat() for d, f in zip(days, figs, strict=True) if f is None]
    if missing:
        lines.append(f"No figures (not evaluated, or the run failed): {', '.join(missing)}  ")
    if links:
        lines.append(" · ".join(links) + "  ")
    lines += ["", f"_{history}_"]
    return "\n".join(lines)
