"""The rows that flow between stages. Light dataclasses: a 100k-trace window streams through."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from tasks.failures import Reason, why

SCORE_NAMESPACE = uuid.UUID("6f1c3a52-8a47-4d0e-9a8e-3d1f0b6c2e11")


def score_id(trace_id: str, score_name: str, observation_id: str | None = None) -> str:
    """The same (trace, [observation,] name) always gets the same score id."""
    key = f"{trace_id}\x1f{observation_id or ''}\x1f{score_name}"
    return str(uuid.uuid5(SCORE_NAMESPACE, safe_text(key)))


@dataclass(slots=True, frozen=True)
class Window:
    start: datetime  # inclusive, timezone-aware
    end: datetime  # exclusive
    tags: tuple[str, ...] = ()


@dataclass(slots=True)
class GenerationRecord:
    """A GENERATION observation of a trace: the model call itself, full messages included."""

    observation_id: str
    start_time: datetime
    input: Any  # raw string (usually JSON text) as Langfuse returns it
    output: Any
    model: str | None = None


@dataclass(slots=True)
class TraceRecord:
    """One trace, read through its root observation (io as the raw strings Langfuse returns)."""

    trace_id: str
    observation_id: str
    start_time: datetime
    name: str | None
    input: Any  # raw string (usually JSON text) as Langfuse returns it
    output: Any
    metadata: dict[str, Any] | None
    environment: str | None
    generations: list[GenerationRecord] = field(default_factory=list)
    retrieved: list[Any] = field(default_factory=list)  # RETRIEVER outputs (RAG), raw
    score_observation: str | None = None  # observation scope: the observation to score

    @property
    def key(self) -> str:
        return self.score_observation or self.trace_id


@dataclass(slots=True)
class Pair:
    trace_id: str
    start_time: datetime
    name: str | None
    environment: str | None
    prompt: str
    response: str
    source: str  # which shape the prompt came from, e.g. "chat", "observe_args", "generation"
    observation_id: str | None = None  # set when the score belongs on an observation
    context: str | None = None  # retrieved context (RAG), also in the prompt
    query: str | None = None  # with context: what the user asked
    only: frozenset[str] | None = None  # the score names to write (None: all the run writes)

    @property
    def key(self) -> str:
        """What is scored: the observation in observation scope, else the trace."""
        return self.observation_id or self.trace_id


@dataclass(slots=True)
class Scored:
    pair: Pair
    score: float
    explanation: str | None
    extra: dict[str, float] = field(default_factory=dict)  # evals, criteria: full name -> value
    labels: dict[str, str] = field(default_factory=dict)  # the cause: full name -> value
    failed_evals: dict[str, str] = field(default_factory=dict)  # full name -> why not written
    rag: bool = False  # scored by TrustworthyRAG

    def writes(self, name: str) -> bool:
        return self.pair.only is None or name in self.pair.only


class Bucket(StrEnum):
    ALREADY_SCORED = "already_scored"
    SKIPPED = "skipped"
    FAILED_TO_SCORE = "failed_to_score"
    UPLOADED = "uploaded"
    FAILED_TO_UPLOAD = "failed_to_upload"


@dataclass(slots=True)
class Outcome:
    """Where one fetched trace ended up. Every fetched trace gets exactly one."""

    trace_id: str
    bucket: Bucket
    reason: Reason | None = None  # why it was skipped or failed (PENDING: already scored)
    detail: str = ""  # more about the reason (an error message)
    score: float | None = None  # only for uploaded
    explanation: str | None = None
    name: str | None = None
    start_time: datetime | None = None
    question: str | None = None  # previews for the lowest-trust table
    answer: str | None = None
    observation_id: str | None = None  # observation scope: the scored observation
    cause: str | None = None  # low trust with RAG evals: why (tasks.evals.cause_of)
    failed_evals: dict[str, str] | None = None  # evals and criteria not written, and why

    @property
    def key(self) -> str:
        return self.observation_id or self.trace_id

    @property
    def why(self) -> str:
        return why(self.reason, self.detail)


_SURROGATE = re.compile(r"[\ud800-\udfff]")


def safe_text(text: str) -> str:
    """``text`` with lone surrogates replaced (U+FFFD), so that it encodes as UTF-8."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)


def label_for(score: float, review_below: float, untrustworthy_below: float) -> str:
    """The companion label of a trust score."""
    if score < untrustworthy_below:
        return "untrustworthy"
    if score < review_below:
        return "review"
    return "trustworthy"


_USER_TURN = re.compile(r"(?m)^User: ")


def last_user_turn(prompt: str) -> str:
    """What the user asked last: the prompt's last ``User:`` turn (cleanlab's chat format), not
    the system prompt before it; a plain prompt as it is."""
    turns = list(_USER_TURN.finditer(prompt))
    text = prompt[turns[-1].end() :] if turns else prompt
    return text.rstrip().removesuffix("Assistant:").strip()


def preview(text: str, limit: int = 160, *, tail: bool = False) -> str:
    """One line of ``text``: its start, or for a prompt its end (the last turn)."""
    flat = " ".join(text.split())
    if tail:
        flat = flat.removesuffix("Assistant:").rstrip()
        return flat if len(flat) <= limit else "…" + flat[-(limit - 1) :]
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def outcome_for(
    unit: Pair | TraceRecord,
    bucket: Bucket,
    reason: Reason | None = None,
    detail: str = "",
    **extra: Any,
) -> Outcome:
    """The outcome of one scored unit (a trace, or an observation in observation scope)."""
    return Outcome(
        trace_id=unit.trace_id,
        bucket=bucket,
        reason=reason,
        detail=detail[:500],
        name=unit.name,
        start_time=unit.start_time,
        observation_id=unit.observation_id if isinstance(unit, Pair) else unit.score_observation,
        **extra,
    )
