"""Langfuse access shared by every stage: the client, request counting, filters, paging, server."""

from __future__ import annotations

import functools
import json
import re
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeVar, cast
from urllib.parse import urlsplit

import httpx
from langfuse.api import GetScoresV3Response, LangfuseAPI, ObservationsV2Response, ScoreV3
from langfuse.api.core.api_error import ApiError
from langfuse.api.observations.client import ObservationsClient
from langfuse.api.scores.client import ScoresClient

from tasks.clock import SYSTEM, Clock
from tasks.config import LangfuseSettings, RunLogger, Tuning, without_credentials
from tasks.errors import ConfigError, StageError
from tasks.retry import AUTH_STATUS, describe, raise_if_transient, retrying

T = TypeVar("T")
NO_RETRY: Any = {"max_retries": 0}  # the generated client's own retries are off: ours count
# the first server version whose score POST takes a list (SDK 5: Cloud or self-hosted v4.59+)
BATCH_SCORES_SINCE = (4, 59)
ID_BATCH = 100  # ids per filtered GET: v3 scores pages hold 100, and URLs stay short


@functools.cache
def tls() -> ssl.SSLContext:
    """One TLS context for every Langfuse client of the process. httpx builds one per client
    otherwise, loading every CA certificate again (about 10 ms of CPU each, several per run).
    SSL_CERT_FILE and SSL_CERT_DIR are honoured as httpx honours them."""
    return httpx.create_ssl_context()


def make_api(cfg: LangfuseSettings) -> LangfuseAPI:
    """The SDK's generated REST client. Retries are ours (tasks.retry), not the client's."""
    return LangfuseAPI(
        base_url=cfg.base_url,
        username=cfg.public_key,
        password=cfg.secret_key.get_secret_value(),
        x_langfuse_public_key=cfg.public_key,
        x_langfuse_sdk_name="langfuse-tlm-evals",
        timeout=cfg.timeout_s,
        httpx_client=httpx.Client(timeout=cfg.timeout_s, follow_redirects=True, verify=tls()),
    )


def make_http(cfg: LangfuseSettings) -> httpx.Client:
    """A plain HTTP client for Langfuse's public API, with the key pair as basic auth."""
    auth = (cfg.public_key, cfg.secret_key.get_secret_value())
    return httpx.Client(timeout=cfg.timeout_s, auth=auth, verify=tls())


class RequestCount:
    """The Langfuse requests of one run, retries included, counted from every thread."""

    def __init__(self) -> None:
        self._n = 0
        self._lock = threading.Lock()

    def add(self) -> None:
        with self._lock:
            self._n += 1

    @property
    def value(self) -> int:
        return self._n


@dataclass(frozen=True)
class Access:
    """A run's way to Langfuse: its settings and tuning, one count of every request the run
    makes (from any stage or thread), and the clock its retries wait on."""

    cfg: LangfuseSettings
    tuning: Tuning
    count: RequestCount = field(default_factory=RequestCount)
    clock: Clock = SYSTEM
    # one REST client (and one plain HTTP client, for bodies sent as they are) for the run's
    # calls: a new one per stage call cost ~0.1 s each, its TLS setup
    _clients: list[tuple[LangfuseAPI, httpx.Client]] = field(
        default_factory=list, compare=False, repr=False
    )
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    def calls(self, logger: RunLogger) -> Calls:
        with self._lock:
            if not self._clients:
                self._clients.append((make_api(self.cfg), make_http(self.cfg)))
        api, http = self._clients[0]
        return Calls(self.cfg, self.tuning, logger, self.count, self.clock, api, http)


