"""Fetch stage: the root observations (= traces) of a window, page by page, and what is scored.

One ``GET /api/public/v2/observations`` per page of up to 1000 traces, cursor paging, newest
first; one ``GET /api/public/v3/scores`` per 100 scores the window already carries.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from langfuse.api import LangfuseAPI
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from tasks.config import LangfuseSettings, Tuning
from tasks.models import GenerationRecord, TraceRecord, Window
from tasks.pairs import SkipError, first_value, parse_io
from tasks.retry import retrying

ROOT_FIELDS = "core,basic,io,metadata"
CHILD_FIELDS = "core,io,model"
NO_RETRY: Any = {"max_retries": 0}


def make_api(cfg: LangfuseSettings) -> LangfuseAPI:
    """The SDK's generated REST client. Retries are ours (tasks.retry), not the client's."""
    return LangfuseAPI(
        base_url=cfg.base_url,
        username=cfg.public_key,
        password=cfg.secret_key.get_secret_value(),
        x_langfuse_public_key=cfg.public_key,
        x_langfuse_sdk_name="langfuse-tlm-evals",
        timeout=cfg.timeout_s,
    )


def tag_filter(tags: Sequence[str]) -> str | None:
    if not tags:
        return None
    return json.dumps(
        [{"type": "arrayOptions", "column": "tags", "operator": "any of", "value": list(tags)}]
    )


@dataclass(slots=True)
class Page:
    records: list[TraceRecord]
    cursor: str | None
    project_id: str | None
    rows: int  # rows the page held, repeats included
    requests: int = 1  # Langfuse requests the page took
    kinds: dict[str, bool] | None = None  # the window-wide probes' answers (first page only)


def _to_record(obs: Any) -> TraceRecord:
    return TraceRecord(
        trace_id=obs.trace_id or obs.id,
        observation_id=obs.id,
        start_time=obs.start_time,
        name=obs.name,
        input=obs.input,
        output=obs.output,
        metadata=obs.metadata,
        environment=obs.environment,
    )


CHILD_KINDS = ("GENERATION", "RETRIEVER")  # observations a pair may need besides the root


def child_query(
    api: LangfuseAPI,
    window: Window,
    environment: Sequence[str] | None,
    *,
    start: datetime,
    end: datetime,
    **params: Any,
) -> Any:
    """GET v2/observations over [start, end) for the window's tags and environments."""
    return api.observations.get_many(
        from_start_time=start,
        to_start_time=end,
        environment=list(environment) if environment else None,
        filter=tag_filter(window.tags),
        request_options=NO_RETRY,
        **params,
    )


def window_has(
    api: LangfuseAPI,
    window: Window,
    kind: str,
    *,
    tuning: Tuning,
    environment: Sequence[str] | None = None,
    logger: Any,
) -> bool:
    """One cheap request: does any observation of ``kind`` exist among the window's traces?

    Windows traced without an LLM integration (the seed's shape) then skip the per-page
    look-ups for that kind entirely.
    """
    resp = retrying(
        tuning,
        logger,
        f"looking for {kind} observations (GET v2/observations)",
        lambda: child_query(
            api,
            window,
            environment,
            start=window.start,
            end=window.end + timedelta(seconds=tuning.trace_max_duration_s),
            fields="core",
            limit=1,
            type=kind,
        ),
    )
    return bool(resp.data)


def probe_children(
    api: LangfuseAPI,
    window: Window,
    *,
    tuning: Tuning,
    environment: Sequence[str] | None = None,
    logger: Any,
) -> tuple[dict[str, bool], int]:
    """Which CHILD_KINDS the window's traces hold, and the requests it took.

    One request lists the types of up to 1000 non-root observations: a window with fewer
    (the seed's shape has none) is settled by it; otherwise the kinds not seen yet are asked
    for one by one.
    """
    resp = retrying(
        tuning,
        logger,
        "looking for child observations (GET v2/observations)",
        lambda: child_query(
            api,
            window,
            environment,
            start=window.start,
            end=window.end + timedelta(seconds=tuning.trace_max_duration_s),
            fields="core",
            limit=1000,
            is_root_observation=False,
        ),
    )
    seen = {str(o.type) for o in resp.data}
    kinds = {k: k in seen for k in CHILD_KINDS}
    requests = 1
    if getattr(resp.meta, "cursor", None):
        for kind, present in kinds.items():
            if not present:
                kinds[kind] = window_has(
                    api, window, kind, tuning=tuning, environment=environment, logger=logger
                )
                requests += 1
    return kinds, requests


def context_text(value: Any) -> str | None:
    """Retrieved documents as text: strings, or dicts carrying page_content/text/content."""
    try:
        value = parse_io(value)
    except SkipError:
        return None  # unreadable context is left out, not guessed
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, dict):
        for key in ("documents", "docs", "results", "context"):
            if key in value:
                return context_text(value[key])
        for key in ("page_content", "pageContent", "text", "content"):
            if isinstance(value.get(key), str):
                return value[key].strip() or None
        return None
    if isinstance(value, list):
        parts = [t for t in (context_text(v) for v in value) if t]
        return "\n\n".join(parts) or None
    return None


