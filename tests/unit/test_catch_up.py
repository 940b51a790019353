"""The daily run's catch-up rules: which whole days a window covers, which days are missed."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from flows.evaluated_days import days_to_catch_up, variable_name, whole_days

D = date(2026, 11, 28)
MIDNIGHT = datetime(2026, 11, 28, tzinfo=UTC)


def test_whole_days_are_the_utc_days_inside_the_window() -> None:
    assert whole_days(MIDNIGHT, MIDNIGHT + timedelta(days=1)) == [D]
    assert whole_days(MIDNIGHT, MIDNIGHT + timedelta(days=2)) == [D, D + timedelta(days=1)]
    assert whole_days(MIDNIGHT + timedelta(hours=1), MIDNIGHT + timedelta(days=2)) == [
        D + timedelta(days=1)
    ]
    assert whole_days(MIDNIGHT, MIDNIGHT + timedelta(hours=23)) == []  # part of a day: none
    assert whole_days(MIDNIGHT - timedelta(hours=5), MIDNIGHT + timedelta(hours=30)) == [D]


def test_the_missed_days_are_those_without_a_completed_evaluation_oldest_first() -> None:
    before = [D - timedelta(days=i) for i in (3, 2, 1)]
    assert days_to_catch_up(D, 3, set()) == before
    assert days_to_catch_up(D, 3, {before[1]}) == [before[0], before[2]]
    assert days_to_catch_up(D, 3, set(before)) == []
    assert days_to_catch_up(D, 0, set()) == []
    assert D not in days_to_catch_up(D, 3, set())  # the previous day itself is always run


def test_the_watermark_is_one_variable_per_stream() -> None:
    a = variable_name(["x", "y"], "trust_score")
    assert a == variable_name(["y", "x", "x"], "trust_score")  # the tag set, in any order
    assert a != variable_name(["x"], "trust_score") and a != variable_name(["x", "y"], "other")
    assert a.startswith("trust_evaluated_") and a == a.lower()


def test_a_day_run_key_is_the_same_for_the_same_day_and_parameters_only() -> None:
    from flows.day_runs import day_key, day_parameters
    from flows.options import EvalOptions

    start, end = MIDNIGHT, MIDNIGHT + timedelta(days=1)
    params = {"tags": ["b", "a"], "options": EvalOptions(score_name="s")}
    key = day_key("evaluate-traces/window", start, end, params)
    assert key == day_key("evaluate-traces/window", start, end, {**params, "tags": ["a", "b"]})
    assert key != day_key("evaluate-traces/window", end, end + timedelta(days=1), params)
    assert key != day_key("evaluate-traces/window", start, end, {**params, "options": None})
    assert key.startswith("trust-day-")
    assert day_parameters(start, end, params) == {
        "tags": ["b", "a"],
        "window_start": "2026-11-28T00:00:00+00:00",
        "window_end": "2026-11-29T00:00:00+00:00",
        "options": EvalOptions(score_name="s").model_dump(mode="json"),
    }
