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

from tasks.config import RunLogger
from tasks.models import Window
from tasks.report import (
    EVENT_EVALUATED,
    EVENT_LOW_TRUST,
    EvalReport,
    event_payload,
    lowest_table,
    summary_markdown,
)
from tasks.retry import describe


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


def publish(
    report: EvalReport, progress: Progress, alert_share: float | None, logger: RunLogger
) -> None:
    """Artifacts and events are a view of the report: a failure here never loses the report."""
    r = report
    try:
        progress.done()
        create_markdown_artifact(
            markdown=summary_markdown(r),
            key="trust-summary",
            description=f"Trust scores {r.window_start:%Y-%m-%d %H:%M} → "
            f"{r.window_end:%Y-%m-%d %H:%M}",
        )
        if r.lowest:
            create_table_artifact(
                table=lowest_table(r),
                key="lowest-trust",
                description=f"The {len(r.lowest)} least trustworthy traces, lowest first",
            )
    except Exception as err:
        logger.warning("could not write the report artifacts: %s", describe(err))
    try:
        emit_run_events(r, alert_share)
    except Exception as err:
        logger.warning("could not emit the run's events: %s", describe(err))


def emit_run_events(report: EvalReport, alert_share: float | None) -> list[Any]:
    """The run's figures as a Prefect event, plus an alert event past the low-trust share."""
    payload = event_payload(report)
    resource = {
        "prefect.resource.id": "trust-eval.window."
        + f"{report.window_start:%Y%m%dT%H%M}-{report.window_end:%Y%m%dT%H%M}",
        "prefect.resource.name": f"{','.join(report.tags)} {report.window_start:%Y-%m-%d}",
        "trust-eval.score-name": report.score_name,
        "trust-eval.tags": ",".join(report.tags),
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
