"""Fetch stage: the root observations (= traces) of a window, page by page, and what is scored.

One ``GET /api/public/v2/observations`` per page of up to 1000 traces, cursor paging, newest
first. Child observations (generations, retrievers) come with one query per page: by the
window's tags, or, for apps that tag only the root span, by the page's trace ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from langfuse.api import (
    GetScoresV3Response,
    ObservationsV2Response,
    ObservationV2,
    ScoreV3,
    ScoreV3_Numeric,
)
from langfuse.api.core.api_error import ApiError
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from tasks.config import Tuning
from tasks.errors import ConfigError
from tasks.langfuse_api import (
    NO_RETRY,
    Access,
    Calls,
    CursorGuard,
    Server,
    batches,
    page_cursor,
    scores_by_id,
    tag_filter,
    trace_id_filter,
    v2_observations_missing,
)
from tasks.models import GenerationRecord, TraceRecord, Window, score_id

ROOT_FIELDS = "core,basic,io,metadata"
CHILD_FIELDS = "core,io,model"
# how a kind of child observation is found: by the window's tags, or by the page's trace ids
# (apps that tag only the root span: Langfuse filters tags on each observation's own tags)
ChildMode = Literal["tags", "trace_ids"]


@dataclass(slots=True)
class Page:
    records: list[TraceRecord]
    cursor: str | None
    rows: int  # rows the page held, repeats included
    kinds: dict[str, ChildMode | None] | None = None  # how children are found (set on page 1)
    scored: dict[str, float | None] | None = None  # units already scored (by-id look-up)


def _to_record(obs: ObservationV2) -> TraceRecord:
    return TraceRecord(
        trace_id=obs.trace_id or obs.id,
        observation_id=obs.id,
        start_time=obs.start_time,
        name=obs.name,
        input=obs.input,
        output=obs.output,
        metadata=obs.metadata if isinstance(obs.metadata, dict) else None,
        environment=obs.environment,
    )


CHILD_KINDS = ("GENERATION", "RETRIEVER")  # observations a pair may need besides the root


def child_query(
    calls: Calls,
    window: Window,
    environment: Sequence[str] | None,
    *,
    start: datetime,
    end: datetime,
    trace_ids: Sequence[str] | None = None,
    **params: Any,
) -> ObservationsV2Response:
    """GET v2/observations over [start, end) for the window's tags (or these trace ids)."""
    return calls.observations.get_many(
        from_start_time=start,
        to_start_time=end,
        environment=list(environment) if environment else None,
        filter=trace_id_filter(trace_ids) if trace_ids else tag_filter(window.tags),
        request_options=NO_RETRY,
        **params,
    )


def _kinds_among(
    calls: Calls,
    window: Window,
    environment: Sequence[str] | None,
    end: datetime,
    trace_ids: Sequence[str] | None,
) -> set[str]:
    resp = calls(
        "looking for child observations (GET v2/observations)",
        lambda: child_query(
            calls, window, environment, start=window.start, end=end, trace_ids=trace_ids,
            fields="core", limit=1000, is_root_observation=False,
        ),
    )  # fmt: skip
    seen = {str(o.type) for o in resp.data}
    if page_cursor(resp):  # more than a page of children: ask for the kinds not seen yet
        for kind in CHILD_KINDS:
            if kind not in seen:
                more = calls(
                    f"looking for {kind} observations (GET v2/observations)",
                    lambda k=kind: child_query(  # type: ignore[misc]
                        calls, window, environment, start=window.start, end=end,
                        trace_ids=trace_ids, fields="core", limit=1, type=k,
                    ),
                )  # fmt: skip
                if more.data:
                    seen.add(kind)
    return seen


