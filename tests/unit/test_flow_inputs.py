"""Inputs of the flows and the CLI checked before any call: durations, day ranges, score names."""

from __future__ import annotations

from datetime import UTC, date, timedelta

import pytest

from flows.backfill import day_range
from flows.cli import parse_duration
from tasks.config import ConfigError


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
    from flows.evaluate_traces import Options, validate_options

    long_name = "trust_score_for_the_customer_support_bot"  # 40 characters
    with pytest.raises(ConfigError, match="cannot name a Langfuse score config"):
        validate_options(["t"], Options(score_name=long_name))
    fits = "trust_score_of_the_support_agent"  # 32 characters: fits, its label does not
    assert validate_options(["t"], Options(score_name=fits)) == ["t"]
    with pytest.raises(ConfigError, match=f"{fits}_label"):
        validate_options(["t"], Options(score_name=fits, label_score=True))
    # without a config, any score name Langfuse takes is fine
    assert validate_options(["t"], Options(score_name=long_name, score_config=False)) == ["t"]
