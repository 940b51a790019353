"""The daily run's catch-up rules: which whole days a window covers, which days are missed."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from flows.evaluated_days import complete, days_to_catch_up
from flows.options import EvalOptions
from tasks.report import EvalReport
from tasks.stream import Stream
from tasks.windows import whole_days

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


def test_the_record_is_one_variable_per_stream_and_day() -> None:
    a = Stream.of("p1", ["x", "y"], "trust_score").day_record_name(D)
    assert a == Stream.of("p1", ["y", "x", "x"], "trust_score").day_record_name(D)  # any order
    assert a != Stream.of("p1", ["x"], "trust_score").day_record_name(D)
    assert a != Stream.of("p1", ["x", "y"], "other").day_record_name(D)
    assert a != Stream.of("p2", ["x", "y"], "trust_score").day_record_name(D)  # another project
    assert a != Stream.of("p1", ["x", "y"], "trust_score").day_record_name(D - timedelta(days=1))
    assert a.startswith("trust_evaluated_") and a.endswith("_2026-11-28") and a == a.lower()


def test_only_a_complete_evaluation_marks_a_day() -> None:
    ok = EvalReport(window_start=MIDNIGHT, window_end=MIDNIGHT, tags=["x"], score_name="s")
    assert complete(ok, EvalOptions())
    assert not complete(ok, EvalOptions(dry_run=True))
    assert not complete(ok, EvalOptions(max_traces=5))  # a trial run: the rest may be unscored
    assert not complete(ok, EvalOptions(sample_rate=0.5))
    assert not complete(ok.model_copy(update={"capped": True}), EvalOptions())
    failed = ok.model_copy(update={"failed_to_score": {"tlm_error": ["t1"]}})
    assert not complete(failed, EvalOptions())  # its failed trace is left for the catch-up


def test_a_day_run_key_is_the_same_for_the_same_day_and_parameters_only() -> None:
    from flows.day_runs import day_key, day_parameters

    start, end = MIDNIGHT, MIDNIGHT + timedelta(days=1)
    params = {"tags": ["b", "a"], "options": EvalOptions(score_name="s")}
    stream = Stream.of("p1", ["b", "a"], "s")
    dep = "evaluate-traces/window"
    key = day_key(dep, stream, start, end, params)
    assert key == day_key(dep, stream, start, end, {**params, "tags": ["a", "b"]})
    assert key != day_key(dep, stream, end, end + timedelta(days=1), params)
    assert key != day_key(dep, stream, start, end, {**params, "options": None})
    # a backfill's days run without an alert share: the key of a day an earlier backfill made
    # (with one) is the same; an option that changes what is scored changes it
    quiet = EvalOptions(score_name="s", alert_low_trust_share=None)
    assert key == day_key(dep, stream, start, end, {**params, "options": quiet})
    rescore = EvalOptions(score_name="s", rescore=True)
    assert key != day_key(dep, stream, start, end, {**params, "options": rescore})
    assert key != day_key(dep, Stream.of("p2", ["a", "b"], "s"), start, end, params)
    assert key.startswith("trust-day-")
    assert day_parameters(start, end, params) == {
        "tags": ["b", "a"],
        "window_start": "2026-11-28T00:00:00+00:00",
        "window_end": "2026-11-29T00:00:00+00:00",
        "options": EvalOptions(score_name="s").model_dump(mode="json"),
    }