def probe_children(
    calls: Calls,
    window: Window,
    first_page: list[TraceRecord],
    *,
    tuning: Tuning,
    environment: Sequence[str] | None = None,
) -> dict[str, ChildMode | None]:
    """Which CHILD_KINDS the window's traces hold, and how to find them.

    One request over the window's tagged children settles most windows. When it finds none,
    they are looked for once more among the first page's traces by trace id: an app that tags
    only its root span has untagged generations.
    """
    end = window.end + timedelta(seconds=tuning.trace_max_duration_s)
    tagged = _kinds_among(calls, window, environment, end, None)
    kinds: dict[str, ChildMode | None] = {k: "tags" if k in tagged else None for k in CHILD_KINDS}
    if any(kinds.values()) or not first_page:
        return kinds  # an app that propagates its tags to some children does to all
    sample = [r.trace_id for r in first_page[:100]]
    untagged = _kinds_among(calls, window, environment, end, sample)
    for kind in CHILD_KINDS:
        if kinds[kind] is None and kind in untagged:
            kinds[kind] = "trace_ids"
    return kinds


def attach_children(
    calls: Calls,
    records: list[TraceRecord],
    window: Window,
    kind: str,
    mode: ChildMode,
    *,
    tuning: Tuning,
    environment: Sequence[str] | None = None,
) -> None:
    """Attach each record's ``kind`` observations (generations, or retrieved documents).

    By tags: one query for the whole page (its time span plus the longest a trace may run). By
    trace ids: one query per 100 traces. Never one request per trace.
    """
    if not records:
        return
    by_id = {r.trace_id: r for r in records}
    lo = min(r.start_time for r in records)
    hi = max(r.start_time for r in records) + timedelta(seconds=tuning.trace_max_duration_s)
    groups: list[Sequence[str] | None] = (
        list(batches(list(by_id))) if mode == "trace_ids" else [None]
    )
    seen: set[str] = set()
    for ids in groups:
        guard = CursorGuard(f"reading {kind} observations")
        cursor: str | None = None
        while True:

            def call(
                page_cursor: str | None = cursor, trace_ids: Sequence[str] | None = ids
            ) -> ObservationsV2Response:
                return child_query(
                    calls, window, environment, start=lo, end=hi, trace_ids=trace_ids,
                    fields=CHILD_FIELDS, limit=1000, cursor=page_cursor, type=kind,
                )  # fmt: skip

            resp = calls(f"reading {kind} observations (GET v2/observations)", call)
            for obs in sorted(resp.data, key=lambda o: o.start_time):
                rec = by_id.get(obs.trace_id or "")
                if rec is None or obs.id in seen:
                    continue  # another page's trace, or a row repeated across pages
                seen.add(obs.id)
                if kind == "GENERATION":
                    rec.generations.append(
                        GenerationRecord(
                            observation_id=obs.id,
                            start_time=obs.start_time,
                            input=obs.input,
                            output=obs.output,
                            # v4.16 sends ``model``; an older shape named it otherwise
                            model=obs.model or getattr(obs, "provided_model_name", None),
                        )
                    )
                else:
                    rec.retrieved.append(obs.output)
            cursor = guard.next(page_cursor(resp), len(resp.data), [o.id for o in resp.data])
            if cursor is None:
                break


def fetch_page(
    calls: Calls,
    window: Window,
    cursor: str | None,
    *,
    tuning: Tuning,
    server: Server,
    environment: Sequence[str] | None = None,
) -> Page:
    def call() -> ObservationsV2Response:
        return calls.observations.get_many(
            fields=ROOT_FIELDS,
            expand_metadata=",".join((*tuning.system_prompt_keys, *tuning.context_keys)) or None,
            limit=tuning.page_size,
            cursor=cursor,
            is_root_observation=True,
            from_start_time=window.start,
            to_start_time=window.end,
            environment=list(environment) if environment else None,
            filter=tag_filter(window.tags),
            request_options=NO_RETRY,
        )

    try:
        resp = calls("reading traces (GET v2/observations)", call)
    except ApiError as err:
        if err.status_code == 404:
            raise ConfigError(v2_observations_missing(calls.cfg, server)) from None
        raise
    return Page(
        records=[_to_record(o) for o in resp.data],
        cursor=page_cursor(resp) or None,
        rows=len(resp.data),
    )


