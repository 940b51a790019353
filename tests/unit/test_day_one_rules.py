"""The pure rules behind the CLI's day-one messages: the hint of a tag that matches nothing,
the bounds of a duration and a window, settings that are not JSON, the preset's cost."""

from __future__ import annotations

import logging
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from tasks.config import PRESET_COST, load_tuning
from tasks.errors import ONE_LINERS, ConfigError
from tasks.hints import no_match_hint
from tasks.report import EvalReport
from tasks.windows import MAX_SPAN, check_span, duration


def test_the_hint_lists_the_windows_tags_most_used_first_and_the_nearest() -> None:
    seen = Counter({"TLM_eval_pipeline": 300, "checkout": 12, "beta": 3})
    hint = no_match_hint(["TLM_eval_pipline"], seen, 310)
    assert hint == (
        "no trace carries the tag(s) TLM_eval_pipline; this window's traces carry: "
        "TLM_eval_pipeline (300), checkout (12), beta (3); did you mean TLM_eval_pipeline?"
    )
    assert "did you mean" not in no_match_hint(["zzz"], seen, 310)  # nothing near: no guess
    many = Counter({f"tag{i}": 20 - i for i in range(12)})
    assert no_match_hint(["x"], many, 50).endswith("tag7 (13) and 4 more")
    assert "no trace at all started in this window" in no_match_hint(["x"], Counter(), 0)
    assert "carry no tags at all" in no_match_hint(["x"], Counter(), 5)


def test_a_duration_is_bounded_and_refused_in_one_line() -> None:
    assert duration("7d") == timedelta(days=7) and duration("90m") == timedelta(minutes=90)
    assert duration(f"{MAX_SPAN.days}d") == MAX_SPAN
    for text, needle in (("1000000d", "more than 3653 days"), ("soon", "not a duration"),
                         ("0h", "not a duration"), ("1e400", "not a duration")):  # fmt: skip
        with pytest.raises(ConfigError, match=needle) as err:
            duration(text, "--since")
        assert str(err.value).startswith("--since: ") and "\n" not in str(err.value)


def test_a_window_longer_than_ten_years_is_refused() -> None:
    start = datetime(2020, 1, 1, tzinfo=UTC)
    check_span(start, start + MAX_SPAN)
    with pytest.raises(ConfigError, match="spans 3654 days: at most 3653"):
        check_span(start, start + MAX_SPAN + timedelta(days=1))


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("TRUST_EVAL_SYSTEM_PROMPT_KEYS", "foo", "must be a JSON list, e.g. "
         '["system_prompt", "system"]'),
        ("TRUST_EVAL_CONTEXT_KEYS", "[context", "TRUST_EVAL_CONTEXT_KEYS must be a JSON list"),
        ("TRUST_EVAL_PRESET_COST_MULTIPLIERS", "{medium: 4}", "must be a JSON object"),
        ("TRUST_EVAL_PRESET_COST_MULTIPLIERS", '{"medium": 0}', "greater than 0"),
        ("TRUST_EVAL_CONFIRM_ITEMS", "-1", "TRUST_EVAL_CONFIRM_ITEMS"),
    ],
)  # fmt: skip
def test_a_setting_of_the_wrong_form_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, needle: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=r"^Tuning: ") as err:
        load_tuning()
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_preset_multipliers_default_to_the_presets_cost_and_merge_what_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_tuning().preset_cost_multipliers == PRESET_COST
    assert [PRESET_COST[p] for p in ("base", "low", "medium", "high", "best")] == [1, 2, 4, 8, 12]
    monkeypatch.setenv("TRUST_EVAL_PRESET_COST_MULTIPLIERS", '{"best": 20}')
    tuning = load_tuning()
    assert tuning.preset_cost("best") == 20 and tuning.preset_cost("medium") == 4


def test_a_dry_runs_tokens_and_cost_count_the_preset() -> None:
    start = datetime(2026, 11, 28, tzinfo=UTC)
    report = EvalReport(
        window_start=start, window_end=start + timedelta(days=1), tags=["t"],
        score_name="s", dry_run=True, would_score_chars=4000,
    )  # fmt: skip
    report.close(3, price_per_1k_tokens=0.5, preset_multiplier=12)
    assert report.estimated_tokens == 12_000 and report.estimated_cost_usd == 6.0
    report.close(3, price_per_1k_tokens=None, preset_multiplier=4)
    assert report.estimated_tokens == 4_000


def test_the_engines_traceback_is_dropped_for_our_one_line_failures_only() -> None:
    def record(err: BaseException) -> logging.LogRecord:
        try:
            raise err
        except BaseException:
            return logging.LogRecord(
                "prefect.flow_runs", logging.ERROR, __file__, 1,
                "Engine execution exited with unexpected exception", None, sys.exc_info(),
            )  # fmt: skip

    assert not ONE_LINERS.filter(record(ConfigError("window_end must be after window_start")))
    assert ONE_LINERS.filter(record(RuntimeError("a bug: its traceback stays")))
    plain = logging.LogRecord("prefect.flow_runs", logging.INFO, __file__, 1, "x", None, None)
    assert ONE_LINERS.filter(plain)
