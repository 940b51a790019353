"""The floor: only the necessary calls, no orchestration.

1000-row pages of ``GET v2/observations`` (the maximum), ONE TLM list call for the whole window,
and score POSTs through ``api.scores.create`` packed to the 1 MB body limit. No retries beyond
the SDK client's defaults, no bookkeeping, no report, no Prefect: a lower bound for time and
Langfuse requests (not for memory: it holds the whole window at once).
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any, cast

from benchmarks.child import Clock, Spec, main, seed_pair, tag_filter

BODY_LIMIT = 1_000_000  # bytes of the JSON list (the SDK's and Langfuse's limit)
NAMESPACE = uuid.UUID("0f8a2c1e-5b7d-4c39-9e61-7a0d3b5c2f14")


def pack(bodies: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    batches: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    size = 2
    for body in bodies:
        n = len(json.dumps(body).encode()) + 2  # default separators, ASCII: an upper bound
        if current and size + n > BODY_LIMIT:
            batches.append(current)
            current, size = [], 2
        current.append(body)
        size += n
    if current:
        batches.append(current)
    return batches


def work(spec: Spec, figures: dict[str, Any]) -> None:
    from cleanlab_tlm import TLM
    from langfuse.api import LangfuseAPI

    api = LangfuseAPI(
        base_url=os.environ["LANGFUSE_BASE_URL"],
        username=os.environ["LANGFUSE_PUBLIC_KEY"],
        password=os.environ["LANGFUSE_SECRET_KEY"],
        timeout=120,
    )
    # no per-item timeout: TLM's timeout also counts the time an item waits for a slot, and
    # one call for a 100k window keeps items queued for minutes
    tlm = TLM(options={"log": ["explanation"]}, verbose=False)
    clock = Clock()
    ids: list[str] = []
    starts: list[str] = []
    prompts: list[str] = []
    responses: list[str] = []
    cursor: str | None = None
    while True:
        resp = api.observations.get_many(
            fields="core,basic,io,metadata",
            expand_metadata=spec.system_prompt_key,
            limit=1000,
            cursor=cursor,
            is_root_observation=True,
            from_start_time=spec.window_start,
            to_start_time=spec.window_end,
            filter=tag_filter(spec.tag),
        )
        for o in resp.data:
            prompt, response = seed_pair(o.input, o.output, o.metadata, spec.system_prompt_key)
            ids.append(o.trace_id or o.id)
            starts.append(o.start_time.isoformat())
            prompts.append(prompt)
            responses.append(response)
        cursor = getattr(resp.meta, "cursor", None)
        if not cursor:
            break
    t_fetch = clock.lap()
    results = tlm.get_trustworthiness_score(prompts, responses)
    t_tlm = clock.lap()
    del prompts, responses
    bodies: list[dict[str, Any]] = []
    answers: list[Any] = list(results)
    for trace_id, start, r in zip(ids, starts, answers, strict=True):
        score = r.get("trustworthiness_score") if isinstance(r, dict) else None
        if score is None:
            continue
        bodies.append(
            {
                "id": str(uuid.uuid5(NAMESPACE, trace_id)),
                "traceId": trace_id,
                "name": spec.score_name,
                "value": score,
                "dataType": "NUMERIC",
                "timestamp": start,
                "comment": (r.get("log") or {}).get("explanation"),
            }
        )
    posts = 0
    for batch in pack(bodies):
        api.scores.create(request=cast(Any, batch))  # JSON-ready dicts, as the SDK's queue sends
        posts += 1
    clock.stop(figures)
    figures["phases_s"] = {
        "fetch_and_pair": round(t_fetch, 3),
        "tlm": round(t_tlm - t_fetch, 3),
        "upload": round(figures["work_s"] - t_tlm, 3),
    }
    figures["fetched"] = len(ids)
    figures["scored"] = len(bodies)
    figures["score_posts"] = posts


if __name__ == "__main__":
    main(work)
