"""The TLM sandbox served on 127.0.0.1 from a background thread (:class:`TLMSandbox`)."""

from __future__ import annotations

import http.client
import secrets
import time
from typing import Any

from sandbox.faults import FaultState
from sandbox.runner import ServerThread
from sandbox.tlm.app import AUTH_SHAPES, Recorder, create_app
from sandbox.tlm.load import Latency, Load, Span, as_latency, in_flight_series
from sandbox.tlm.wire import CallRecord

BARRIER_PATH = "/_sandbox/barrier"  # no route: a 404, neither faulted nor logged


class TLMSandbox(ServerThread):
    """The TLM sandbox served on 127.0.0.1 from a background thread.

    ``base_url`` is the value for ``CLEANLAB_API_BASE_URL``; ``api_key`` is fresh per instance.
    ``prompts``/``calls`` (``get_confidence_score``), ``rag_calls`` (TrustworthyRAG ``score``),
    ``explain_calls``, ``headers`` (both score endpoints) and ``records()`` (every endpoint: a
    :class:`~sandbox.tlm.wire.CallRecord` per call, with its endpoint, preset, evals, criteria
    and token estimate) are snapshots (copies) of what the handlers answered, in order of
    answer. Requests answered by the fault middleware alone (injected statuses), refused by auth
    or by the concurrency ceiling, or still held/sleeping, are not in them: see
    ``faults.requests``, ``spans()``, ``holding`` and ``in_flight`` for those.
    """

    def __init__(
        self,
        port: int | None = None,
        api_key: str | None = None,
        *,
        latency: Latency | float | None = None,
        max_in_flight: int | None = None,
        over_status: int = 429,
        retry_after: int | None = 1,
    ) -> None:
        self.api_key = api_key or f"tlm-sandbox-{secrets.token_hex(16)}"
        load = Load(as_latency(latency), max_in_flight, over_status, retry_after)
        app = create_app(self.api_key, load)
        self._rec: Recorder = app.state.recorder
        self.faults: FaultState = app.state.faults
        super().__init__(app, port=port)

    @property
    def base_url(self) -> str:
        return f"{self.url}/api"

    @property
    def prompts(self) -> list[str]:
        with self._rec.lock:
            return list(self._rec.prompts)

    @property
    def calls(self) -> list[dict[str, Any]]:
        with self._rec.lock:
            return list(self._rec.calls)

    @property
    def rag_calls(self) -> list[dict[str, Any]]:
        """The bodies of ``POST /api/v1/rag_trustworthy_llm/score`` calls (TrustworthyRAG)."""
        with self._rec.lock:
            return list(self._rec.rag_calls)

    def records(self, endpoint: str | None = None) -> list[CallRecord]:
        """Every call the handlers answered (``endpoint``: only "tlm.score", "tlm.rag_score" or
        "tlm.explain"), in order of answer."""
        with self._rec.lock:
            return [r for r in self._rec.records if endpoint is None or r.endpoint == endpoint]

    def tokens_by_preset(self) -> dict[str, int]:
        """The token estimates of the score calls answered, summed per preset."""
        out: dict[str, int] = {}
        for r in self.records():
            if r.preset is not None:
                out[r.preset] = out.get(r.preset, 0) + r.tokens
        return out

    @property
    def explain_calls(self) -> list[dict[str, Any]]:
        with self._rec.lock:
            return list(self._rec.explain_calls)

    @property
    def headers(self) -> list[dict[str, str]]:
        with self._rec.lock:
            return list(self._rec.headers)

    @property
    def fail_status(self) -> int:
        """Status answered for ``Fault.fail_items`` matches (500: retried; 422: not retried)."""
        return self._rec.fail_status

    @fail_status.setter
    def fail_status(self, status: int) -> None:
        self._rec.fail_status = status

    @property
    def rich_explanations(self) -> bool:
        """Append markup-ish characters (``<``, ``|``, ``*``...) to every explanation."""
        return self._rec.rich_explanations

    @rich_explanations.setter
    def rich_explanations(self, on: bool) -> None:
        self._rec.rich_explanations = on

    @property
    def auth_shape(self) -> str:
        """How a 401 looks (auth refusals and injected 401 faults alike): "invalid_api_key"
        (default, the real API's ``{"code", "description"}``), "error" (``{"error":
        "Unauthorized"}``), "detail" (``{"detail": "Not authenticated"}``) or "text" (a
        ``text/plain`` ``Unauthorized``). Restored by ``reset``."""
        return self._rec.auth_shape

    @auth_shape.setter
    def auth_shape(self, shape: str) -> None:
        if shape not in AUTH_SHAPES:
            raise ValueError(f"auth_shape must be one of {AUTH_SHAPES}")
        self._rec.auth_shape = shape

    @property
    def in_flight(self) -> int:
        """HTTP requests being served right now (any endpoint, fault holds included)."""
        return self._rec.in_flight

    @property
    def holding(self) -> int:
        """Score calls held by ``Fault.hold_items`` right now."""
        return self._rec.holding

    @property
    def latency(self) -> Latency | None:
        return self._rec.load.latency

    def set_latency(self, latency: Latency | float | None) -> None:
        """Per-item latency from now on (a float: fixed seconds; None: none)."""
        with self._rec.lock:
            self._rec.load = Load(
                as_latency(latency),
                self._rec.load.max_in_flight,
                self._rec.load.over_status,
                self._rec.load.retry_after,
            )

    @property
    def max_in_flight(self) -> int | None:
        return self._rec.load.max_in_flight

    def set_ceiling(
        self, max_in_flight: int | None, *, status: int = 429, retry_after: int | None = 1
    ) -> None:
        """Answer ``status`` to score calls arriving while ``max_in_flight`` are being served
        (both score endpoints count), with ``Retry-After: retry_after`` (None: no header)."""
        with self._rec.lock:
            self._rec.load = Load(self._rec.load.latency, max_in_flight, status, retry_after)

    def spans(self) -> list[Span]:
        """Every score call since the last reset, as (start, end, status), in order of end."""
        with self._rec.lock:
            return list(self._rec.spans)

    @property
    def scoring(self) -> int:
        """Score calls being served right now (past the ceiling check)."""
        return self._rec.scoring

    def peak_in_flight(self) -> int:
        return max((n for _, n in in_flight_series(self.spans())), default=0)

    def env(self) -> dict[str, str]:
        return {"CLEANLAB_TLM_API_KEY": self.api_key, "CLEANLAB_API_BASE_URL": self.base_url}

    def barrier(self, timeout_s: float = 10.0) -> None:
        """Send one request and wait for its answer: the server's loop has then taken up every
        request already written to it, so one a client abandoned (on its timeout, say) is now
        counted in ``in_flight`` or answered, no longer unread in a socket buffer."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout_s)
        try:
            conn.request("GET", BARRIER_PATH)
            conn.getresponse().read()
        except OSError:
            pass  # not serving: nothing to wait for
        finally:
            conn.close()

    def drain(self, timeout_s: float) -> bool:
        """Wait until every request already sent (see :meth:`barrier`) has been answered, up
        to ``timeout_s``; whether none is left."""
        self.barrier()
        deadline = time.monotonic() + timeout_s
        while self._rec.in_flight > 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        return self._rec.in_flight == 0

    def reset(self, drain_s: float = 5.0) -> None:
        """Clear faults, the rate limit, the request log, the captures and the spans; restore
        the constructor's latency and ceiling; release hangs.

        Requests still being served (e.g. released hangs, or one a client sent just before it
        gave up: see :meth:`barrier`) are waited for, up to ``drain_s``, so that they do not land
        in the next test's log.
        """
        self.faults.clear()
        self._rec.wake_sleepers()
        self.drain(drain_s)
        self.faults.reset_log()
        self._rec.clear()

    def start(self) -> TLMSandbox:
        super().start()
        return self

    def __enter__(self) -> TLMSandbox:
        return self.start()
