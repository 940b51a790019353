"""The TLM sandbox's load model: per-item latency (:class:`Latency`), the concurrency ceiling
(:class:`Load`) and the record of score calls (:class:`Span`) to chart requests in flight."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from statistics import NormalDist

from sandbox.tlm.scores import pair_digest

Z99 = NormalDist().inv_cdf(0.99)


@dataclass(frozen=True, slots=True)
class Latency:
    """Per-item service time: ``fixed(s)`` or ``lognormal(mean, p99)``, reproducible by ``seed``.

    An item's latency is the distribution's quantile at a hash of (seed, prompt, response): the
    same item waits the same time in every run and for every contender.
    """

    mean_s: float = 0.0
    p99_s: float | None = None  # None: fixed at mean_s
    seed: int = 0

    @classmethod
    def fixed(cls, seconds: float) -> Latency:
        return cls(mean_s=seconds)

    @classmethod
    def lognormal(cls, mean_s: float, p99_s: float, seed: int = 0) -> Latency:
        return cls(mean_s=mean_s, p99_s=p99_s, seed=seed)

    def __post_init__(self) -> None:
        if self.mean_s < 0:
            raise ValueError("latency mean must be >= 0")
        if self.p99_s is not None:
            if not 0 < self.mean_s < self.p99_s:
                raise ValueError("log-normal latency needs 0 < mean < p99")
            if 2 * math.log(self.p99_s / self.mean_s) > Z99**2:
                raise ValueError("log-normal latency: p99 can be at most ~15x the mean")

    @property
    def params(self) -> tuple[float, float]:
        """(mu, sigma) of the log-normal: mean = exp(mu + sigma²/2), p99 = exp(mu + z99·sigma)."""
        assert self.p99_s is not None
        gap = math.log(self.p99_s / self.mean_s)
        sigma = Z99 - math.sqrt(Z99**2 - 2 * gap)
        return math.log(self.mean_s) - sigma**2 / 2, sigma

    def quantile(self, u: float) -> float:
        if self.p99_s is None:
            return self.mean_s
        mu, sigma = self.params
        return math.exp(mu + sigma * NormalDist().inv_cdf(min(max(u, 1e-12), 1 - 1e-12)))

    def for_item(self, prompt: str, response: str) -> float:
        if self.p99_s is None:
            return self.mean_s
        digest = hashlib.sha256(
            f"{self.seed}".encode() + b"\x00" + pair_digest(prompt, response)
        ).digest()
        return self.quantile((int.from_bytes(digest[:8], "big") + 0.5) / 2**64)

    def describe(self) -> str:
        if self.p99_s is None:
            return f"{self.mean_s * 1000:g} ms fixed"
        return f"log-normal mean {self.mean_s:g} s, p99 {self.p99_s:g} s (seed {self.seed})"


@dataclass(frozen=True, slots=True)
class Span:
    """One score call as the server saw it (``time.time()`` seconds), on either score endpoint."""

    start: float
    end: float
    status: int
    endpoint: str = "tlm.score"  # or "tlm.rag_score"


def in_flight_series(spans: list[Span], *, accepted_only: bool = True) -> list[tuple[float, int]]:
    """Step series (time, requests in flight from then on) from spans, in time order."""
    events: list[tuple[float, int]] = []
    for s in spans:
        if accepted_only and s.status in (429, 503):
            continue
        events.append((s.start, 1))
        events.append((s.end, -1))
    events.sort(key=lambda e: (e[0], e[1]))
    out: list[tuple[float, int]] = []
    n = 0
    for t, d in events:
        n += d
        if out and out[-1][0] == t:
            out[-1] = (t, n)
        else:
            out.append((t, n))
    return out


@dataclass(slots=True)
class Load:
    """The load knobs: per-item latency and the concurrency ceiling."""

    latency: Latency | None = None
    max_in_flight: int | None = None  # None: no ceiling
    over_status: int = 429  # answered above the ceiling: 429 (with Retry-After) or 503
    retry_after: int | None = 1  # whole seconds (the client parses it with int()); None: no header

    def __post_init__(self) -> None:
        if self.over_status not in (429, 503):
            raise ValueError("over_status must be 429 or 503")
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError("retry_after must be >= 0 (or None: no Retry-After header)")


def as_latency(latency: Latency | float | None) -> Latency | None:
    if latency is None or isinstance(latency, Latency):
        return latency
    return Latency.fixed(float(latency))
