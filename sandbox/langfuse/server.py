"""The Langfuse sandbox served from a thread on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, Self

from sandbox.faults import FaultState, FixedWindowRateLimit
from sandbox.langfuse.app import create_langfuse_app
from sandbox.langfuse.common import RATE_LIMIT_BUCKETS
from sandbox.langfuse.records import DroppedScore
from sandbox.langfuse.store import LangfuseStore
from sandbox.runner import ServerThread


class LangfuseSandbox(ServerThread):
    """The Langfuse sandbox on 127.0.0.1:<free port>, served from a thread.

    ``with LangfuseSandbox() as lf: Langfuse(**lf.client_kwargs())`` or export ``lf.env()``.

    ``profile``: the server modelled, "current" (Cloud / self-hosted v4.59+, the SDK 5
    contract) or "v4.16" (self-hosted v4.16.0). ``preview_opt_in=False`` models a v4.16 server
    started without ``LANGFUSE_MIGRATION_V4_ALLOW_PREVIEW_OPT_IN=true``. ``version`` overrides
    what /api/public/health reports. ``public_key``/``secret_key``: the key pair (default: the
    store's, random). With a ``store``, these settings are written onto it.
    """

    def __init__(
        self,
        store: LangfuseStore | None = None,
        port: int | None = None,
        profile: str = "current",
        preview_opt_in: bool = True,
        version: str | None = None,
        public_key: str | None = None,
        secret_key: str | None = None,
    ) -> None:
        self.store = store or LangfuseStore(profile=profile)
        self.store.profile = profile
        if public_key:
            self.store.public_key = public_key
        if secret_key:
            self.store.secret_key = secret_key
        self.store.preview_opt_in = preview_opt_in
        self.store.version = version
        app = create_langfuse_app(self.store)
        super().__init__(app, port=port)
        self.faults: FaultState = app.state.faults

    @property
    def profile(self) -> str:
        return self.store.profile

    @profile.setter
    def profile(self, value: str) -> None:
        self.store.profile = value

    @property
    def preview_opt_in(self) -> bool:
        return self.store.preview_opt_in

    @preview_opt_in.setter
    def preview_opt_in(self, value: bool) -> None:
        self.store.preview_opt_in = value

    @property
    def version(self) -> str:
        """What GET /api/public/health reports."""
        return self.store.server_version

    @version.setter
    def version(self, value: str | None) -> None:
        self.store.version = value

    def advance_clock(self, seconds: float) -> None:
        """Shift the server's "now" by ``seconds`` (see :meth:`LangfuseStore.advance_clock`)."""
        self.store.advance_clock(seconds)

    def set_score_read_lag(self, seconds: float) -> None:
        """GET v3/scores shows a score only ``seconds`` (sandbox clock) after it was written."""
        self.store.set_score_read_lag(seconds)

    @property
    def dropped_scores(self) -> list[DroppedScore]:
        return self.store.dropped_scores

    @property
    def public_key(self) -> str:
        return self.store.public_key

    @property
    def secret_key(self) -> str:
        return self.store.secret_key

    def env(self) -> dict[str, str]:
        return {
            "LANGFUSE_PUBLIC_KEY": self.public_key,
            "LANGFUSE_SECRET_KEY": self.secret_key,
            "LANGFUSE_BASE_URL": self.url,
        }

    def client_kwargs(self) -> dict[str, str]:
        """Keyword arguments for ``langfuse.Langfuse(...)``."""
        return {"public_key": self.public_key, "secret_key": self.secret_key, "base_url": self.url}

    def set_rate_limit(
        self,
        per_minute: int = 30,
        window_s: float = 60.0,
        endpoints: Iterable[str] | Literal["bucket"] | None = "bucket",
        bucket: str = "public-api",
    ) -> FixedWindowRateLimit:
        """Langfuse Cloud's limit: ``per_minute`` points per fixed window of ``window_s`` in one
        ``bucket``, per organisation (every project of this server shares it).

        As RateLimitService.ts (v4.16.0) does it: the window opens with the first request; each
        request takes a point (refused ones too) and the one taking the LAST point is already
        refused, so ``per_minute=30`` (Hobby, general API) serves 29 requests a window. The 429
        carries ``Retry-After`` (seconds to the window's end), ``X-RateLimit-*`` and the
        ``{"message","code":"rate_limited","details"}`` body.

        Buckets are independent (a call counts against one): "public-api" (the general API,
        Hobby 30/min), "annotation-queues" (Hobby 100/min), "ingestion" (POST ingestion and
        OTLP, Hobby 1000/min), "public-api-metrics" (v1 metrics, Hobby 100/day) and
        "public-api-v2-metrics" (Hobby 100/day) cover their endpoints (``RATE_LIMIT_BUCKETS``)
        by default; ``endpoints`` overrides that (None: every endpoint). Any other bucket name
        needs ``endpoints``."""
        if endpoints == "bucket":
            if bucket not in RATE_LIMIT_BUCKETS:
                raise ValueError(f"bucket {bucket!r} needs endpoints")
            endpoints = RATE_LIMIT_BUCKETS[bucket]
        limit = FixedWindowRateLimit(
            limit=per_minute,
            window_s=window_s,
            endpoints=frozenset(endpoints) if endpoints is not None else None,
        )
        if bucket == "public-api":
            self.faults.rate_limit = limit
        else:
            self.faults.rate_limits[bucket] = limit
        return limit

    def start(self) -> Self:
        super().start()
        return self

    def __enter__(self) -> Self:
        return self.start()
