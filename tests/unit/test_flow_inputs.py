"""Inputs of the flows and the CLI checked before any call: durations, day ranges, score names."""

from __future__ import annotations

import re
from datetime import UTC, date, timedelta

import pytest

from flows.backfill import day_range
from flows.cli import parse_duration
from flows.options import EvalOptions, options_from, validate_tags
from tasks.errors import ConfigError


def test_parse_duration() -> None:
    assert parse_duration("24h") == timedelta(hours=24)
    assert parse_duration("90m") == timedelta(minutes=90)
    assert parse_duration("2d") == timedelta(days=2)
    assert parse_duration("30") == timedelta(seconds=30)


def test_day_range_is_inclusive_whole_utc_days() -> None:
    days = day_range(date(2026, 2, 27), date(2026, 3, 1))
    assert [s.date() for s, _ in days] == [date(2026, 2, 27), date(2026, 2, 28), date(2026, 3, 1)]
    assert all(e - s == timedelta(days=1) and s.tzinfo is UTC for s, e in days)


def test_a_score_name_langfuse_cannot_use_for_a_config_is_refused_up_front() -> None:
    long_name = "trust_score_for_the_customer_support_bot"  # 40 characters
    with pytest.raises(ConfigError, match="cannot name a Langfuse score config"):
        options_from({"score_name": long_name})
    fits = "trust_score_of_the_support_agent"  # 32 characters: fits, its label does not
    assert options_from({"score_name": fits}).score_name == fits
    with pytest.raises(ConfigError, match=f"{fits}_label"):
        options_from({"score_name": fits, "label_score": True})
    # without a config, any score name Langfuse takes is fine
    assert not options_from({"score_name": long_name, "score_config": False}).score_config
    # ...unless a review queue needs one (a Langfuse queue takes at least one score config)
    no_configs = {
        "score_name": long_name, "score_config": False, "review_queue": "Low trust",
        "review_score": None,  # (a review score's config would do)
    }  # fmt: skip
    with pytest.raises(ConfigError, match="unset review_queue"):
        options_from(no_configs)


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ({"quality_preset": "ultra"}, "options.quality_preset"),
        ({"quality_preset": "low"}, "'low' cannot log an explanation with every score"),
        ({"quality_preset": "base", "explain": "all"}, "set explain=low_trust"),
        ({"explain": "some"}, "options.explain"),
        ({"max_cost": 0}, "options.max_cost"),
        ({"max_cost": -1.5}, "options.max_cost"),
        ({"max_cost": float("nan")}, "options.max_cost"),
        ({"max_cost": float("inf")}, "options.max_cost"),
        ({"sample_rate": 0}, "options.sample_rate"),
        ({"max_traces": 0}, "options.max_traces"),
        ({"low_trust_threshold": 1.5}, "options.low_trust_threshold"),
        ({"untrustworthy_below": 0.6}, "untrustworthy_below must not exceed"),
        ({"scope": "span"}, "options.scope"),
        ({"review_lowest_n": 0}, "options.review_lowest_n"),
        ({"review_queue": " "}, "review_queue must be a queue name"),
        ({"alert_low_trust_share": -0.1}, "options.alert_low_trust_share"),
        ({"score_name": " "}, "score_name must not be blank"),
        ({"unknown_option": 1}, "options.unknown_option"),
    ],
)
def test_a_bad_option_is_one_line_naming_the_field(given: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)) as info:
        options_from(given)
    assert "\n" not in str(info.value)


def test_options_schema_has_a_description_and_bounds_for_every_field() -> None:
    schema = EvalOptions.model_json_schema()
    props = schema["properties"]
    assert set(props) == set(EvalOptions.model_fields)
    assert all(p.get("description") for p in props.values()), props
    assert props["quality_preset"]["enum"] == ["best", "high", "medium", "low", "base"]
    assert props["explain"]["enum"] == ["all", "low_trust"]
    assert props["scope"]["enum"] == ["trace", "generation"]
    assert props["sample_rate"]["exclusiveMinimum"] == 0 and props["sample_rate"]["maximum"] == 1
    assert schema.get("additionalProperties") is False


def test_tags_must_be_a_list_of_non_blank_strings() -> None:
    assert validate_tags(["a", "b", "a"]) == ["a", "b"]
    for bad in (None, [], "a", ["a", " "]):
        with pytest.raises(ConfigError, match="tags"):
            validate_tags(bad)  # type: ignore[arg-type]
