"""The review loop's pure rules: verdicts read as correct or incorrect, the flag's precision and
the threshold table (checked against figures worked out by hand), the day records, the trend,
the drift rule and the empty-day streak."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from langfuse.api import ScoreConfig

from flows.options import options_from
from tasks.errors import ConfigError
from tasks.review import VERDICT_LABELS, verdict_config_problem
from tasks.trend import (
    DayFigures,
    DayRecord,
    chart_markdown,
    empty_streak,
    judge,
    merge,
    parse_record,
    record_value,
    sparkline,
    trend_rows,
)
from tasks.verdicts import CORRECT, INCORRECT, Period, measure, verdict_value

# --- verdicts ---------------------------------------------------------------------------------

# (score, verdict): True correct, False incorrect, None not reviewed. 12 flagged (< 0.5) reviewed,
# 10 of them incorrect; 8 unflagged reviewed, 3 incorrect; 10 scored, never reviewed.
UNITS: list[tuple[float, bool | None]] = [
    (0.05, False), (0.08, False), (0.15, False), (0.18, False), (0.22, False), (0.25, False),
    (0.28, False), (0.32, False), (0.35, False), (0.42, True), (0.45, False), (0.48, True),
    (0.52, False), (0.55, False), (0.61, True), (0.66, False), (0.72, True), (0.78, True),
    (0.85, True), (0.93, True),
    (0.09, None), (0.31, None), (0.47, None), (0.58, None), (0.63, None), (0.71, None),
    (0.77, None), (0.88, None), (0.91, None), (0.95, None),
]  # fmt: skip
# worked out by hand from UNITS: threshold -> (would flag, reviewed, marked incorrect)
BY_HAND = {
    0.1: (3, 2, 2),
    0.2: (5, 4, 4),
    0.3: (8, 7, 7),
    0.4: (11, 9, 9),
    0.5: (15, 12, 10),
    0.6: (18, 14, 12),
    0.7: (21, 16, 13),
    0.8: (25, 18, 13),
    0.9: (27, 19, 13),
}
PERIOD = Period(datetime(2026, 11, 30, tzinfo=UTC), datetime(2026, 12, 7, tzinfo=UTC))


def scored_and_verdicts(
    units: list[tuple[float, bool | None]],
) -> tuple[dict[Any, float], dict[Any, bool | None]]:
    scored: dict[Any, float] = {(f"t{i:02}", None): s for i, (s, _) in enumerate(units)}
    verdicts: dict[Any, bool | None] = {
        (f"t{i:02}", None): v for i, (_, v) in enumerate(units) if v is not None
    }
    return scored, verdicts


def test_precision_table_and_suggestion_are_the_hand_computed_ones() -> None:
    scored, verdicts = scored_and_verdicts(UNITS)
    v = measure(scored, verdicts, score_name="trust_score", review_score="trust_verdict",
                period=PERIOD, threshold=0.5, target=0.8)  # fmt: skip
    assert (v.scored, v.reviewed, v.unreadable) == (30, 20, 0)
    assert (v.flagged_reviewed, v.flagged_incorrect) == (12, 10)
    assert v.precision == pytest.approx(10 / 12) and v.enough
    assert (v.unflagged_reviewed, v.unflagged_incorrect) == (8, 3)
    assert {r.threshold: (r.would_flag, r.reviewed, r.incorrect) for r in v.table} == BY_HAND
    # precision reaches 0.8 over >= 10 verdicts at 0.5 (10/12), 0.6 (12/14), 0.7 (13/16); not
    # at 0.8 (13/18); below 0.5 there are fewer than 10 verdicts: the highest is suggested
    assert v.suggestion == 0.7
    assert measure(scored, verdicts, score_name="s", review_score="r", period=PERIOD,
                   threshold=0.5, target=0.85).suggestion == 0.6  # fmt: skip
    assert measure(scored, verdicts, score_name="s", review_score="r", period=PERIOD,
                   threshold=0.5, target=0.9).suggestion is None  # fmt: skip


def test_a_higher_threshold_needs_verdicts_on_what_it_adds_to_the_flag() -> None:
    # only the queue (the flagged ones) reviewed: above 0.5 nothing is known
    queue_only = [(s, v if s < 0.5 else None) for s, v in UNITS]
    scored, verdicts = scored_and_verdicts(queue_only)
    v = measure(scored, verdicts, score_name="s", review_score="r", period=PERIOD,
                threshold=0.5, target=0.8)  # fmt: skip
    high = {r.threshold: r for r in v.table}
    assert (high[0.9].added, high[0.9].added_reviewed, high[0.9].covered) == (12, 0, False)
    assert high[0.9].precision == pytest.approx(10 / 12)  # the same flagged ones: not evidence
    assert v.suggestion == 0.5  # the current one, not 0.9
    full = measure(*scored_and_verdicts(UNITS), score_name="s", review_score="r",
                   period=PERIOD, threshold=0.5, target=0.8)  # fmt: skip
    row = {r.threshold: r for r in full.table}[0.7]
    assert (row.added, row.added_reviewed, row.covered) == (6, 4, True)


def test_too_few_verdicts_conclude_nothing_and_unreadable_ones_are_left_out() -> None:
    scored, verdicts = scored_and_verdicts(UNITS[:9] + UNITS[20:])  # 9 flagged reviewed
    verdicts[("t05", None)] = None  # a verdict that says neither
    verdicts[("elsewhere", None)] = False  # a unit we did not score: not ours to count
    v = measure(scored, verdicts, score_name="s", review_score="r", period=PERIOD,
                threshold=0.5, target=0.5)  # fmt: skip
    assert (v.reviewed, v.unreadable, v.flagged_reviewed) == (8, 1, 8)
    assert not v.enough and v.suggestion is None


def test_verdict_values_map_as_documented_for_each_data_type() -> None:
    class Row:
        def __init__(self, data_type: str, value: object) -> None:
            self.data_type, self.value = data_type, value

    assert (VERDICT_LABELS[1], VERDICT_LABELS[0]) == (CORRECT, INCORRECT)  # what review makes
    cases = [
        ("CATEGORICAL", "correct", True), ("CATEGORICAL", "Incorrect", False),
        ("CATEGORICAL", "maybe", None), ("BOOLEAN", True, True), ("BOOLEAN", False, False),
        ("NUMERIC", 1.0, True), ("NUMERIC", 0.0, False), ("NUMERIC", 0.5, None),
        ("TEXT", "correct", None),
    ]  # fmt: skip
    assert [verdict_value(Row(t, v)) for t, v, _ in cases] == [want for _, _, want in cases]


def config(data_type: Any, **kw: Any) -> ScoreConfig:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    return ScoreConfig(id="c", name="v", created_at=now, updated_at=now, project_id="p",
                       data_type=data_type, is_archived=False, **kw)  # fmt: skip


def test_which_existing_configs_can_hold_a_verdict() -> None:
    cats = [{"label": "Correct", "value": 1}, {"label": "incorrect", "value": 0}]
    assert verdict_config_problem(config("CATEGORICAL", categories=cats)) is None
    assert verdict_config_problem(config("BOOLEAN")) is None
    assert verdict_config_problem(config("NUMERIC", min_value=0, max_value=1)) is None
    assert verdict_config_problem(config("NUMERIC")) is None  # unbounded: 0 and 1 fit
    assert "NUMERIC config from 1" in str(verdict_config_problem(config("NUMERIC", min_value=1)))
    good_bad = [{"label": "good", "value": 1}, {"label": "bad", "value": 0}]
    problem = verdict_config_problem(config("CATEGORICAL", categories=good_bad))
    assert problem == "a CATEGORICAL config without 'incorrect' or 'correct'"
    assert verdict_config_problem(config("TEXT")) == "a TEXT config"


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ({"review_days": 0}, "options.review_days"),
        ({"review_days": -3}, "options.review_days"),
        ({"review_target_precision": 0}, "options.review_target_precision"),
        ({"review_target_precision": 1.01}, "options.review_target_precision"),
        ({"drift_points": 0}, "options.drift_points"),
        ({"trend_days": 1}, "options.trend_days"),
        ({"review_score": "trust_score"}, "review_score must differ from score_name"),
        ({"review_score": "a/b"}, "'a/b' cannot name a Langfuse score config"),
    ],
)
def test_bad_review_options_are_one_line(given: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)) as info:
        options_from(given)
    assert "\n" not in str(info.value)
    assert options_from({"review_target_precision": 1.0}).review_target_precision == 1.0


# --- day records and the trend --------------------------------------------------------------

D = date(2026, 11, 30)


def figures(fetched: int, low: int, scored: int | None = None) -> DayFigures:
    n = fetched if scored is None else scored
    return DayFigures(fetched=fetched, scored=n, mean=0.6 if n else None, low=low, threshold=0.5)


def test_complete_stays_and_figures_only_is_not_complete() -> None:
    only = merge(None, D, complete=False, figures=figures(10, 2), run_id="r1", at="t1")
    assert not only.complete and only.figures is not None and only.flow_run_id == "r1"
    done = merge(only, D, complete=True, figures=figures(10, 1), run_id="r2", at="t2")
    assert done.complete and done.flow_run_id == "r2" and done.figures == figures(10, 1)
    later = merge(done, D, complete=False, figures=figures(10, 3), run_id="r3", at="t3")
    assert later.complete, "a later incomplete run does not undo a complete evaluation"
    assert later.figures == figures(10, 3) and later.flow_run_id == "r3"  # the newest figures
    span = merge(later, D, complete=True, figures=None, run_id="r4", at="t4")  # multi-day
    assert span.figures == figures(10, 3) and span.flow_run_id == "r3"  # figures kept
    # stored and read back; the old shape (no figures) still reads
    value = record_value(later, "[x] trust_score")
    assert parse_record(D, value) == later and len(str(value)) < 5000
    empty = merge(None, D, complete=True, figures=figures(0, 0), run_id="r", at="t")
    assert empty.figures is not None and empty.figures.mean is None
    assert parse_record(D, record_value(empty, "[x] s")) == empty  # a day with no trace
    old = {"complete": True, "evaluated_at": "x", "flow_run_id": "r0", "stream": "[x] s"}
    assert parse_record(D, old) == DayRecord(day=D, complete=True, evaluated_at="x",
                                             flow_run_id="r0")  # fmt: skip
    assert parse_record(D, "done") is None and parse_record(D, {"complete": "yes"}) is None


def history(shares_pct: list[int], n: int = 10) -> dict[date, DayRecord]:
    """A record per day, oldest first, ending on D, with n traces and these low-trust %."""
    start = D - timedelta(days=len(shares_pct) - 1)
    return {
        start + timedelta(days=i): DayRecord(
            day=start + timedelta(days=i), complete=True, flow_run_id=f"run-{i}",
            figures=figures(n, round(n * p / 100)),
        )
        for i, p in enumerate(shares_pct)
    }  # fmt: skip


def test_drift_fires_on_a_jump_not_on_noise_nor_without_history() -> None:
    noise = [10, 20, 10, 20, 10, 20, 10, 20, 10, 20]  # +-10 points around 15%: under 10 points
    recs = history(noise)
    marks = {d: judge(d, recs, 10.0, "t") for d in recs}
    judged = {d: m for d, m in marks.items() if m is not None}
    assert len(judged) == len(noise) - 3  # the first 3 days have too little history
    assert not any(m.fired for m in judged.values())
    jump = history([*noise, 70])
    mark = judge(D, jump, 10.0, "t")
    assert mark is not None and mark.fired and mark.share == 0.7
    assert mark.baseline == round((20 + 10 + 20 + 10 + 20 + 10 + 20) / 700, 4)  # 7 days before
    calm = judge(D, jump, 60.0, "t")
    assert calm is not None and not calm.fired  # +54 points: under drift_points=60
    jump[D] = jump[D].model_copy(update={"drift": mark})
    assert judge(D, jump, 10.0, "t") is None  # judged once: never again


def test_trend_rows_one_per_day_with_figures_newest_first() -> None:
    recs = history([10] * 30)
    days = sorted(recs)
    rows = trend_rows(recs, days, lambda run: f"<{run}>")
    assert len(rows) == 30 and rows[0]["day"] == D.isoformat() and rows[0]["run"] == "<run-29>"
    assert rows[0]["low-trust share"] == "10.0%" and "causes" not in rows[0]
    recs[D] = merge(recs[D], D, complete=True, figures=figures(12, 6), run_id="again", at="t")
    rows = trend_rows(recs, days, lambda run: run)
    assert len(rows) == 30 and (rows[0]["traces"], rows[0]["run"]) == (12, "again")
    del recs[days[3]]  # a day never evaluated: no row, and a gap in the chart
    mix = {"outdated": 2, "made up": 4}
    mixed = DayFigures(fetched=12, scored=12, mean=0.5, low=6, threshold=0.5, causes=mix)
    recs[D] = recs[D].model_copy(update={"figures": mixed})
    rows = trend_rows(recs, days, lambda run: run)
    assert len(rows) == 29 and rows[0]["causes"] == "made up 4, outdated 2"
    chart = chart_markdown("T", recs, days, ["[t](u)"], "History: here.")
    spark = re.search(r"low-trust share  (.{30})  ", chart)
    assert spark is not None and spark.group(1)[3] == " " and spark.group(1)[-1] == "█"
    assert f"No figures (not evaluated, or the run failed): {days[3]}" in chart


def test_sparkline_and_empty_streak() -> None:
    assert sparkline([0.0, 0.5, 1.0, None]) == "▁▅█ "
    assert sparkline([0.0, 0.0]) == "▁▁" and sparkline([]) == ""
    recs = history([0, 0, 0], n=0)
    assert empty_streak(recs, D) == 3
    recs[D - timedelta(days=1)] = recs[D - timedelta(days=1)].model_copy(
        update={"figures": figures(4, 0)}
    )
    assert empty_streak(recs, D) == 1
    del recs[D]
    assert empty_streak(recs, D) == 0  # no figures for the day: nothing is known


def test_the_readme_drift_automation_is_one_prefect_accepts() -> None:
    from pathlib import Path
    from uuid import uuid4

    import yaml
    from prefect.automations import AutomationCore, EventTrigger

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = re.search(r"```yaml\n(name: trust drift to Slack\n.*?)```", readme, re.S)
    assert block is not None
    text = block.group(1).replace(
        "<the id of your notification block: prefect block ls>", str(uuid4())
    )
    automation = AutomationCore.model_validate(yaml.safe_load(text))
    trigger = automation.trigger
    assert isinstance(trigger, EventTrigger) and trigger.expect == {"trust.drift"}
    assert automation.actions[0].type == "send-notification"
