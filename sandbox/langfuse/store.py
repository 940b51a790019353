"""The in-memory Langfuse project the sandbox serves."""

from __future__ import annotations

from sandbox.langfuse.store_review import ReviewStore


class LangfuseStore(ReviewStore):
    """One in-memory Langfuse project: traces, observations, scores. Thread-safe.

    Every store gets fresh random API keys unless ``public_key``/``secret_key`` are given (the
    SDK keeps one client per public key per process, so a new in-process sandbox must not reuse
    an old key; ``python -m sandbox`` passes stable ones, one process per sandbox).

    ``profile`` picks the server modelled ("current" or "v4.16", see ``PROFILES``). The store
    also reaches the server's settings (``settings``, shared by every project of one server:
    ``profile``, ``preview_opt_in``, ``version``, ``write_mode``, ``heavy_read_rows``, the clock
    (``advance_clock``) and the score read lag (``set_score_read_lag``)); the project's own are
    its keys, ``ingestion_suspended`` and ``max_annotation_queues``. ``annotate`` plays the
    reviewer of an annotation queue (sandbox only).
    """
