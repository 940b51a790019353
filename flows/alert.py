"""Route a low-trust alert to people: Slack, Teams, email... through any Prefect notification block.

A window run emits ``trust-eval.window.low-trust`` when the share of low-trust answers passes its
``alert_low_trust_share``; a backfill emits one ``trust-eval.backfill.low-trust`` for its whole
range instead (its days emit none), naming each day over the share with a link to its run.
Every alert links the run, its lowest-trust table and the traces in Langfuse.

The ``notify-low-trust`` deployment in prefect.yaml is triggered by
that event and runs this flow with the event's figures, which it sends through a notification
block you create once and name in the deployment's ``block`` parameter (unset, the alert is only
logged by the run), e.g.::

    from prefect.blocks.notifications import SlackWebhook
    SlackWebhook(url="https://hooks.slack.com/services/...").save("trust-alerts")

(``SendgridEmail``, ``MicrosoftTeamsWebhook`` and ``CustomWebhookNotificationBlock`` work the
same way; pass ``block="sendgrid-email/trust-alerts"`` etc.)

``notify-drift`` does the same for ``trust.drift``: a day whose low-trust share exceeds the mean
of the 7 days before it by more than ``drift_points`` (``flows/trend.py``).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.blocks.abstract import NotificationBlock
from prefect.blocks.core import Block
from prefect.runtime import flow_run

LINKS = (
    ("Run", "run_url"),
    ("Lowest-trust table", "table_url"),
    ("Summary", "summary_url"),
    ("Trend", "trend_url"),
    ("Traces in Langfuse", "langfuse_traces_url"),
)


def link_lines(figures: dict[str, Any]) -> list[str]:
    """The links the event carries, one a line (those it lacks, e.g. with no UI URL, left out)."""
    return [f"{what}: {figures[key]}" for what, key in LINKS if figures.get(key)]


def alert_message(figures: dict[str, Any]) -> tuple[str, str]:
    """(subject, body) of the alert for a window's figures, or a backfill's range (the event
    payload: a range's lists its days over the share)."""
    if "days" in figures:
        return range_message(figures)
    share = float(figures.get("low_trust_share") or 0.0)
    tags = ", ".join(figures.get("tags") or [])
    subject = f"Low trust: {share:.0%} of answers tagged {tags or '(any)'}"
    mean = figures.get("mean_score")
    body = "\n".join(
        [
            f"Window {figures.get('window_start')} → {figures.get('window_end')} ({tags}):",
            f"{figures.get('low_trust_count', 0)} of {figures.get('uploaded', 0)} scored answers "
            f"fall below the trust threshold ({share:.1%}; alert above "
            f"{float(figures.get('alert_low_trust_share') or 0):.0%}).",
            f"Mean trust: {mean:.3f}." if isinstance(mean, int | float) else "Mean trust: –.",
            f"Fetched {figures.get('fetched', 0)}, skipped {figures.get('skipped', 0)}, "
            f"failures {figures.get('failures', 0)}.",
            f"Score: {figures.get('score_name', 'trust_score')} (filter on it in Langfuse).",
            *link_lines(figures),
        ]
    )
    return subject, body


def range_message(figures: dict[str, Any]) -> tuple[str, str]:
    """(subject, body) of a backfill's one alert: a line per day over the share, with its run."""
    days: list[dict[str, Any]] = list(figures.get("days") or [])
    tags = ", ".join(figures.get("tags") or [])
    span = f"{figures.get('start_date')} → {figures.get('end_date')}"
    subject = (
        f"Low trust on {len(days)} of {figures.get('days_in_range', len(days))} days "
        f"({span}), answers tagged {tags or '(any)'}"
    )
    alert = float(figures.get("alert_low_trust_share") or 0)
    lines = [f"Backfill {span} ({tags}): days whose low-trust share passed {alert:.0%}:"]
    for d in days:
        link = f": {d['run_url']}" if d.get("run_url") else ""
        lines.append(
            f"- {d.get('day')}: {float(d.get('low_trust_share') or 0):.1%} "
            f"({d.get('low_trust_count', 0)} of {d.get('uploaded', 0)}){link}"
        )
    lines.append(f"Score: {figures.get('score_name', 'trust_score')} (filter on it in Langfuse).")
    return subject, "\n".join([*lines, *link_lines(figures)])


def _run_name() -> str:
    figures = (flow_run.parameters or {}).get("figures") or {}
    if not isinstance(figures, dict):
        return "low-trust alert"
    tags = ",".join(figures.get("tags") or [])
    span = f" {figures['start_date']}..{figures.get('end_date')}" if "days" in figures else ""
    return f"low-trust alert{span} [{tags}]"


@flow(name="notify-low-trust", flow_run_name=_run_name)
def notify_low_trust(figures: dict[str, Any], block: str | None = None) -> str:
    """Send the alert for a window's figures through a notification block.

    Args:
        figures: The low-trust event's payload (the trigger fills it in).
        block: The notification block to send through, as "type/name" (e.g.
            "slack-webhook/trust-alerts"). Unset: the alert is written to this run's log only.
            A block that is set but does not exist fails the run, naming it.
    """
    subject, body = alert_message(figures)
    return send(subject, body, block, "notify-low-trust")


def send(subject: str, body: str, block: str | None, deployment: str) -> str:
    """Send an alert through the notification block ``block`` ("type/name"); unset, it is
    written to the run's log only. A block that does not exist fails the run, naming it."""
    logger = get_run_logger()
    if not block:
        logger.warning("%s\n%s\n(no notification block set: logged only)", subject, body)
        return body
    try:
        notifier = Block.load(block)
    except ValueError as err:
        raise ValueError(
            f"no notification block {block!r}: create it (README, 'Closing the loop') or unset "
            f"the {deployment} deployment's block parameter ({err})"
        ) from None
    if not isinstance(notifier, NotificationBlock):
        raise TypeError(f"{block!r} is a {type(notifier).__name__}, not a notification block")
    sent: Any = notifier.notify(body=body, subject=subject)  # sync-compatible: runs here
    del sent
    logger.info("sent %r through %s", subject, block)
    return body


def drift_message(figures: dict[str, Any]) -> tuple[str, str]:
    """(subject, body) of a ``trust.drift`` event's payload."""
    share = float(figures.get("low_trust_share") or 0.0)
    base = float(figures.get("baseline_share") or 0.0)
    tags = ", ".join(figures.get("tags") or [])
    subject = f"Trust drift on {figures.get('day')}: {share:.0%} low trust ({tags or '(any)'})"
    mean = figures.get("mean_score")
    body = "\n".join(
        [
            f"{figures.get('day')} ({tags}): {figures.get('low_trust_count', 0)} of "
            f"{figures.get('scored', 0)} scored answers below "
            f"{figures.get('low_trust_threshold')} ({share:.1%}), against {base:.1%} on "
            f"average over the 7 days before: +{float(figures.get('points') or 0):.1f} "
            f"points (alert above {figures.get('drift_points')}).",
            f"Mean trust: {mean:.3f}." if isinstance(mean, int | float) else "Mean trust: –.",
            f"Traces that day: {figures.get('fetched', 0)}. Score: "
            f"{figures.get('score_name', 'trust_score')}.",
            *link_lines(figures),
        ]
    )
    return subject, body


def _drift_run_name() -> str:
    figures = (flow_run.parameters or {}).get("figures") or {}
    day = figures.get("day") if isinstance(figures, dict) else None
    return f"trust drift {day or ''}".strip()


@flow(name="notify-drift", flow_run_name=_drift_run_name)
def notify_drift(figures: dict[str, Any], block: str | None = None) -> str:
    """Send a ``trust.drift`` event (a day's low-trust share jumped) through a notification
    block.

    Args:
        figures: The drift event's payload (the trigger fills it in).
        block: The notification block to send through, as "type/name" (e.g.
            "slack-webhook/trust-alerts"). Unset: the alert is written to this run's log only.
            A block that is set but does not exist fails the run, naming it.
    """
    subject, body = drift_message(figures)
    return send(subject, body, block, "notify-drift")
