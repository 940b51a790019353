"""The seed's approach, ported to Langfuse SDK 5.

50-row pages of ``Langfuse().api.observations.get_many`` (the API's default page size, fields
including io and metadata), one ``TLM(...).get_trustworthiness_score(prompts, responses)`` call
for everything, then ``Langfuse().create_score(...)`` per trace through the SDK's background
queue (batches of 15 or 1 s; 3 tries on 429/5xx ignoring Retry-After, then logged and DROPPED),
and ``flush()``. Nothing tells it which scores were dropped: the harness counts what landed.
"""

from __future__ import annotations

from typing import Any

from benchmarks.child import Clock, Spec, main, seed_pair, tag_filter


def work(spec: Spec, figures: dict[str, Any]) -> None:
    from cleanlab_tlm import TLM
    from langfuse import Langfuse

    langfuse = Langfuse()  # LANGFUSE_* from the environment, as the seed did
    tlm = TLM(options={"log": ["explanation"]}, verbose=False)
    clock = Clock()
    rows: list[Any] = []
    cursor: str | None = None
    pages = 0
    while True:
        resp = langfuse.api.observations.get_many(
            fields="core,basic,io,metadata",
            limit=50,
            cursor=cursor,
            is_root_observation=True,
            from_start_time=spec.window_start,
            to_start_time=spec.window_end,
            filter=tag_filter(spec.tag),
        )
        pages += 1
        rows.extend(resp.data)
        cursor = getattr(resp.meta, "cursor", None)
        if not cursor:
            break
    t_fetch = clock.lap()
    pairs = [seed_pair(o.input, o.output, o.metadata, spec.system_prompt_key) for o in rows]
    results: list[Any] = list(
        tlm.get_trustworthiness_score([p for p, _ in pairs], [r for _, r in pairs])
    )
    t_tlm = clock.lap()
    queued = 0
    for o, r in zip(rows, results, strict=True):
        score = r.get("trustworthiness_score") if isinstance(r, dict) else None
        if score is None:
            continue
        langfuse.create_score(
            trace_id=o.trace_id or o.id,
            name=spec.score_name,
            value=score,
            comment=(r.get("log") or {}).get("explanation"),
        )
        queued += 1
    langfuse.flush()
    clock.stop(figures)
    figures["phases_s"] = {
        "fetch": round(t_fetch, 3),
        "pair_and_tlm": round(t_tlm - t_fetch, 3),
        "queue_and_flush": round(figures["work_s"] - t_tlm, 3),
    }
    figures["fetched"] = len(rows)
    figures["pages"] = pages
    figures["scored"] = queued
    langfuse.shutdown()


if __name__ == "__main__":
    main(work)
