"""How one TLM answer becomes a score or a recorded failure, and how the engine's results are
split. No TLM client: answers are hand-built dicts shaped like cleanlab-tlm's.

cleanlab_tlm itself is not imported here: it reads CLEANLAB_API_BASE_URL once, at import, and a
unit test must not fix that for the rest of a test process."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest

from tasks.failures import Reason
from tasks.models import Bucket, Outcome, Pair, Scored
from tasks.score import ScoreResult, _error_detail, _split, interpret

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
PAIR = Pair("trace-1", T0, "trivia", "production", "Q: why?", "Because.", "chat")
OBS_PAIR = Pair("trace-2", T0, "trivia", None, "Q", "A", "generation", observation_id="gen-9")


def answer(score: Any = 0.5, **log: Any) -> dict[str, Any]:
    return {"trustworthiness_score": score, "log": log}


def failed(pair: Pair, detail: str) -> Outcome:
    return Outcome(
        trace_id=pair.trace_id,
        bucket=Bucket.FAILED_TO_SCORE,
        reason=Reason.TLM_ERROR,
        detail=detail,
        name=pair.name,
        start_time=pair.start_time,
        observation_id=pair.observation_id,
    )


# --------------------------------------------------------------------------- valid scores


def test_a_valid_score_keeps_its_explanation() -> None:
    out = interpret(PAIR, answer(0.82, explanation="The answer is unsupported."))
    assert out == Scored(pair=PAIR, score=0.82, explanation="The answer is unsupported.")
    assert isinstance(out, Scored) and out.pair is PAIR


@pytest.mark.parametrize(
    "result",
    [
        answer(0.82),  # log without an explanation
        answer(0.82, explanation=""),
        answer(0.82, explanation=None),
        answer(0.82, explanation=["not", "text"]),
        {"trustworthiness_score": 0.82},  # no log at all
        {"trustworthiness_score": 0.82, "log": "explained elsewhere"},  # a log that is no dict
        {"trustworthiness_score": 0.82, "log": None},
    ],
)
def test_a_valid_score_without_a_usable_explanation_has_none(result: dict[str, Any]) -> None:
    assert interpret(PAIR, result) == Scored(pair=PAIR, score=0.82, explanation=None)


@pytest.mark.parametrize(
    ("raw", "value"), [(0, 0.0), (1, 1.0), (0.0, 0.0), (1.0, 1.0), (-0.0, 0.0)]
)
def test_the_bounds_are_valid_scores_and_ints_become_floats(raw: float, value: float) -> None:
    out = interpret(PAIR, answer(raw))
    assert isinstance(out, Scored)
    assert out.score == value and type(out.score) is float


def test_a_dict_subclass_answer_is_read_like_a_dict() -> None:
    class TLMScore(dict[str, Any]):
        pass

    out = interpret(PAIR, TLMScore(trustworthiness_score=0.3, log={"explanation": "why"}))
    assert out == Scored(pair=PAIR, score=0.3, explanation="why")


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    "result",
    [
        answer(0.9, error={"message": "rate limited", "retryable": True}),  # error wins
        answer(None, error={"message": "prompt too long"}),
        answer(None, error={}),
        answer(None, error="boom"),
        answer(None),
        {"log": {"explanation": "no score"}},
        {},
        answer(True),  # bool is an int, not a score
        answer(False),
        answer("0.9"),
        answer(math.nan),
        answer(math.inf),
        answer(-math.inf),
        answer(-0.01),
        answer(1.0000001),
        answer(2),
        None,  # not a dict at all
        0.9,
        "0.9",
        [("trustworthiness_score", 0.9)],
    ],
)
def test_an_answer_without_a_valid_score_fails_to_score(result: Any) -> None:
    out = interpret(OBS_PAIR, result)
    assert isinstance(out, Outcome)
    assert out.bucket is Bucket.FAILED_TO_SCORE
    assert (out.trace_id, out.observation_id, out.key) == ("trace-2", "gen-9", "gen-9")
    assert (out.name, out.start_time, out.score, out.explanation) == ("trivia", T0, None, None)
    assert out.reason is Reason.TLM_ERROR and out.why.startswith("tlm_error: ")


def test_failure_reasons_say_what_tlm_answered() -> None:
    # every failure text of interpret in one place
    reasons = {
        "error message": answer(0.9, error={"message": "rate limited"}),
        "error without message": answer(None, error={"message": ""}),
        "error not a dict": answer(None, error="boom"),
        "no score": answer(None),
        "bool": answer(True),
        "not a dict": "0.9",
        "nan": answer(math.nan),
        "above 1": answer(1.5),
        "below 0": answer(-0.25),
        "long message": answer(None, error={"message": "x" * 1000}),
    }
    got = {k: interpret(PAIR, v) for k, v in reasons.items()}
    assert got == {
        "error message": failed(PAIR, "rate limited"),
        "error without message": failed(PAIR, "no score returned"),
        "error not a dict": failed(PAIR, "no score returned"),
        "no score": failed(PAIR, "no score returned"),
        "bool": failed(PAIR, "no score returned"),
        "not a dict": failed(PAIR, "no score returned"),
        "nan": failed(PAIR, "score nan outside [0, 1]"),
        "above 1": failed(PAIR, "score 1.5 outside [0, 1]"),
        "below 0": failed(PAIR, "score -0.25 outside [0, 1]"),
        "long message": failed(PAIR, "x" * 500),
    }


# --------------------------------------------------------------------------- helpers


class WithMessage(Exception):
    """Like cleanlab-tlm's RateLimitError: the text is in ``.message``, ``str()`` is empty."""

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message


