"""The one retry policy of every Langfuse call: which errors are retried, how long it waits (its
Retry-After parser included), how often, and what it says. Sleeps are recorded, never slept."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest
from langfuse.api.core.api_error import ApiError

from tasks.config import Tuning
from tasks.retry import (
    TRANSIENT_STATUS,
    call_with_retries,
    describe,
    is_transient,
    raise_if_transient,
    retry_after_s,
    retrying,
)

LOG = logging.getLogger("tests.unit.retry")


def api_error(status: int, retry_after: str | None = None, body: object = "busy") -> ApiError:
    headers = {"Retry-After": retry_after} if retry_after is not None else None
    return ApiError(status_code=status, headers=headers, body=body)


class Script:
    """A call that raises the given errors one per call, then returns ``result``."""

    def __init__(self, errors: list[BaseException], result: str = "ok") -> None:
        self.errors = list(errors)
        self.result = result
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.result


def run(
    script: Script, *, retries: int = 5, base: float = 1.0, cap: float = 60.0
) -> tuple[str, list[float]]:
    delays: list[float] = []
    result = call_with_retries(
        script,
        what="reading traces",
        retries=retries,
        base_delay_s=base,
        max_delay_s=cap,
        logger=LOG,
        sleep=delays.append,
        jitter=lambda: 0.0,
    )
    return result, delays


# --------------------------------------------------------------------------- what is transient


def test_the_transient_statuses_are_timeouts_conflicts_throttling_and_5xx_gateways() -> None:
    assert frozenset({408, 409, 425, 429, 500, 502, 503, 504}) == TRANSIENT_STATUS


@pytest.mark.parametrize(
    ("status", "transient"),
    [(408, True), (409, True), (425, True), (429, True), (500, True), (502, True), (503, True),
     (504, True), (400, False), (401, False), (403, False), (404, False), (413, False),
     (422, False), (501, False), (505, False)],
)  # fmt: skip
def test_an_api_error_is_transient_by_its_status(status: int, transient: bool) -> None:
    assert is_transient(api_error(status)) is transient


def test_transport_errors_are_transient_other_exceptions_are_not() -> None:
    assert is_transient(httpx.ConnectError("refused")) is True
    assert is_transient(httpx.ReadTimeout("slow")) is True
    assert is_transient(httpx.RemoteProtocolError("reset")) is True
    assert is_transient(ValueError("bad json")) is False
    assert is_transient(ApiError(status_code=None)) is False


# --------------------------------------------------------------------------- Retry-After


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (None, None),
        ({}, None),
        ({"X-Other": "5"}, None),
        ({"Retry-After": ""}, None),
        ({"Retry-After": "3"}, 3.0),
        ({"retry-after": "2.5"}, 2.5),
        ({"RETRY-AFTER": "0"}, 0.0),
        ({"Retry-After": "-4"}, 0.0),  # never a negative wait
        ({"Retry-After-Ms": "1500"}, 1.5),
        ({"retry-after-ms": "-10"}, 0.0),
        ({"Retry-After": "9", "Retry-After-Ms": "250"}, 0.25),  # the finer one wins
        ({"Retry-After-Ms": "soon", "Retry-After": "9"}, 9.0),  # unreadable ms: the seconds
    ],
)
def test_retry_after_in_seconds_or_milliseconds(
    headers: dict[str, str] | None, expected: float | None
) -> None:
    assert retry_after_s(headers) == expected


def http_date(epoch_s: int) -> str:
    return format_datetime(datetime.fromtimestamp(epoch_s, UTC), usegmt=True)


def test_retry_after_as_an_http_date_waits_until_that_date() -> None:
    later = int(time.time()) + 120
    wait = retry_after_s({"Retry-After": http_date(later)})
    assert wait is not None and 118.0 < wait <= 120.0
    assert retry_after_s({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # past: now


@pytest.mark.parametrize("value", ["soon", "30s", "nan", "inf", ""])
def test_an_unreadable_retry_after_is_ignored(value: str) -> None:
    assert retry_after_s({"Retry-After": value}) is None


def test_a_throttled_call_with_an_unreadable_retry_after_is_still_retried() -> None:
    script = Script([api_error(429, "soon")])
    assert run(script, base=0.5) == ("ok", [0.5])


# --------------------------------------------------------------------------- raw answers


def test_a_raw_transient_answer_is_raised_as_the_sdk_would_with_its_headers() -> None:
    resp = httpx.Response(503, headers={"Retry-After": "7"}, text="busy")
    with pytest.raises(ApiError) as caught:
        raise_if_transient(resp)
    err = caught.value
    assert (err.status_code, err.body) == (503, "busy")
    assert err.headers is not None and retry_after_s(err.headers) == 7.0


@pytest.mark.parametrize("status", [200, 201, 207, 400, 404])
def test_a_raw_answer_that_is_not_transient_is_returned_as_is(status: int) -> None:
    resp = httpx.Response(status, text="x")
    assert raise_if_transient(resp) is resp


def test_the_retry_after_of_a_raw_answer_sets_the_wait() -> None:
    answers = [httpx.Response(429, headers={"retry-after": "4"}), httpx.Response(200, text="ok")]

    def post() -> str:
        return raise_if_transient(answers.pop(0)).text

    delays: list[float] = []
    text = call_with_retries(post, what="POST", retries=3, base_delay_s=1.0, max_delay_s=60.0,
                             logger=LOG, sleep=delays.append, jitter=lambda: 0.0)  # fmt: skip
    assert (text, delays) == ("ok", [4.0])


# --------------------------------------------------------------------------- the loop


def test_transient_errors_are_retried_with_exponential_backoff_until_success() -> None:
    script = Script([api_error(503), httpx.ConnectError("refused"), api_error(502)])
    assert run(script, base=0.5) == ("ok", [0.5, 1.0, 2.0])
    assert script.calls == 4


def test_attempts_are_bounded_and_the_last_error_is_raised() -> None:
    errors: list[BaseException] = [api_error(503, body=f"try {i}") for i in range(10)]
    script = Script(errors)
    delays: list[float] = []
    with pytest.raises(ApiError) as caught:
        call_with_retries(script, what="x", retries=4, base_delay_s=1.0, max_delay_s=5.0,
                          logger=LOG, sleep=delays.append, jitter=lambda: 0.0)  # fmt: skip
    assert script.calls == 5  # the first attempt and 4 retries
    assert delays == [1.0, 2.0, 4.0, 5.0]  # doubling, capped at max_delay_s
    assert caught.value.body == "try 4"


def test_no_retries_means_one_attempt() -> None:
    script = Script([api_error(503)])
    with pytest.raises(ApiError):
        run(script, retries=0)
    assert script.calls == 1


@pytest.mark.parametrize(
    "error", [api_error(400), api_error(401), api_error(404), ValueError("bad"), KeyError("k")]
)
def test_errors_that_are_not_transient_are_raised_at_once(error: Exception) -> None:
    script = Script([error])
    delays: list[float] = []
    with pytest.raises(type(error)) as caught:
        call_with_retries(script, what="x", retries=5, base_delay_s=1.0, max_delay_s=60.0,
                          logger=LOG, sleep=delays.append, jitter=lambda: 0.0)  # fmt: skip
    assert caught.value is error
    assert (script.calls, delays) == (1, [])


def test_retry_after_replaces_the_backoff_and_is_capped_too() -> None:
    script = Script(
        [api_error(429, "7"), api_error(503), api_error(429, "120"), api_error(429, "0")]
    )
    assert run(script, base=1.0, cap=60.0) == ("ok", [7.0, 2.0, 60.0, 0.0])


def test_each_retry_is_logged_with_what_why_which_and_how_long(
    caplog: pytest.LogCaptureFixture,
) -> None:
    script = Script([api_error(503, body="busy"), httpx.ReadTimeout("slow")])
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        run(script, retries=2, base=0.5)
    assert [r.getMessage() for r in caplog.records] == [
        "reading traces failed (HTTP 503: busy); retry 1 of 2 in 0.5 s",
        "reading traces failed (ReadTimeout: slow); retry 2 of 2 in 1.0 s",
    ]


def test_retrying_takes_its_attempts_and_delays_from_the_tuning() -> None:
    tuning = Tuning(retries=3, retry_base_delay_s=2.0, retry_max_delay_s=5.0)
    script = Script([api_error(500)] * 4)
    delays: list[float] = []
    with pytest.raises(ApiError):
        retrying(tuning, LOG, "x", script, sleep=delays.append, jitter=lambda: 0.0)
    assert (script.calls, delays) == (4, [2.0, 4.0, 5.0])
    ok = Script([api_error(504)])
    assert retrying(tuning, LOG, "x", ok, sleep=delays.append) == "ok"


def test_each_wait_is_stretched_at_random_so_runs_behind_one_429_spread_out() -> None:
    """N workers throttled together must not all retry at the same instant: every wait, the
    server's Retry-After included, is stretched by up to JITTER, never shortened."""
    from tasks.retry import JITTER

    for draw, factor in [(0.0, 1.0), (0.5, 1 + JITTER / 2), (1.0, 1 + JITTER)]:
        delays: list[float] = []
        call_with_retries(Script([api_error(429, "4"), api_error(503)]), what="x", retries=3,
                          base_delay_s=1.0, max_delay_s=60.0, logger=LOG, sleep=delays.append,
                          jitter=lambda d=draw: d)  # type: ignore[misc]  # fmt: skip
        assert delays == pytest.approx([4.0 * factor, 2.0 * factor])


# --------------------------------------------------------------------------- describe


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (api_error(503, body="busy"), "HTTP 503: busy"),
        (api_error(400, body={"message": "bad"}), "HTTP 400: {'message': 'bad'}"),
        (api_error(500, body=None), "HTTP 500: NoneType"),
        (api_error(502, body=["a"]), "HTTP 502: list"),
        (api_error(502, body="x" * 1000), "HTTP 502: " + "x" * 300),
        (ValueError("boom"), "ValueError: boom"),
        (httpx.ConnectError("y" * 1000), "ConnectError: " + "y" * 300),
    ],
)
def test_describe_is_short(error: BaseException, text: str) -> None:
    assert describe(error) == text