def scored_in_range(
    calls: Calls, *, score_name: str, start: datetime, end: datetime, observations: bool = False
) -> dict[str, float | None]:
    """What already carries ``score_name`` with a timestamp in [start, end), and its value.

    For servers that keep our timestamp (the subject's start time): the window's range finds
    its scores. Keys are trace ids (or observation ids for observation-scope scores).
    """
    found: dict[str, float | None] = {}
    guard = CursorGuard("reading existing scores")
    cursor: str | None = None
    while True:

        def call(page_cursor: str | None = cursor) -> GetScoresV3Response:
            return calls.scores.get_many(
                name=score_name,
                from_timestamp=start,
                to_timestamp=end,
                fields="subject",
                limit=100,
                cursor=page_cursor,
                request_options=NO_RETRY,
            )

        resp = calls("reading existing scores (GET v3/scores)", call)
        found |= _subjects(resp.data, observations)
        cursor = guard.next(page_cursor(resp), len(resp.data), [str(x.id) for x in resp.data])
        if cursor is None:
            return found


def scored_by_id(
    calls: Calls, score_ids: dict[str, str], *, observations: bool = False
) -> dict[str, float | None]:
    """Which of these units (key -> our score id for it) already carry their score."""
    rows = scores_by_id(calls, list(score_ids.values()), "reading existing scores")
    return _subjects(rows, observations)


def _subjects(rows: Sequence[ScoreV3], observations: bool) -> dict[str, float | None]:
    want = "observation" if observations else "trace"
    found: dict[str, float | None] = {}
    for score in rows:
        if score.subject is not None and score.subject.kind == want and score.subject.id:
            value = score.value if isinstance(score, ScoreV3_Numeric) else None
            found[score.subject.id] = float(value) if value is not None else None
    return found


@task(name="find-scored-traces", task_run_name="find traces already scored", cache_policy=NO_CACHE)
def find_scored_task(
    lf: Access, score_name: str, start: datetime, end: datetime, observations: bool = False
) -> dict[str, float | None]:
    calls = lf.calls(get_run_logger())
    found = scored_in_range(
        calls, score_name=score_name, start=start, end=end, observations=observations
    )
    what = "observations" if observations else "traces"
    calls.logger.info("%d %s of the window already carry %r", len(found), what, score_name)
    return found


@task(name="fetch-traces", task_run_name="fetch page {page_no}", cache_policy=NO_CACHE)
def fetch_page_task(
    lf: Access,
    window: Window,
    cursor: str | None,
    page_no: int,
    server: Server,
    environment: list[str] | None = None,
    kinds: dict[str, ChildMode | None] | None = None,
    lookup: str | None = None,
    observations: bool = False,
) -> Page:
    """One page of root observations, with their generations and retrieved documents.

    ``kinds=None`` (the first page) asks Langfuse how the window's children are found; later
    pages are told the answer. ``lookup`` (a score name) also asks which of the page's units
    already carry that score, by our score ids (servers that do not keep our timestamp).
    """
    calls, tuning = lf.calls(get_run_logger()), lf.tuning
    page = fetch_page(calls, window, cursor, tuning=tuning, server=server, environment=environment)
    if kinds is None and page.records:
        kinds = probe_children(calls, window, page.records, tuning=tuning, environment=environment)
        page.kinds = kinds
    for kind, mode in (kinds or {}).items():
        if mode is not None:
            attach_children(
                calls, page.records, window, kind, mode, tuning=tuning, environment=environment
            )
    if lookup is not None and page.records:
        units = {
            unit: score_id(rec.trace_id, lookup, gen)
            for rec in page.records
            for unit, gen in (
                [(g.observation_id, g.observation_id) for g in rec.generations]
                if observations
                else [(rec.trace_id, None)]
            )
        }
        page.scored = scored_by_id(calls, units, observations=observations)
    calls.logger.info(
        "page %d: %d traces, %d generations, %d with retrieved documents%s",
        page_no,
        page.rows,
        sum(len(r.generations) for r in page.records),
        sum(bool(r.retrieved) for r in page.records),
        "" if page.cursor else " (last page)",
    )
    return page
