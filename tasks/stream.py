"""A stream: the traces of one Langfuse project that carry any of some tags, scored as one name.

Every name a run derives from what it evaluates comes from here: the window lock, the score
ledger, the record of evaluated days, the artifact keys and a backfill day's idempotency key.

Two keys, because two things are decided at two levels:

- ``key`` (project, tags, score name) names what a stream *reports*: its evaluated days and its
  artifacts. Tags are normalised once: order and duplicates do not matter; case does, as it
  does for Langfuse's tag filter.
- ``scores_key`` (project, score name) names what a stream *pays for*. A score's id derives
  from its trace and the score name only, so two streams of one project and score name whose
  tags overlap (``[A]`` and ``[A, B]``, or ``[A]`` and ``[B]`` with traces tagged both) share
  their traces' scores: they share the ledger, and the window lock excludes them from each
  other on the same UTC day.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Stream:
    project: str  # the Langfuse project's id (GET /api/public/projects)
    tags: tuple[str, ...]  # sorted, without duplicates
    score_name: str

    @classmethod
    def of(cls, project: str, tags: Iterable[str], score_name: str) -> Stream:
        return cls(project, tuple(sorted(set(tags))), score_name)

    @property
    def key(self) -> str:
        return _digest("stream", self.project, *self.tags, "", self.score_name)[:16]

    @property
    def scores_key(self) -> str:
        return _digest("scores", self.project, self.score_name)[:16]

    @property
    def label(self) -> str:
        return f"[{', '.join(self.tags)}] {self.score_name}"

    def lock_name(self, day: date) -> str:
        """The Prefect Variable that locks ``day`` for every stream sharing ``scores_key``."""
        return f"trust_window_{day.isoformat()}_{self.scores_key[:12]}"

    def day_record_name(self, day: date) -> str:
        """The Prefect Variable that records ``day`` as evaluated for this stream."""
        return f"{self.day_record_prefix}{day.isoformat()}"

    @property
    def day_record_prefix(self) -> str:
        return f"trust_evaluated_{self.key[:12]}_"

    def artifact_key(self, kind: str) -> str:
        """A Prefect artifact key of this stream (lowercase letters, digits and dashes): the
        tags and score name to read, the stream key to tell projects apart."""
        words = re.sub(r"[^a-z0-9]+", "-", f"{'-'.join(self.tags)}-{self.score_name}".lower())
        words = words.strip("-")[:40].rstrip("-")
        return f"{kind}-{words}-{self.key[:8]}"
