"""The benchmark's data: a window of N tagged traces of realistic size, the same for everyone.

Traces have the seed's shape (an ``@observe`` root span, no GENERATION children): input
``{"args": [question], "kwargs": {}}``, the answer as plain text, the system prompt in trace
metadata. Questions run from 300 to 3,000 characters, answers from 200 to 2,500 (a few hundred
to a few thousand, as in production chat traces); the system prompt stays under Langfuse's
200-character metadata truncation so that every contender reads the same prompt.

Everything is deterministic (fixed RNG seed, fixed window, trace ids derived from the index):
every contender's fresh sandbox store holds exactly the same traces.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sandbox.langfuse import LangfuseStore

TAG = "TLM_eval_pipeline"
OTHER_TAG = "other_pipeline"  # noise traces in the same window: every contender must skip them
SCORE_NAME = "trust_score"
SYSTEM_PROMPT = (
    "You are a careful assistant for a trivia and general-knowledge service. Answer the user's "
    "question accurately and say when you are unsure."
)
assert len(SYSTEM_PROMPT) < 200  # not truncated by the v2 observations metadata field group

WINDOW_START = datetime(2025, 6, 1, tzinfo=UTC)
WINDOW_END = WINDOW_START + timedelta(days=1)

QUESTION_CHARS = (300, 3000)
ANSWER_CHARS = (200, 2500)
NOISE_SHARE = 0.01  # extra untagged-for-us traces in the window, as a share of N

_WORDS = (  # noqa: SIM905 (a list literal of 90 words would be 90 lines)
    "the of and to in is was for on that with as by at from his her an which it be are this "
    "capital river mountain century empire treaty population element reaction velocity energy "
    "planet orbit galaxy theorem proof integer prime function derivative matrix vector protein "
    "enzyme genome species climate ocean desert forest language grammar novel poet painter "
    "symphony architecture bridge railway engine voltage current circuit algorithm database "
    "network protocol market inflation currency election parliament constitution revolution "
    "approximately because however therefore although historically measured estimated reported"
).split()


@dataclass(frozen=True, slots=True)
class TraceSpec:
    trace_id: str
    start_time: datetime
    question: str
    answer: str
    tag: str


def _corpus(rng: random.Random, chars: int) -> str:
    words: list[str] = []
    size = 0
    while size < chars:
        w = rng.choice(_WORDS)
        words.append(w)
        size += len(w) + 1
    return " ".join(words)


def trace_id(i: int, seed: int) -> str:
    return hashlib.sha256(f"bench-{seed}-{i}".encode()).hexdigest()[:32]


def traces(n: int, *, seed: int = 42) -> Iterator[TraceSpec]:
    """N tagged traces plus ``NOISE_SHARE * N`` traces with another tag, in the window.

    Yielded one at a time (a 100k window would otherwise be held twice: here and in the store).
    """
    rng = random.Random(seed)
    corpus = _corpus(rng, 1 << 20)
    noise = int(n * NOISE_SHARE)
    total = n + noise
    every = total // noise if noise else 0  # trace i is noise when i % every == 0
    span_ms = int((WINDOW_END - WINDOW_START).total_seconds() * 1000)
    step_ms = span_ms / total
    for i in range(total):
        q_len = rng.randint(*QUESTION_CHARS)
        a_len = rng.randint(*ANSWER_CHARS)
        q_at = rng.randrange(0, len(corpus) - q_len)
        a_at = rng.randrange(0, len(corpus) - a_len)
        yield TraceSpec(
            trace_id=trace_id(i, seed),
            start_time=WINDOW_START + timedelta(milliseconds=int(i * step_ms) + 1),
            question=f"Question {i}: {corpus[q_at : q_at + q_len]}?",
            answer=f"Answer {i}: {corpus[a_at : a_at + a_len]}.",
            # noise traces are spread through the window, not bunched at its end
            tag=OTHER_TAG if every and i % every == 0 and i // every < noise else TAG,
        )


def seed_store(store: LangfuseStore, n: int, *, seed: int = 42) -> set[str]:
    """Seed ``store`` with the window's traces; returns the ids of the N tagged ones."""
    tagged: set[str] = set()
    for t in traces(n, seed=seed):
        store.add_trace(
            trace_id=t.trace_id,
            name="generate_answer",
            tags=[t.tag],
            metadata={"system_prompt": SYSTEM_PROMPT},
            input={"args": [t.question], "kwargs": {}},
            output=t.answer,
            start_time=t.start_time,
            end_time=t.start_time + timedelta(milliseconds=850),
            root_observation_id=t.trace_id[:16],
        )
        if t.tag == TAG:
            tagged.add(t.trace_id)
    return tagged
