"""What a window run shows in Prefect: the progress bar, the summary and lowest-trust artifacts,
and the events that automations (the low-trust alert) listen for."""

from __future__ import annotations

import functools
import hashlib
import inspect
import re
import typing
from collections.abc import Callable
from datetime import datetime
from typing import Any, ParamSpec, TypeVar, cast
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.events import emit_event
from prefect.settings import get_current_settings
from prefect.states import Failed

from tasks.config import ConfigError, RunLogger
from tasks.failures import RunFailed
from tasks.models import Window
from tasks.report import (
    EVENT_EVALUATED,
    EVENT_LOW_TRUST,
    EvalReport,
    LowTrustRow,
    event_payload,
    lowest_table,
    summary_markdown,
)
from tasks.retry import describe

P = ParamSpec("P")
R = TypeVar("R")


def fails_in_one_line(fn: Callable[P, R]) -> Callable[P, R]:
    """A refused setting or a failed run ends the flow run Failed with the one-line reason as
    its state message (shown by the run page and ``--watch``), without a traceback; a caller
    of the flow function still gets the exception raised."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (ConfigError, RunFailed) as err:
            reason = " ".join(str(err).split())
            get_run_logger().error("%s", reason)
            # Prefect takes a returned state as the run's final state and raises its data
            return cast(R, Failed(message=reason[:2000], data=err))

    # resolved here: Prefect would read the parameter types in this module otherwise
    run.__annotations__ = typing.get_type_hints(fn)
    run.__signature__ = inspect.signature(fn, eval_str=True)  # type: ignore[attr-defined]
    return run


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


def stream_key(kind: str, tags: list[str], score_name: str) -> str:
    """An artifact key per stream (tags and score name), so each stream has its own history.
    Keys take lowercase letters, digits and dashes."""
    words = re.sub(r"[^a-z0-9]+", "-", f"{'-'.join(sorted(tags))}-{score_name}".lower())
    words = words.strip("-")
    if len(words) > 60:
        words = words[:50].rstrip("-") + "-" + hashlib.sha256(words.encode()).hexdigest()[:8]
    return f"{kind}-{words}"


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
        description=f"The {len(rows)} lowest scores, lowest first {note}",
    )
    return artifact_url(made if isinstance(made, UUID) else None)


def publish(
    report: EvalReport, progress: Progress, alert_share: float | None, logger: RunLogger
) -> None:
    """Artifacts and events are a view of the report: a failure here never loses the report."""
    r = report
    try:
        progress.done()
        table_url = table_artifact(
            r.lowest,
            stream_key("trust-lowest", r.tags, r.score_name),
            f"({r.low_trust_count} below {r.low_trust_threshold})",
        )
        create_markdown_artifact(
            markdown=summary_markdown(r, table_url),
            key=stream_key("trust-summary", r.tags, r.score_name),
            description=f"Trust scores {r.window_start:%Y-%m-%d %H:%M} → "
            f"{r.window_end:%Y-%m-%d %H:%M}",
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
