"""A simulated reviewer for the demo and the README's pictures: it gives a verdict on every item
of the sandbox's annotation queue, as Langfuse's annotation UI records one
(``LangfuseStore.annotate``), after adding every other unflagged trace to the queue as a spot
check (a threshold above the current one is only judged on such verdicts).

Its verdicts are decided by the trace id and score, so they look like a reviewer's: a trace is
marked ``incorrect`` with a chance that falls with its score (19 in 20 up to 0.14, 3 in 10 at
0.5, 1 in 30 from 0.65).
"""

from __future__ import annotations

from sandbox.langfuse import LangfuseSandbox


def play_reviewer(
    lf: LangfuseSandbox, *, score_name: str = "trust_score", verdict: str = "trust_verdict"
) -> int:
    """Verdicts on the (only) queue's items and on every other unflagged trace; how many
    verdicts were given."""
    (queue,) = lf.store.annotation_queues()
    (config,) = [c for c in lf.store.score_configs() if c.name == verdict]
    queued = {item.object_id for item in lf.store.queue_items(queue.id)}
    scores = {
        s.trace_id: float(s.value)
        for s in lf.store.all_scores()
        if s.name == score_name and s.trace_id and isinstance(s.value, float)
    }
    for trace_id in sorted(set(scores) - queued)[::2]:
        lf.store.add_queue_item(queue.id, object_id=trace_id, object_type="TRACE")
    items = lf.store.queue_items(queue.id)
    for item in items:
        odds = int(item.object_id[-4:], 16) % 100 / 100
        chance = min(0.95, max(0.03, 1.2 - 1.8 * scores.get(item.object_id, 0.5)))
        wrong = odds < chance
        label = "incorrect" if wrong else "correct"
        lf.store.annotate(queue.id, item.id, value=label, config_id=config.id)
    return len(items)