class Calls:
    """The REST client plus a count of every request made through it, retries included (its
    own, and the run's when ``run`` is given)."""

    def __init__(
        self,
        cfg: LangfuseSettings,
        tuning: Tuning,
        logger: RunLogger,
        run: RequestCount | None = None,
        clock: Clock = SYSTEM,
        api: LangfuseAPI | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self.cfg, self.tuning, self.logger, self.clock = cfg, tuning, logger, clock
        self.api = api if api is not None else make_api(cfg)
        self._http = http
        self.mine = RequestCount()  # single-score POSTs count from several threads
        self.run = run

    @property
    def http(self) -> httpx.Client:
        """A plain HTTP client with the run's credentials (bodies the SDK should not re-encode)."""
        if self._http is None:
            self._http = make_http(self.cfg)
        return self._http

    @property
    def requests(self) -> int:
        return self.mine.value

    # the generated client's resource properties are untyped: these give them their types
    @property
    def observations(self) -> ObservationsClient:
        return cast(ObservationsClient, self.api.observations)

    @property
    def scores(self) -> ScoresClient:
        return cast(ScoresClient, self.api.scores)

    def __call__(
        self, what: str, fn: Callable[[], T], *, retry: bool = True, ingestion: bool = False
    ) -> T:
        """``fn()`` (one request), counted, retried when transient, within the shared budget:
        ``ingestion`` requests (POST ingestion) have a rate bucket of their own at Langfuse,
        and so a limit of their own here."""
        t = self.tuning
        budget = t.langfuse_ingestion_rate_limit if ingestion else t.langfuse_rate_limit

        def counted() -> T:
            if budget:  # wait for a slot of the shared budget
                # imported here: without a shared budget, Langfuse is asked before Prefect loads
                from prefect.concurrency.sync import rate_limit

                rate_limit(budget, strict=True)
            self.mine.add()
            if self.run is not None:
                self.run.add()
            return fn()

        try:
            if not retry:
                return counted()
            return retrying(self.tuning, self.logger, what, counted, sleep=self.clock.sleep)
        except ApiError as err:
            if err.status_code == 403 and SUSPENDED in str(err.body).lower():
                raise suspended(self.cfg) from None
            if err.status_code in AUTH_STATUS:
                raise refused_keys(self.cfg, err.status_code) from None
            raise


SUSPENDED = "ingestion suspended"  # Langfuse's 403 when a project is over its usage threshold


class IngestionSuspended(StageError):
    """Langfuse refuses every write of the project until its usage is back under the plan."""


def suspended(cfg: LangfuseSettings) -> IngestionSuspended:
    host = urlsplit(cfg.base_url).netloc or cfg.base_url
    return IngestionSuspended(
        f"Langfuse at {host} suspended ingestion for this project: usage threshold exceeded "
        "(HTTP 403). Raise the plan's limit or upgrade it in Langfuse (organization settings "
        "-> billing), or wait for the next usage period; the scores paid for stay in the score "
        "ledger and the next run writes them without paying TLM again"
    )


def refused_keys(cfg: LangfuseSettings, status: int | None) -> ConfigError:
    host = urlsplit(cfg.shown_url).netloc or cfg.shown_url
    return ConfigError(
        f"Langfuse at {host} refused the API keys (HTTP {status}): check LANGFUSE_PUBLIC_KEY "
        "and LANGFUSE_SECRET_KEY (a key pair belongs to one project on one host: "
        "LANGFUSE_BASE_URL)"
    )


def tag_filter(tags: Sequence[str]) -> str | None:
    if not tags:
        return None
    return json.dumps(
        [{"type": "arrayOptions", "column": "tags", "operator": "any of", "value": list(tags)}]
    )


def trace_id_filter(trace_ids: Sequence[str]) -> str:
    return json.dumps(
        [
            {
                "type": "stringOptions",
                "column": "traceId",
                "operator": "any of",
                "value": list(trace_ids),
            }
        ]
    )


def batches(items: Sequence[T], size: int = ID_BATCH) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


STALE_PAGES = 3  # pages in a row with no row not seen before: the listing goes round in circles


class CursorGuard:
    """Stops a cursor loop that would never end: a repeated cursor, an empty page with one, or
    ``STALE_PAGES`` pages in a row that bring no new row (a fresh cursor over the same rows)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.seen: set[str] = set()
        self.ids: set[str] = set()
        self.stale = 0

    def next(self, cursor: Any, rows: int, ids: Sequence[str] | None = None) -> str | None:
        """The cursor of the next page (None: the listing ended); ``ids`` are the page's row
        ids, when the caller wants repeated rows caught too."""
        cursor = cursor or None
        if ids is not None and rows:
            new = set(ids) - self.ids
            self.ids |= new
            self.stale = 0 if new else self.stale + 1
            if self.stale >= STALE_PAGES:
                raise RuntimeError(
                    f"{self.what}: Langfuse returned {self.stale} pages in a row with no row not "
                    "seen before, each under a new cursor: paging stopped"
                )
        if cursor is None:
            return None
        if not rows:
            return None  # an empty page ends the listing, whatever its cursor says
        if cursor in self.seen:
            raise RuntimeError(f"{self.what}: Langfuse returned the same cursor twice")
        self.seen.add(cursor)
        return str(cursor)


def page_cursor(resp: ObservationsV2Response | GetScoresV3Response) -> str | None:
    return resp.meta.cursor


def root_trace_ids(
    calls: Calls,
    start: datetime,
    end: datetime,
    tags: Sequence[str],
    environment: Sequence[str] | None = None,
    *,
    what: str,
) -> set[str]:
    """The ids of the traces carrying any of ``tags`` with a root observation in [start, end)
    (1000 roots a request; ``what`` names the read in logs and errors)."""
    guard, cursor, ids = CursorGuard(what), None, set()
    while True:

        def call(c: str | None = cursor) -> ObservationsV2Response:
            return calls.observations.get_many(
                fields="core", limit=1000, cursor=c, is_root_observation=True,
                from_start_time=start, to_start_time=end, filter=tag_filter(tags),
                environment=list(environment) if environment else None,
                request_options=NO_RETRY,
            )  # fmt: skip

        resp = calls(f"{what} (GET v2/observations)", call)
        ids |= {o.trace_id or o.id for o in resp.data}
        cursor = guard.next(page_cursor(resp), len(resp.data), [o.id for o in resp.data])
        if cursor is None:
            return ids


def scores_by_id(calls: Calls, score_ids: Sequence[str], what: str) -> list[ScoreV3]:
    """The scores among ``score_ids`` that Langfuse shows (one GET per 100 ids)."""
    found: list[ScoreV3] = []
    for ids in batches(list(score_ids)):

        def get(chunk: Sequence[str] = ids) -> GetScoresV3Response:
            return calls.scores.get_many(
                id=",".join(chunk), fields="subject", limit=ID_BATCH, request_options=NO_RETRY
            )

        found.extend(calls(f"{what} (GET v3/scores by id)", get).data)
    return found


# --- what the server is ------------------------------------------------------------------


# how a server takes scores: SDK 5's list POST (Cloud, self-hosted v4.59+), score-create events
# on the ingestion route (older self-hosted servers), or one score per POST (stamped on arrival)
WriteRoute = Literal["list", "ingestion", "single"]
ROUTES: dict[str, WriteRoute] = {"batch": "list", "ingestion": "ingestion", "single": "single"}


@dataclass(frozen=True, slots=True)
class Server:
    version: str | None
    write: WriteRoute
    project_id: str | None = None  # the project of the key pair

    @property
    def batch_scores(self) -> bool:
        """Scores go in batches that keep our timestamp (the unit's start time), so the
        window's time range finds them: the list POST and ingestion events, not single POSTs."""
        return self.write != "single"

    @property
    def label(self) -> str:
        return f"Langfuse {self.version}" if self.version else "Langfuse (version unknown)"

    @property
    def how(self) -> str:
        """The write route, as the run's log says it."""
        return {
            "list": "score lists (POST scores)",
            "ingestion": "score-create events in batches (POST ingestion)",
            "single": "one score per POST",
        }[self.write]

    def taking(self, write: WriteRoute) -> Server:
        return Server(self.version, write, self.project_id)


def parse_version(text: str | None) -> tuple[int, ...] | None:
    match = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", (text or "").strip())
    return tuple(int(p or 0) for p in match.groups()) if match else None


def server_of(version: str | None, mode: str = "auto") -> Server:
    """How to write scores to a server reporting ``version``.

    SDK 5's list POST needs v4.59+ (or Cloud). An older server (self-hosted v4.16) takes ONE
    score per POST and stamps it on arrival, but also takes score-create events in batches on
    its ingestion route, each score timestamped by its event: that route. An unknown version
    gets the list POST here (``connect`` asks the server first), and a refused list falls back
    to ingestion events (see tasks.upload). ``mode`` (TRUST_EVAL_SCORE_WRITE) overrides.
    """
    if mode in ROUTES:
        return Server(version, ROUTES[mode])
    parsed = parse_version(version)
    lists = parsed is None or parsed[:2] >= BATCH_SCORES_SINCE
    return Server(version, "list" if lists else "ingestion")


def not_langfuse(cfg: LangfuseSettings, url: str, what: str) -> ConfigError:
    """The one line for a LANGFUSE_BASE_URL that does not point at a Langfuse API."""
    hint = "the host only, e.g. https://cloud.langfuse.com or http://localhost:3000"
    if urlsplit(cfg.base_url).path.rstrip("/").endswith("/api/public"):
        hint = f"without the trailing /api/public: {cfg.shown_url.rsplit('/api/public', 1)[0]}"
    return ConfigError(
        f"LANGFUSE_BASE_URL={cfg.shown_url} does not point at a Langfuse API: GET "
        f"{without_credentials(url)} "
        f"answered {what}. Set LANGFUSE_BASE_URL to {hint}"
    )


def connect(cfg: LangfuseSettings, tuning: Tuning, calls: Calls) -> Server:
    """The server before anything is spent: its version (``GET health``, no auth; it picks
    the score write path) and the key pair's project (``GET projects``: a refused key fails
    here, in one line). An unreachable host fails within ``tuning.connect_budget_s``."""
    url = f"{cfg.base_url}/api/public/health"
    clock = calls.clock
    deadline = clock.monotonic() + tuning.connect_budget_s
    while True:
        left = deadline - clock.monotonic()
        timeout = httpx.Timeout(cfg.timeout_s, connect=max(min(left, 5.0), 0.1))

        def get(t: httpx.Timeout = timeout) -> httpx.Response:
            return raise_if_transient(httpx.get(url, timeout=t, verify=tls()))

        try:
            what = f"asking {cfg.shown_url} for its version (GET health)"
            resp = calls(what, get, retry=False)
            break
        except (httpx.TransportError, ApiError) as err:
            if clock.monotonic() + 1.0 >= deadline:
                raise ConfigError(
                    f"cannot reach Langfuse at {cfg.shown_url} ({describe(err)}): check "
                    "LANGFUSE_BASE_URL and the network"
                ) from None
            clock.sleep(1.0)
    if resp.status_code == 404:
        raise not_langfuse(cfg, url, "404")
    try:
        body = resp.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        kind = resp.headers.get("content-type", "no content type").split(";")[0]
        raise not_langfuse(cfg, url, f"HTTP {resp.status_code} with {kind}, not JSON")
    version = str(body.get("version") or "") or None
    server = server_of(version, tuning.score_write)
    if tuning.score_write == "auto" and parse_version(version) is None:
        server = server.taking("list" if takes_lists(cfg, calls) else "ingestion")
    return Server(server.version, server.write, project_of(cfg, calls))


def project_of(cfg: LangfuseSettings, calls: Calls) -> str:
    """The id of the project the key pair belongs to (``GET /api/public/projects``)."""
    try:
        resp = calls(
            "reading the key pair's project (GET projects)",
            lambda: calls.api.projects.get(request_options=NO_RETRY),
        )
    except ApiError as err:
        if err.status_code == 404:
            raise not_langfuse(cfg, f"{cfg.base_url}/api/public/projects", "404") from None
        raise
    projects = getattr(resp, "data", None) or []
    if not projects:
        raise ConfigError(
            f"Langfuse at {cfg.shown_url} shows no project for LANGFUSE_PUBLIC_KEY: use a "
            "project's API keys (project settings -> API keys)"
        )
    return str(projects[0].id)


def takes_lists(cfg: LangfuseSettings, calls: Calls) -> bool:
    """For a server that does not say its version: POST an empty list, which writes nothing.

    A server that takes one object per POST refuses it as "expected object" (zod's message,
    web/src/features/public-api/server/withMiddlewares.ts at v4.16.0); anything else: lists.
    """
    auth = (cfg.public_key, cfg.secret_key.get_secret_value())

    def post() -> httpx.Response:
        return raise_if_transient(
            httpx.post(
                f"{cfg.base_url}/api/public/scores",
                json=[],
                auth=auth,
                timeout=cfg.timeout_s,
                verify=tls(),
            )
        )

    resp = calls("asking Langfuse which score POST it takes (POST scores [])", post)
    text = resp.text.replace(" ", "").lower()
    return not (
        resp.status_code == 400 and ('"expected":"object"' in text or "expectedobject" in text)
    )


def v2_observations_missing(cfg: LangfuseSettings, server: Server) -> str:
    """The one-line refusal for a server without GET /api/public/v2/observations."""
    return (
        f"{server.label} at {cfg.shown_url} answered 404 on /api/public/v2/observations. "
        "Self-hosted Langfuse v4 serves it unless LANGFUSE_MIGRATION_V4_ALLOW_PREVIEW_OPT_IN"
        "=false is set on the server (it is true by default); Langfuse v3 and older do not "
        "have it: upgrade to v4.59+, or use Langfuse Cloud."
    )
