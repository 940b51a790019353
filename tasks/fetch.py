"""Fetch stage: the root observations (= traces) of a window, page by page, and what is scored.

One ``GET /api/public/v2/observations`` per page of up to 1000 traces, cursor paging, newest
first. Child observations (generations, retrievers) come with one query per page: by the
window's tags, or, for apps that tag only the root span, by the page's trace ids.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import httpx
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
    root_trace_ids,
    scores_by_id,
    tag_filter,
    tls,
    trace_id_filter,
    v2_observations_missing,
)
from tasks.models import GenerationRecord, TraceRecord, Window, score_id

ROOT_FIELDS = "core,basic,io,metadata"
CHILD_FIELDS = "core,io,model"
# how a kind of child observation is found: by the window's tags, or by the page's trace ids
# (apps that tag only the root span: Langfuse filters tags on each observation's own tags)
ChildMode = Literal["tags", "trace_ids"]


MIN_PAGE = 50  # a page too heavy for Langfuse is asked again at half the size, down to this


class HeavyRead(Exception):
    """Langfuse gave up on a read as too heavy (422 "Request timed out": a ClickHouse timeout or
    memory limit, web/src/features/public-api/server/withMiddlewares.ts); a smaller page
    usually passes."""


def heavy(err: ApiError) -> bool:
    body = err.body if isinstance(err.body, dict) else {}
    return err.status_code == 422 and body.get("error") == "Request timed out"


def smaller(limit: int, what: str) -> int:
    """The next page size after a read too heavy at ``limit``; at the floor, the run fails."""
    if limit <= MIN_PAGE:
        raise ConfigError(
            f"Langfuse timed out {what} even {limit} at a time (422 Request timed out): the "
            "server's ClickHouse needs more time or memory for these traces; lower "
            f"TRUST_EVAL_PAGE_SIZE below {MIN_PAGE} only with its operator's advice"
        )
    return max(limit // 2, MIN_PAGE)


@dataclass(slots=True)
class Page:
    records: list[TraceRecord]
    cursor: str | None
    rows: int  # rows the page held, repeats included
    limit: int = 0  # the page size it was read at (smaller than asked when Langfuse timed out)
    kinds: dict[str, ChildMode | None] | None = None  # how children are found (set on page 1)
    scored: dict[str, dict[str, float | None]] | None = None  # by-id look-up: name -> units


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
    limit = 1000
    for ids in groups:
        guard = CursorGuard(f"reading {kind} observations")
        cursor: str | None = None
        while True:

            def call(
                page_cursor: str | None = cursor,
                trace_ids: Sequence[str] | None = ids,
                n: int = limit,
            ) -> ObservationsV2Response:
                return child_query(
                    calls, window, environment, start=lo, end=hi, trace_ids=trace_ids,
                    fields=CHILD_FIELDS, limit=n, cursor=page_cursor, type=kind,
                )  # fmt: skip

            try:
                resp = calls(f"reading {kind} observations (GET v2/observations)", call)
            except ApiError as err:
                if not heavy(err):
                    raise
                limit = smaller(limit, f"reading {kind} observations")
                continue
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
    limit: int,
    environment: Sequence[str] | None = None,
) -> Page:
    def call() -> ObservationsV2Response:
        return calls.observations.get_many(
            fields=ROOT_FIELDS,
            expand_metadata=",".join((*tuning.system_prompt_keys, *tuning.context_keys)) or None,
            limit=limit,
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
        if heavy(err):
            raise HeavyRead(f"{limit} traces with their input, output and metadata") from None
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
    found = names_in_range(
        calls, names=[score_name], start=start, end=end, observations=observations
    )
    return found.get(score_name, {})


def names_in_range(
    calls: Calls,
    *,
    names: Sequence[str],
    start: datetime,
    end: datetime,
    observations: bool = False,
) -> dict[str, dict[str, float | None]]:
    """As :func:`scored_in_range`, for several score names in one paged read (``name`` takes
    a comma-separated list): name -> unit -> value."""
    found: dict[str, dict[str, float | None]] = {n: {} for n in names}
    guard = CursorGuard("reading existing scores")
    cursor: str | None = None
    while True:

        def call(page_cursor: str | None = cursor) -> GetScoresV3Response:
            return calls.scores.get_many(
                name=",".join(names),
                from_timestamp=start,
                to_timestamp=end,
                fields="subject",
                limit=100,
                cursor=page_cursor,
                request_options=NO_RETRY,
            )

        resp = calls("reading existing scores (GET v3/scores)", call)
        for name in names:
            found[name] |= _subjects([x for x in resp.data if x.name == name], observations)
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
    lf: Access, names: Sequence[str], start: datetime, end: datetime, observations: bool = False
) -> dict[str, dict[str, float | None]]:
    """What already carries each of ``names`` (the run's scores): name -> unit -> value."""
    calls = lf.calls(get_run_logger())
    found = names_in_range(calls, names=names, start=start, end=end, observations=observations)
    what = "observations" if observations else "traces"
    for name in names:
        calls.logger.info("%d %s of the window already carry %r", len(found[name]), what, name)
    return found


def by_id_lookup(
    calls: Calls, records: list[TraceRecord], names: Sequence[str], observations: bool
) -> dict[str, dict[str, float | None]]:
    """Which of the records' units carry each of ``names``, by our score ids (for servers
    that do not keep our timestamp, so a look-up by time range cannot find them)."""
    units = [
        (unit, rec.trace_id, gen)
        for rec in records
        for unit, gen in (
            [(g.observation_id, g.observation_id) for g in rec.generations]
            if observations
            else [(rec.trace_id, None)]
        )
    ]
    ids = {score_id(t, n, g): (n, u) for n in names for u, t, g in units}
    rows = scores_by_id(calls, list(ids), "reading existing scores") if ids else []
    found: dict[str, dict[str, float | None]] = {n: {} for n in names}
    for row in rows:
        name, unit = ids.get(str(row.id), (None, None))
        if name is not None and unit is not None:
            value = row.value if isinstance(row, ScoreV3_Numeric) else None
            found[name][unit] = float(value) if value is not None else None
    return found


def with_children(
    calls: Calls,
    records: list[TraceRecord],
    window: Window,
    kinds: dict[str, ChildMode | None] | None,
    environment: Sequence[str] | None,
) -> dict[str, ChildMode | None] | None:
    """Attach the records' child observations (asking first how they are found, when nobody has
    yet); how they are found."""
    if not records:
        return kinds
    if kinds is None:
        kinds = probe_children(calls, window, records, tuning=calls.tuning, environment=environment)
    for kind, mode in kinds.items():
        if mode is not None:
            attach_children(
                calls, records, window, kind, mode, tuning=calls.tuning, environment=environment
            )
    return kinds


@task(name="fetch-traces", task_run_name="fetch page {page_no}", cache_policy=NO_CACHE)
def fetch_page_task(
    lf: Access,
    window: Window,
    cursor: str | None,
    page_no: int,
    server: Server,
    limit: int,
    environment: list[str] | None = None,
    kinds: dict[str, ChildMode | None] | None = None,
    lookup: Sequence[str] | None = None,
    observations: bool = False,
) -> Page:
    """One page of root observations (``limit`` of them, or half as many, and so on, while
    Langfuse times out). In observation scope (a unit per generation) their children come with
    them; in trace scope only the units that go on to pairing get theirs (``children_task``).
    ``lookup`` (a score name) also asks which of the page's units already carry it, by our
    score ids."""
    calls = lf.calls(get_run_logger())
    while True:
        try:
            page = fetch_page(
                calls, window, cursor, tuning=lf.tuning, server=server, limit=limit,
                environment=environment,
            )  # fmt: skip
            break
        except HeavyRead as err:
            limit = smaller(limit, "reading traces")
            calls.logger.warning("Langfuse timed out reading %s: asking %d at a time", err, limit)
    page.limit = limit
    if observations:
        page.kinds = with_children(calls, page.records, window, kinds, environment)
    if lookup is not None and page.records:
        page.scored = by_id_lookup(calls, page.records, lookup, observations)
    calls.logger.info(
        "page %d: %d traces%s", page_no, page.rows, "" if page.cursor else " (last page)"
    )
    return page


@task(name="fetch-children", task_run_name="fetch children {chunk_no}", cache_policy=NO_CACHE)
def children_task(
    lf: Access,
    window: Window,
    records: list[TraceRecord],
    kinds: dict[str, ChildMode | None] | None,
    chunk_no: int,
    environment: list[str] | None = None,
) -> tuple[list[TraceRecord], dict[str, ChildMode | None] | None]:
    """The generations and retrieved documents of the traces about to be paired."""
    calls = lf.calls(get_run_logger())
    kinds = with_children(calls, records, window, kinds, environment)
    calls.logger.info(
        "chunk %d: %d generations, %d traces with retrieved documents", chunk_no,
        sum(len(r.generations) for r in records), sum(bool(r.retrieved) for r in records),
    )  # fmt: skip
    return records, kinds


def roots_before(
    calls: Calls, window: Window, environment: Sequence[str] | None = None
) -> set[str]:
    """Traces with a root observation in the hour(s) before the window (as long as a trace may
    run): a trace whose roots straddle the window's start belongs to the earlier window."""
    start = window.start - timedelta(seconds=calls.tuning.trace_max_duration_s)
    return root_trace_ids(calls, start, window.start, window.tags, environment,
                          what="reading traces that began before the window")  # fmt: skip


@task(name="find-earlier-traces", task_run_name="find traces that began earlier",
      cache_policy=NO_CACHE)  # fmt: skip
def roots_before_task(lf: Access, window: Window, environment: list[str] | None) -> set[str]:
    return roots_before(lf.calls(get_run_logger()), window, environment)


def metric_count(calls: Calls, version: str, query: dict[str, Any]) -> int | None:
    """A count from Langfuse's metrics API (``v1``: the legacy tables; ``v2``: the v4 events
    tables), in one request, never retried; None when the server cannot say (404: not in
    this write mode; a daily limit spent; anything else)."""
    path = "metrics" if version == "v1" else "v2/metrics"
    cfg = calls.cfg
    auth = (cfg.public_key, cfg.secret_key.get_secret_value())

    def get() -> httpx.Response:
        return httpx.get(
            f"{cfg.base_url}/api/public/{path}", params={"query": json.dumps(query)}, auth=auth,
            timeout=cfg.timeout_s, verify=tls(),
        )  # fmt: skip

    try:
        resp = calls(f"counting (GET {path})", get, retry=False)
        rows = resp.json().get("data") if resp.status_code == 200 else None
        if not isinstance(rows, list):
            return None
        return int(rows[0]["count_count"]) if rows else 0
    except Exception:
        return None


def count_query(
    view: str, filters: list[dict[str, Any]], start: datetime, end: datetime
) -> dict[str, Any]:
    """A metrics query counting ``view`` rows in [start, end): the API's ends are both
    inclusive, so the end is moved back a millisecond."""
    return {
        "view": view,
        "metrics": [{"measure": "count", "aggregation": "count"}],
        "filters": filters,
        "fromTimestamp": start.isoformat(),
        "toTimestamp": (end - timedelta(milliseconds=1)).isoformat(),
    }


def legacy_traces(calls: Calls, window: Window) -> int | None:
    """How many traces with the window's tags the legacy tables hold in it (v1 metrics): a
    server left in LANGFUSE_MIGRATION_V4_WRITE_MODE=legacy writes only those, and v2
    observations then answer 200 with no data."""
    tags = {"column": "tags", "operator": "any of", "value": list(window.tags),
            "type": "arrayOptions"}  # fmt: skip
    return metric_count(calls, "v1", count_query("traces", [tags], window.start, window.end))


def roots_in_window(calls: Calls, window: Window) -> int | None:
    """How many root observations with the window's tags started in it (v2 metrics)."""
    filters: list[dict[str, Any]] = [
        {"column": "isRootObservation", "operator": "=", "value": True, "type": "boolean"},
        {"column": "tags", "operator": "any of", "value": list(window.tags),
         "type": "arrayOptions"},
    ]  # fmt: skip
    return metric_count(calls, "v2", count_query("observations", filters, window.start, window.end))


def scores_in_range(calls: Calls, score_name: str, start: datetime, end: datetime) -> int | None:
    """How many scores named ``score_name`` have a timestamp in [start, end) (v2 metrics)."""
    name = {"column": "name", "operator": "=", "value": score_name, "type": "string"}
    return metric_count(calls, "v2", count_query("scores-numeric", [name], start, end))
