"""The report flow: the worst traces of any range, from the scores already in Langfuse.

"The least trustworthy answers of last week" after the fact: it reads the scores the runs wrote
(tasks/range_scores.py), pays no TLM and writes nothing to Langfuse, and publishes the
lowest-trust table (explanation, answer, a link to each trace) and per-day figures (scored,
mean trust, below the threshold) as artifacts. ``python -m flows.cli report --since 7d --tag X``
runs it from a terminal; the ``report`` deployment of prefect.yaml from the UI.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from pydantic import BaseModel, Field

from flows.options import validate_tags
from flows.publish import table_artifact
from flows.settings import open_stream
from tasks.budgets import check_limits
from tasks.config import load_langfuse, load_tuning
from tasks.errors import ConfigError, fails_in_one_line
from tasks.langfuse_api import Access
from tasks.models import last_user_turn, preview
from tasks.pairs import build_pair
from tasks.range_scores import Found, RangeRead, read_range_task
from tasks.report import LowTrustRow, md_escape, trace_url
from tasks.retry import describe
from tasks.windows import aware, check_span, duration

ARTIFACT = "trust-range"


class DayRow(BaseModel):
    day: str
    scored: int
    mean: float | None
    below: int


class RangeReport(BaseModel):
    """What the scores of a range say: per day, and the lowest first."""

    start: datetime
    end: datetime
    tags: list[str]
    score_name: str
    below: float
    tagged_traces: int = 0
    days: list[DayRow] = Field(default_factory=list)
    lowest: list[LowTrustRow] = Field(default_factory=list)
    langfuse_requests: int = 0
    warnings: list[str] = Field(default_factory=list)

    @property
    def scored(self) -> int:
        return sum(d.scored for d in self.days)

    @property
    def below_count(self) -> int:
        return sum(d.below for d in self.days)


def range_of(
    since: str | None, start: datetime | None, end: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    """[start, end), or the last ``since`` (e.g. "7d") up to now."""
    if start is not None or end is not None:
        if start is None:
            raise ConfigError("give window_start with window_end (or since alone)")
        s, e = aware(start, "window_start"), aware(end, "window_end") if end else now
    else:
        s, e = now - duration(since or "7d", "since"), now
    if e <= s:
        raise ConfigError(f"window_end ({e.isoformat()}) must be after window_start")
    check_span(s, e, "the range")
    return s, e


def rows_of(read: RangeRead, ui: str, project: str, max_chars: int) -> list[LowTrustRow]:
    """The lowest scores as table rows: the question and answer from each trace's root."""
    out = []
    for f in read.lowest:
        question = answer = None
        root = read.roots.get(f.trace_id)
        if root is not None:
            try:
                pair = build_pair(root, system_prompt_keys=(), max_prompt_chars=max_chars)
                question, answer = preview(last_user_turn(pair.prompt)), preview(pair.response)
            except Exception:  # a root we cannot read still has its score and explanation
                question = None
        out.append(row_of(f, root.name if root else None, question, answer, ui, project))
    return out


def row_of(
    f: Found, name: str | None, question: str | None, answer: str | None, ui: str, project: str
) -> LowTrustRow:
    return LowTrustRow(
        trace_id=f.trace_id, observation_id=f.observation_id, name=name, score=f.value,
        explanation=f.comment, start_time=f.timestamp, question=question, answer=answer,
        url=trace_url(ui, project, f.trace_id, f.observation_id),
    )  # fmt: skip


def days_markdown(report: RangeReport, table_url: str | None) -> str:
    r = report
    mean = sum((d.mean or 0) * d.scored for d in r.days) / r.scored if r.scored else None
    lines = [
        f"# Trust scores {r.start:%Y-%m-%d %H:%M} → {r.end:%Y-%m-%d %H:%M} UTC",
        "",
        f"**Tags:** {md_escape(', '.join(r.tags))} · **Score:** {md_escape(r.score_name)} · "
        f"**Scored:** {r.scored} of {r.tagged_traces} tagged traces · **Mean trust:** "
        f"{'–' if mean is None else f'{mean:.3f}'} · **Below {r.below}:** {r.below_count}  ",
        f"[Lowest-trust traces]({table_url})" if table_url else "",
        "",
        f"| day (UTC) | scored | mean trust | below {r.below} |",
        "|---|---:|---:|---:|",
        *[
            f"| {d.day} | {d.scored} | {'–' if d.mean is None else f'{d.mean:.3f}'} | {d.below} |"
            for d in r.days
        ],
        "",
        *[f"_Warning: {md_escape(w, 300)}_  " for w in r.warnings],
    ]
    return "\n".join(lines)


def _run_name() -> str:
    p = flow_run.parameters or {}
    return f"report {p.get('since') or p.get('window_start')} [{','.join(p.get('tags') or [])}]"


@flow(name="trust-report", flow_run_name=_run_name, log_prints=True)
@fails_in_one_line
def report_range(
    tags: list[str],
    since: str = "7d",
    window_start: datetime | None = None,
    window_end: datetime | None = None,
    score_name: Annotated[str, Field(min_length=1, max_length=200)] = "trust_score",
    below: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5,
    limit: Annotated[int, Field(ge=1, le=1000)] = 20,
) -> RangeReport:
    """The lowest trust scores of a range, and per-day figures, from the scores already in
    Langfuse (pays no TLM, writes nothing to Langfuse).

    Args:
        tags: The tag(s) the traces carry (any of them).
        since: The range is this long, up to now: 90m, 24h, 7d, 4w (unless window_start).
        window_start: Start of the range (included), instead of since.
        window_end: End of the range (excluded; default now).
        score_name: The score the runs wrote.
        below: Scores below this count as low trust.
        limit: Rows of the lowest-trust table.
    """
    tags = validate_tags(tags)
    if not score_name.strip():
        raise ConfigError("score_name must not be blank")
    tuning = check_limits(load_tuning())
    access = Access(load_langfuse(), tuning)
    start, end = range_of(since, window_start, window_end, datetime.now(UTC))
    logger = get_run_logger()
    server, stream = open_stream(access, tags, score_name, logger)
    read = read_range_task(access, start, end, tags, score_name, below, limit)
    ui = (tuning.langfuse_ui_url or access.cfg.base_url).rstrip("/")
    rows = rows_of(read, ui, stream.project, tuning.max_prompt_chars)
    report = RangeReport(
        start=start, end=end, tags=tags, score_name=score_name, below=below,
        tagged_traces=read.tagged, lowest=rows,
        days=[DayRow(day=str(d.day), scored=d.scored, mean=d.mean, below=d.below)
              for d in read.days],
        langfuse_requests=access.count.value,
    )  # fmt: skip
    if not server.batch_scores:
        report.warnings.append(
            f"{server.label} stamps a score when it is written: the range selected scores "
            "written in it, of traces that started in it"
        )
    if not read.tagged:
        report.warnings.append(f"no trace carries the tag(s) {', '.join(tags)} in this range")
    publish_range(report, stream.artifact_key)
    return report


def publish_range(report: RangeReport, key_of: Callable[[str], str]) -> None:
    """The lowest-trust table and the per-day summary (a view: a failure is a warning)."""
    try:
        span = f"{report.start:%Y-%m-%d} → {report.end:%Y-%m-%d}"
        url = table_artifact(report.lowest, key_of(f"{ARTIFACT}-lowest"), f"({span})")
        create_markdown_artifact(
            markdown=days_markdown(report, url),
            key=key_of(f"{ARTIFACT}-summary"),
            description=f"Trust scores {span}, per day",
        )
    except Exception as err:
        get_run_logger().warning("could not write the report artifacts: %s", describe(err))
