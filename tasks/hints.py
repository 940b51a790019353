"""What to say when a window's tags match no trace: the tags its traces do carry, and the one
nearest to each tag asked for (a typo). One read: the window's root observations without the tag
filter, with the field group that carries tags (``trace_context``)."""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Sequence

from langfuse.api import ObservationsV2Response

from tasks.langfuse_api import NO_RETRY, Calls
from tasks.models import Window

SHOWN = 8  # tags listed, most used first


def tags_seen(
    calls: Calls, window: Window, environment: Sequence[str] | None = None, limit: int = 1000
) -> tuple[Counter[str], int]:
    """The tags of the window's traces (one page of up to ``limit`` roots, newest first), and
    how many traces that page held."""

    def call() -> ObservationsV2Response:
        return calls.observations.get_many(
            fields="core,trace_context",
            limit=limit,
            is_root_observation=True,
            from_start_time=window.start,
            to_start_time=window.end,
            environment=list(environment) if environment else None,
            request_options=NO_RETRY,
        )

    resp = calls("listing the window's tags (GET v2/observations)", call)
    seen: Counter[str] = Counter()
    for obs in resp.data:
        seen.update(set(obs.tags or []))
    return seen, len(resp.data)


def no_match_hint(wanted: Sequence[str], seen: Counter[str], traces: int) -> str:
    """One line: no trace carries the tags; which tags the window's traces carry; the nearest."""
    asked = ", ".join(wanted)
    if not traces:
        return (
            f"no trace carries the tag(s) {asked}: no trace at all started in this window "
            "(check the window, and that LANGFUSE_BASE_URL and the keys are the app's project)"
        )
    if not seen:
        return (
            f"no trace carries the tag(s) {asked}: the window's {traces} trace(s) carry no "
            "tags at all (set them with propagate_attributes(tags=[...]))"
        )
    listed = ", ".join(f"{tag} ({n})" for tag, n in seen.most_common(SHOWN))
    more = f" and {len(seen) - SHOWN} more" if len(seen) > SHOWN else ""
    near = [
        match
        for tag in wanted
        for match in difflib.get_close_matches(tag, list(seen), n=1, cutoff=0.6)
    ]
    guess = f"; did you mean {', '.join(dict.fromkeys(near))}?" if near else ""
    return f"no trace carries the tag(s) {asked}; this window's traces carry: {listed}{more}{guess}"
