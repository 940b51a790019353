"""The in-memory Langfuse project the sandbox serves."""

from __future__ import annotations

from sandbox.langfuse.store_observations import ObservationStore
from sandbox.langfuse.store_queues import QueueStore
from sandbox.langfuse.store_scores import ScoreStore


class LangfuseStore(ObservationStore, ScoreStore, QueueStore):
    """One in-memory Langfuse project: traces, observations, scores. Thread-safe.

    Every store gets fresh random API keys unless ``public_key``/``secret_key`` are given (the
    SDK keeps one client per public key per process, so a new in-process sandbox must not reuse
    an old key; ``python -m sandbox`` passes stable ones, one process per sandbox).

    ``profile`` picks the server modelled ("current" or "v4.16", see ``PROFILES``). The store
    also holds the server's settings (``preview_opt_in``, ``version``), its clock
    (``advance_clock``) and the score read lag (``set_score_read_lag``).
    """
