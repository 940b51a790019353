"""One retry policy for every Langfuse call: transient errors only, backoff, Retry-After honoured.

The SDK's generated client is called with ``max_retries=0`` so that this is the only layer that
retries, and every wait is visible in the Prefect task log.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
from langfuse.api.core.api_error import ApiError

T = TypeVar("T")

TRANSIENT_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
# each wait is stretched by up to this share, at random, so that many runs behind one 429 do
# not all come back at the same instant
JITTER = 0.2


def retry_after_s(headers: dict[str, str] | None) -> float | None:
    """The server's requested wait, in seconds; None when absent or unreadable (then the
    policy's own backoff applies)."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    for name, unit in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = lowered.get(name)
        if raw is None:
            continue
        value: float | None
        try:
            value = float(raw) / unit
        except ValueError:
            value = _http_date_wait(raw) if name == "retry-after" else None
        if value is not None and math.isfinite(value):
            return max(value, 0.0)
    return None


def _http_date_wait(raw: str) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    return when.timestamp() - time.time()


AUTH_STATUS = frozenset({401, 403})  # refused keys: never retried


def raise_if_transient(resp: httpx.Response) -> httpx.Response:
    """A raw answer (outside the SDK) that the retry policy acts on (retry a transient one; a
    refused key stops the run), raised as the SDK would raise it."""
    if resp.status_code in TRANSIENT_STATUS or resp.status_code in AUTH_STATUS:
        raise ApiError(status_code=resp.status_code, headers=dict(resp.headers), body=resp.text)
    return resp


def is_transient(err: BaseException) -> bool:
    if isinstance(err, ApiError):
        return err.status_code in TRANSIENT_STATUS
    return isinstance(err, httpx.TransportError)  # timeouts, refused and reset connections


def describe(err: BaseException) -> str:
    """A short, secret-free description of a failed call."""
    if isinstance(err, ApiError):
        body = err.body if isinstance(err.body, str | dict) else type(err.body).__name__
        text = str(body)
        return f"HTTP {err.status_code}: {text[:300]}"
    return f"{type(err).__name__}: {str(err)[:300]}"


def call_with_retries(
    fn: Callable[[], T],
    *,
    what: str,
    retries: int,
    base_delay_s: float,
    max_delay_s: float,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    sleep: Callable[[float], None] = time.sleep,
    jitter: Callable[[], float] = random.random,
) -> T:
    """Call ``fn``; on a transient error wait (Retry-After, else exponential, within
    ``max_delay_s``; stretched by up to ``JITTER`` at random) and try again."""
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as err:
            if not is_transient(err) or attempt >= retries:
                raise
            hinted = retry_after_s(err.headers) if isinstance(err, ApiError) else None
            delay = hinted if hinted is not None else base_delay_s * (2**attempt)
            delay = min(delay, max_delay_s) * (1.0 + JITTER * jitter())
            attempt += 1
            logger.warning(
                "%s failed (%s); retry %d of %d in %.1f s",
                what,
                describe(err),
                attempt,
                retries,
                delay,
            )
            sleep(delay)


def retrying(
    tuning: Any,
    logger: Any,
    what: str,
    fn: Callable[[], T],
    *,
    sleep: Callable[[float], None] = time.sleep,
    jitter: Callable[[], float] = random.random,
) -> T:
    """``call_with_retries`` with the run's tuning (retries, base and max delay)."""
    return call_with_retries(
        fn,
        what=what,
        retries=tuning.retries,
        base_delay_s=tuning.retry_base_delay_s,
        max_delay_s=tuning.retry_max_delay_s,
        logger=logger,
        sleep=sleep,
        jitter=jitter,
    )
