"""What a window run shows in Prefect: the progress bar, the summary and lowest-trust artifacts,
and the events that automations (the low-trust alert) listen for."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.events import emit_event
from prefect.settings import get_current_settings

from tasks.config import RunLogger
from tasks.models import Window
from tasks.report import (
    EVENT_EVALUATED,
    EVENT_LOW_TRUST,
    TABLE_NOTE,
    EvalReport,
    LowTrustRow,
    event_payload,
    lowest_table,
    summary_markdown,
    top_cause,
)
from tasks.retry import describe
from tasks.stream import Stream


class Progress:
    """Pages come newest first: how far back in the window the run has read is its progress."""

    def __init__(self, window: Window) -> None:
        self.window = window
        self.artifact_id: UUID | None = None

    def update(self, oldest: datetime | None) -> None:
        w = self.window
        span = (w.end - w.start).total_seconds()
        pct = (
            100.0
            if oldest is None or span <= 0
            else 100.0 * (w.end - oldest).total_seconds() / span
        )
        pct = max(0.0, min(pct, 100.0))
        if self.artifact_id is None:
            made = create_progress_artifact(
                progress=pct, key="trust-progress", description="Share of the window evaluated"
            )
            assert isinstance(made, UUID)  # called from a synchronous flow
            self.artifact_id = made
        else:
            update_progress_artifact(self.artifact_id, progress=pct)

    def done(self) -> None:
        self.update(None)


def artifact_url(artifact_id: UUID | None) -> str | None:
    ui = get_current_settings().ui_url
    return f"{ui.rstrip('/')}/artifacts/artifact/{artifact_id}" if ui and artifact_id else None


def run_url(flow_run_id: str | None) -> str | None:
    ui = get_current_settings().ui_url
    return f"{ui.rstrip('/')}/runs/flow-run/{flow_run_id}" if ui and flow_run_id else None


def table_artifact(rows: list[LowTrustRow], key: str, note: str) -> str | None:
    """The lowest-trust table artifact; the URL of its page (None without rows or a UI)."""
    if not rows:
        return None
    made = create_table_artifact(
        table=lowest_table(rows),
        key=key,
        description=f"The {len(rows)} lowest scores, lowest first {note}; {TABLE_NOTE}",
    )
    return artifact_url(made if isinstance(made, UUID) else None)


def publish(
    report: EvalReport,
    stream: Stream,
    progress: Progress,
    alert_share: float | None,
    logger: RunLogger,
) -> None:
    """Artifacts and events are a view of the report: a failure here never loses the report.
    A dry run's artifacts have keys of their own: they never replace a real run's."""
    r = report
    dry = "-dry-run" if r.dry_run else ""
    table_url = None
    try:
        progress.done()
        table_url = table_artifact(
            r.lowest,
            stream.artifact_key(f"trust-lowest{dry}"),
            f"({r.low_trust_count} below {r.low_trust_threshold})",
        )
        create_markdown_artifact(
            markdown=summary_markdown(r, table_url),
            key=stream.artifact_key(f"trust-summary{dry}"),
            description=f"Trust scores {r.window_start:%Y-%m-%d %H:%M} → "
            f"{r.window_end:%Y-%m-%d %H:%M}",
        )
    except Exception as err:
        logger.warning("could not write the report artifacts: %s", describe(err))
    try:
        emit_run_events(r, stream, alert_share, table_url)
    except Exception as err:
        logger.warning("could not emit the run's events: %s", describe(err))


def emit_run_events(
    report: EvalReport, stream: Stream, alert_share: float | None, table_url: str | None = None
) -> list[Any]:
    """The run's figures as a Prefect event, plus an alert event past the low-trust share. Both
    carry the links an alert shows: the run, its lowest-trust table, the traces in Langfuse."""
    payload = event_payload(report) | {
        "run_url": run_url(report.flow_run_id),
        "table_url": table_url,
        "langfuse_traces_url": report.langfuse_traces_url,
    }
    resource = {
        "prefect.resource.id": f"trust-eval.window.{stream.key}."
        + f"{report.window_start:%Y%m%dT%H%M}-{report.window_end:%Y%m%dT%H%M}",
        "prefect.resource.name": f"{','.join(report.tags)} {report.window_start:%Y-%m-%d}",
        "trust-eval.score-name": report.score_name,
        "trust-eval.tags": ",".join(report.tags),
        "trust-eval.top-cause": top_cause(report),  # automations can match one cause
    }
    events = [emit_event(event=EVENT_EVALUATED, resource=resource, payload=payload)]
    if alert_share is not None and report.uploaded and payload["low_trust_share"] > alert_share:
        events.append(
            emit_event(
                event=EVENT_LOW_TRUST,
                resource=resource,
                payload=payload | {"alert_low_trust_share": alert_share},
            )
        )
    return events


EVENT_RANGE_LOW_TRUST = "trust-eval.backfill.low-trust"


def emit_range_alert(payload: dict[str, Any], stream: Stream) -> Any:
    """A backfill's one low-trust alert for its whole range (its days send none of their own)."""
    resource = {
        "prefect.resource.id": f"trust-eval.backfill.{stream.key}."
        + f"{payload['start_date'].replace('-', '')}-{payload['end_date'].replace('-', '')}",
        "prefect.resource.name": f"{stream.label} {payload['start_date']}..{payload['end_date']}",
        "trust-eval.score-name": stream.score_name,
        "trust-eval.tags": ",".join(stream.tags),
    }
    return emit_event(event=EVENT_RANGE_LOW_TRUST, resource=resource, payload=payload)