@pytest.mark.parametrize(
    ("err", "reason"),
    [
        (WithMessage("Rate limit exceeded"), "Rate limit exceeded"),
        (WithMessage(""), "WithMessage"),  # no text at all: the type
        (TimeoutError("item timed out after 120 s"), "item timed out after 120 s"),
        (TimeoutError(), "TimeoutError"),
        (RuntimeError("y" * 1000), "y" * 500),
    ],
)
def test_an_exception_becomes_a_bounded_reason(err: BaseException, reason: str) -> None:
    assert _error_detail(err) == reason
    assert len(_error_detail(err)) <= 500


def test_split_sends_scores_and_failures_to_their_lists_in_order() -> None:
    a, b, c = (Pair(f"t{i}", T0, None, None, "p", "r", "chat") for i in range(3))
    s_a, s_c = Scored(a, 0.1, None), Scored(c, 0.9, "ok")
    f_b, f_x = failed(b, "tlm_error: x"), failed(OBS_PAIR, "tlm_error: y")
    result = ScoreResult(scored=[], failed=[], tlm_requests=4)
    _split([s_a, f_b, s_c, f_x], result)
    assert result.scored == [s_a, s_c]
    assert result.failed == [f_b, f_x]
    assert (result.tlm_requests, result.fatal, result.all_failed) == (4, None, False)
    _split([], result)
    assert len(result.scored) == 2 and len(result.failed) == 2


def test_the_engine_reads_the_clients_own_congestion_window() -> None:
    """The engine sends as many items at once as cleanlab-tlm's rate handler allows: it reads
    ``TLM._rate_handler._congestion_window``. A new client starts at 4; a cleanlab release that
    renames the attribute fails here, not silently in production."""
    from cleanlab_tlm import TLM

    from tasks.score import congestion_window

    tlm = TLM(api_key="unit-test-key", options={"log": ["explanation"]})
    assert congestion_window(tlm) == 4


def test_a_client_without_the_window_is_warned_about_once(caplog: pytest.LogCaptureFixture) -> None:
    import tasks.score as score

    class Renamed:  # a cleanlab release without the private attribute
        _rate_handler = object()

    score._WINDOW_MISSING.clear()
    with caplog.at_level("WARNING", logger="trust.score"):
        assert score.congestion_window(Renamed()) is None
        assert score.congestion_window(Renamed()) is None
    assert [r.message for r in caplog.records if "_congestion_window" in r.message] == [
        f"cleanlab-tlm's TLM has no _rate_handler._congestion_window any more: up to "
        f"{score.MAX_IN_FLIGHT} items go out at once (the client still backs off on 429s)"
    ]


def test_the_engine_puts_its_rate_handler_in_place_of_the_clients() -> None:
    """The paced handler replaces ``TLM._rate_handler`` and is still cleanlab-tlm's own (its
    congestion window works as before); a release that renames the attribute fails here."""
    from cleanlab_tlm import TLM
    from cleanlab_tlm.internal.concurrency import TlmRateHandler

    from tasks.score import Pacing, congestion_window, install_pacing, paced_handler

    tlm = TLM(api_key="unit-test-key", options={"log": ["explanation"]})
    pacing = Pacing(1.0)
    assert install_pacing(tlm, pacing)
    handler = tlm._rate_handler
    assert isinstance(handler, paced_handler()) and isinstance(handler, TlmRateHandler)
    assert getattr(handler, "pacing", None) is pacing and congestion_window(tlm) == 4


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_429_without_retry_after_pauses_at_least_the_floor_doubling_while_they_go_on() -> None:
    from tasks.score import PAUSE_CAP_S, Pacing

    clock = Ticks()
    pacing = Pacing(1.0, clock=clock, jitter=lambda: 0.0)
    assert pacing.wait_s() == 0
    assert pacing.after_429(0) == 1.0 and pacing.wait_s() == 1.0  # missing header: "0"
    clock.now += 0.4  # calls sent before the pause come back refused: no new pause...
    assert pacing.after_429(0) is None and pacing.streak == 1
    assert pacing.wait_s() == pytest.approx(1.0)  # ...but each still waits the floor
    clock.now += 1.0  # the pause is over, the retry is refused again: twice as long
    assert pacing.after_429(0) == 2.0 and pacing.streak == 2
    clock.now += 2.0
    assert pacing.after_429(0) == 4.0
    pacing.after_answer()  # a scored item ends the series
    clock.now += 4.0
    assert pacing.after_429(0) == 1.0 and pacing.streak == 1
    assert pacing.rate_limited == 5
    for _ in range(12):  # never beyond the cap
        clock.now += PAUSE_CAP_S
        last = pacing.after_429(0)
    assert last == PAUSE_CAP_S


def test_a_429_whose_retry_after_covers_the_floor_is_left_to_the_client() -> None:
    from tasks.score import Pacing

    pacing = Pacing(1.0, clock=Ticks(), jitter=lambda: 0.0)
    assert pacing.after_429(1) is None and pacing.after_429(30) is None
    assert pacing.wait_s() == 0 and pacing.rate_limited == 0


def test_the_pause_is_jittered_and_the_pauses_add_up() -> None:
    from tasks.retry import JITTER
    from tasks.score import Pacing

    clock = Ticks()
    pacing = Pacing(2.0, clock=clock, jitter=lambda: 1.0)
    assert pacing.after_429(0) == pytest.approx(2.0 * (1 + JITTER))
    clock.now += 1.0
    pacing.after_429(0)  # stretches the running pause to 1 s + a floor from now
    assert pacing.paused_s == pytest.approx(1.0 + 2.0 * (1 + JITTER))