def attach_children(
    api: LangfuseAPI,
    records: list[TraceRecord],
    window: Window,
    kind: str,
    *,
    tuning: Tuning,
    environment: Sequence[str] | None = None,
    logger: Any,
) -> int:
    """Attach each record's ``kind`` observations (generations, or retrieved context).

    One query for the whole page (that type, the page's time span plus the longest a trace may
    run, the same tags), never one request per trace. Returns the requests it took.
    """
    if not records:
        return 0
    by_id = {r.trace_id: r for r in records}
    lo = min(r.start_time for r in records)
    hi = max(r.start_time for r in records) + timedelta(seconds=tuning.trace_max_duration_s)
    seen: set[str] = set()
    cursor: str | None = None
    requests = 0
    while True:
        requests += 1

        def call(page_cursor: str | None = cursor) -> Any:
            return child_query(
                api,
                window,
                environment,
                start=lo,
                end=hi,
                fields=CHILD_FIELDS,
                limit=1000,
                cursor=page_cursor,
                type=kind,
            )

        resp = retrying(tuning, logger, f"reading {kind} observations (GET v2/observations)", call)
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
                        model=getattr(obs, "model", None),
                    )
                )
            else:
                text = context_text(obs.output)
                if text:
                    rec.context = f"{rec.context}\n\n{text}" if rec.context else text
        cursor = getattr(resp.meta, "cursor", None) or None
        if not cursor or not resp.data:
            return requests


def fetch_page(
    api: LangfuseAPI,
    window: Window,
    cursor: str | None,
    *,
    tuning: Tuning,
    environment: Sequence[str] | None = None,
    logger: Any,
) -> Page:
    def call() -> Any:
        return api.observations.get_many(
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

    resp = retrying(tuning, logger, "reading traces (GET v2/observations)", call)
    next_cursor = getattr(resp.meta, "cursor", None) or None
    project_id = resp.data[0].project_id if resp.data else None
    return Page(
        records=[_to_record(o) for o in resp.data],
        cursor=next_cursor,
        project_id=project_id,
        rows=len(resp.data),
    )


def scored_trace_ids(
    api: LangfuseAPI,
    *,
    score_name: str,
    start: datetime,
    end: datetime,
    tuning: Tuning,
    logger: Any,
    observations: bool = False,
) -> tuple[dict[str, float | None], int]:
    """What already carries ``score_name`` with a timestamp in [start, end), and its value.

    Keys are trace ids (or observation ids for observation-scope scores). Our scores carry
    their subject's start time as timestamp, so the window's range finds them.
    """
    found: dict[str, float | None] = {}
    cursor: str | None = None
    requests = 0
    while True:
        requests += 1

        def call(page_cursor: str | None = cursor) -> Any:
            return api.scores.get_many(
                name=score_name,
                from_timestamp=start,
                to_timestamp=end,
                fields="subject",
                limit=100,
                cursor=page_cursor,
                request_options=NO_RETRY,
            )

        resp = retrying(tuning, logger, "reading existing scores (GET v3/scores)", call)
        want = "observation" if observations else "trace"
        for score in resp.data:
            subject = getattr(score, "subject", None)
            key = getattr(subject, "id", None) if getattr(subject, "kind", None) == want else None
            if key:
                value = getattr(score, "value", None)
                found[key] = float(value) if isinstance(value, int | float) else None
        cursor = getattr(resp.meta, "cursor", None)
        if not cursor or not resp.data:
            return found, requests


@task(name="find-scored-traces", task_run_name="find traces already scored", cache_policy=NO_CACHE)
def find_scored_task(
    cfg: LangfuseSettings,
    score_name: str,
    start: datetime,
    end: datetime,
    tuning: Tuning,
    observations: bool = False,
) -> tuple[dict[str, float | None], int]:
    logger = get_run_logger()
    found, requests = scored_trace_ids(
        make_api(cfg),
        score_name=score_name,
        start=start,
        end=end,
        tuning=tuning,
        logger=logger,
        observations=observations,
    )
    what = "observations" if observations else "traces"
    logger.info("%d %s of the window already carry %r", len(found), what, score_name)
    return found, requests


@task(name="fetch-traces", task_run_name="fetch page {page_no}", cache_policy=NO_CACHE)
def fetch_page_task(
    cfg: LangfuseSettings,
    window: Window,
    cursor: str | None,
    page_no: int,
    tuning: Tuning,
    environment: list[str] | None = None,
    kinds: dict[str, bool] | None = None,
) -> Page:
    """One page of root observations, with their generations and retrieved context attached.

    ``kinds=None`` (the first page) asks Langfuse once per kind whether the window holds any;
    later pages are told the answer.
    """
    logger = get_run_logger()
    api = make_api(cfg)
    page = fetch_page(api, window, cursor, tuning=tuning, environment=environment, logger=logger)
    if kinds is None and page.records:
        kinds, n = probe_children(
            api, window, tuning=tuning, environment=environment, logger=logger
        )
        page.requests += n
        page.kinds = kinds
    for kind, present in (kinds or {}).items():
        if present:
            page.requests += attach_children(
                api,
                page.records,
                window,
                kind,
                tuning=tuning,
                environment=environment,
                logger=logger,
            )
    for rec in page.records:  # a configured metadata key may hold the context instead
        if rec.context is None:
            rec.context = context_text(first_value(rec.metadata, tuning.context_keys))
    logger.info(
        "page %d: %d traces, %d generations, %d with retrieved context%s",
        page_no,
        page.rows,
        sum(len(r.generations) for r in page.records),
        sum(r.context is not None for r in page.records),
        "" if page.cursor else " (last page)",
    )
    return page
