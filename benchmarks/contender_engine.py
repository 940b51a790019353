"""The engine, without Prefect: the floor's calls, but chunk by chunk through ``TLMEngine``.

1000-row pages; each page's pairs go to ONE ``TLMEngine`` (one TLM client for the run) as soon
as the page is read, with at most two chunks out at once (as the flow will run them); a chunk's
scores are POSTed when it is done. Shows what the engine alone costs against the floor's one
list call, before the flow is rewired to use it.
"""

from __future__ import annotations

import os
import uuid
from collections import deque
from concurrent.futures import Future
from typing import Any, cast

from benchmarks.child import Clock, Spec, main, seed_pair, tag_filter
from benchmarks.contender_floor import NAMESPACE, pack

CHUNKS_OUT = 2


def work(spec: Spec, figures: dict[str, Any]) -> None:
    from langfuse.api import LangfuseAPI

    from tasks.config import load_tlm, load_tuning
    from tasks.models import Pair
    from tasks.score import ScoreResult, TLMEngine

    api = LangfuseAPI(
        base_url=os.environ["LANGFUSE_BASE_URL"],
        username=os.environ["LANGFUSE_PUBLIC_KEY"],
        password=os.environ["LANGFUSE_SECRET_KEY"],
        timeout=120,
    )
    tuning = load_tuning()
    clock = Clock()
    posts = scored = fetched = failed = 0
    out: deque[tuple[Future[ScoreResult], dict[str, str]]] = deque()

    def drain(keep: int) -> None:
        nonlocal posts, scored, failed
        while len(out) > keep:
            future, starts = out.popleft()
            result = future.result()
            failed += len(result.failed)
            bodies = [
                {
                    "id": str(uuid.uuid5(NAMESPACE, s.pair.trace_id)),
                    "traceId": s.pair.trace_id,
                    "name": spec.score_name,
                    "value": s.score,
                    "dataType": "NUMERIC",
                    "timestamp": starts[s.pair.trace_id],
                    "comment": s.explanation,
                }
                for s in result.scored
            ]
            for batch in pack(bodies):
                api.scores.create(request=cast(Any, batch))
                posts += 1
            scored += len(bodies)

    with TLMEngine(load_tlm(), quality_preset="medium", timeout_s=tuning.tlm_timeout_s) as engine:
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
            pairs = []
            starts = {}
            for o in resp.data:
                prompt, response = seed_pair(o.input, o.output, o.metadata, spec.system_prompt_key)
                trace_id = o.trace_id or o.id
                starts[trace_id] = o.start_time.isoformat()
                pairs.append(Pair(trace_id, o.start_time, o.name, None, prompt, response, "seed"))
            fetched += len(pairs)
            drain(CHUNKS_OUT - 1)  # room for this chunk
            out.append((engine.submit(pairs), starts))
            cursor = getattr(resp.meta, "cursor", None)
            if not cursor:
                break
        drain(0)
    clock.stop(figures)
    figures["fetched"] = fetched
    figures["scored"] = scored
    figures["failed_to_score"] = failed
    figures["score_posts"] = posts


if __name__ == "__main__":
    main(work)
