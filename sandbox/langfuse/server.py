"""The Langfuse sandbox served from a thread on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Self

from sandbox.faults import FaultState, FixedWindowRateLimit
from sandbox.langfuse.app import create_langfuse_app
from sandbox.langfuse.common import RATE_LIMIT_BUCKETS
from sandbox.langfuse.deps import Projects
from sandbox.langfuse.records import DroppedScore
from sandbox.langfuse.store import LangfuseStore
from sandbox.runner import ServerThread


@dataclass(frozen=True)
class ProjectHandle:
    """One project of a sandbox server: its own key pair and data (``store``), on the server's
    URL. The server's settings (profile, clock, write mode, faults, rate limits) are shared."""

    store: LangfuseStore
    url: str

    @property
    def name(self) -> str:
        return self.store.project_name

    @property
    def project_id(self) -> str:
        return self.store.project_id

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


class LangfuseSandbox(ServerThread):
    """The Langfuse sandbox on 127.0.0.1:<free port>, served from a thread.

    ``with LangfuseSandbox() as lf: Langfuse(**lf.client_kwargs())`` or export ``lf.env()``.

    ``profile``: the server modelled, "current" (Cloud / self-hosted v4.59+, the SDK 5
    contract) or "v4.16" (self-hosted v4.16.0). ``preview_opt_in=False`` models a v4.16 server
    started with ``LANGFUSE_MIGRATION_V4_ALLOW_PREVIEW_OPT_IN=false`` (its default is true).
    ``version`` overrides what /api/public/health reports. ``public_key``/``secret_key``: the key
    pair (default: the store's, random). With a ``store``, these settings are written onto it.

    ``store`` is the server's first project; :meth:`add_project` adds more, each with its own
    key pair and data. Server-wide settings (profile, version, preview opt-in, write mode,
    clock, read lag, heavy reads, faults, rate limits) are shared by every project.
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
        self._projects: Projects = app.state.projects

    # ----------------------------------------------------------- projects

    def add_project(
        self,
        name: str,
        *,
        public_key: str | None = None,
        secret_key: str | None = None,
        project_id: str | None = None,
    ) -> ProjectHandle:
        """A further project on this server, with its own key pair (random by default) and its
        own traces, scores, score configs and annotation queues. GET /api/public/projects with
        its keys answers this project. Works before or after ``start()``."""
        store = LangfuseStore(
            project_name=name,
            project_id=project_id,
            public_key=public_key,
            secret_key=secret_key,
            settings=self.store.settings,
        )
        self._projects.add(store)
        return ProjectHandle(store, self.url)

    @property
    def project(self) -> ProjectHandle:
        """The server's first project (``store``)."""
        return ProjectHandle(self.store, self.url)

    def projects(self) -> list[ProjectHandle]:
        """Every project of the server, the first one first."""
        return [ProjectHandle(s, self.url) for s in self._projects.all()]

    # ----------------------------------------------------------- server settings

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

    @property
    def write_mode(self) -> str:
        """LANGFUSE_MIGRATION_V4_WRITE_MODE of the server (see :attr:`LangfuseStore.write_mode`):
        "legacy" keeps traces ingested from then on out of the events tables (v2 observations
        and v2 metrics do not see them; v1 metrics does)."""
        return self.store.write_mode

    @write_mode.setter
    def write_mode(self, value: str | None) -> None:
        self.store.write_mode = value

    @property
    def heavy_read_rows(self) -> int | None:
        """See :attr:`LangfuseStore.heavy_read_rows` (422 "Request timed out")."""
        return self.store.heavy_read_rows

    @heavy_read_rows.setter
    def heavy_read_rows(self, value: int | None) -> None:
        self.store.heavy_read_rows = value

    def set_ingestion_suspended(self, suspended: bool = True) -> None:
        """The first project's key as Langfuse Cloud marks it past the free tier's usage
        threshold: POST scores, POST ingestion and OTLP answer 403 "Ingestion suspended: Usage
        threshold exceeded. Please upgrade your plan." (per project:
        ``store.ingestion_suspended``)."""
        self.store.ingestion_suspended = suspended

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
