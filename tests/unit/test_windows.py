"""Evaluation windows: the default previous UTC day, explicit windows, and backfill days cut at
UTC midnights. Every bound is timezone-aware and in UTC; a naive datetime is refused."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tasks.errors import ConfigError
from tasks.windows import aware, previous_day, resolve_window, split_days

PARIS_SUMMER = timezone(timedelta(hours=2), "CEST")
NEW_YORK_WINTER = timezone(timedelta(hours=-5), "EST")


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, us: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, us, tzinfo=UTC)


# --------------------------------------------------------------------------- aware


def test_aware_converts_any_offset_to_utc_and_refuses_naive_datetimes() -> None:
    local = datetime(2026, 3, 29, 1, 30, tzinfo=PARIS_SUMMER)
    converted = aware(local, "x")
    assert converted == utc(2026, 3, 28, 23, 30) and converted.tzinfo is UTC
    with pytest.raises(ConfigError, match=r"^window_start=2026-03-29T01:30:00 has no timezone"):
        aware(datetime(2026, 3, 29, 1, 30), "window_start")


# --------------------------------------------------------------------------- previous day


@pytest.mark.parametrize(
    ("reference", "day_start"),
    [
        (utc(2026, 11, 28, 0, 0), utc(2026, 11, 27)),  # at midnight: the day before
        (utc(2026, 11, 28, 23, 59, 59, 999_999), utc(2026, 11, 27)),
        (utc(2026, 1, 1, 3), utc(2025, 12, 31)),  # across a year
        (utc(2028, 3, 1, 12), utc(2028, 2, 29)),  # a leap day
        # the UTC day of the reference counts, not its local day
        (datetime(2026, 3, 29, 1, 30, tzinfo=PARIS_SUMMER), utc(2026, 3, 27)),
        (datetime(2026, 11, 27, 20, 0, tzinfo=NEW_YORK_WINTER), utc(2026, 11, 27)),
    ],
)
def test_the_default_window_is_the_previous_whole_utc_day(
    reference: datetime, day_start: datetime
) -> None:
    start, end = resolve_window(None, None, scheduled=reference)
    assert (start, end) == (day_start, day_start + timedelta(days=1))
    assert start.tzinfo is UTC and end.tzinfo is UTC
    assert previous_day(reference) == (start, end)


def test_the_default_window_refuses_a_naive_scheduled_time() -> None:
    with pytest.raises(ConfigError, match="has no timezone"):
        resolve_window(None, None, scheduled=datetime(2026, 11, 28, 12))


# --------------------------------------------------------------------------- explicit windows


def test_an_explicit_window_is_kept_to_the_microsecond_in_utc() -> None:
    start = datetime(2026, 11, 27, 20, 15, 1, 5, tzinfo=NEW_YORK_WINTER)
    end = utc(2026, 11, 28, 6)
    s, e = resolve_window(start, end, scheduled=utc(2030, 1, 1))  # the schedule is ignored
    assert (s, e) == (utc(2026, 11, 28, 1, 15, 1, 5), utc(2026, 11, 28, 6))
    assert s.tzinfo is UTC and e.tzinfo is UTC
    # naive scheduled time: irrelevant when both bounds are given
    assert resolve_window(start, end, scheduled=datetime(2030, 1, 1)) == (s, e)


@pytest.mark.parametrize(("start", "end"), [(utc(2026, 11, 27), None), (None, utc(2026, 11, 28))])
def test_an_explicit_window_needs_both_bounds(start: datetime | None, end: datetime | None) -> None:
    with pytest.raises(ConfigError, match=r"^give both window_start and window_end, or neither"):
        resolve_window(start, end, scheduled=utc(2026, 11, 28, 12))


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (utc(2026, 11, 28), utc(2026, 11, 27)),
        (utc(2026, 11, 28), utc(2026, 11, 28)),  # empty
        # the same instant written in two offsets is still empty
        (utc(2026, 11, 28, 1), datetime(2026, 11, 27, 20, tzinfo=NEW_YORK_WINTER)),
    ],
)
def test_an_explicit_window_must_end_after_it_starts(start: datetime, end: datetime) -> None:
    with pytest.raises(ConfigError, match=r"^window_end \(.*\) must be after window_start"):
        resolve_window(start, end, scheduled=utc(2026, 11, 28, 12))


def test_an_explicit_window_refuses_naive_bounds_naming_the_bound() -> None:
    naive = datetime(2026, 11, 27)
    with pytest.raises(ConfigError, match=r"^window_start="):
        resolve_window(naive, utc(2026, 11, 28), scheduled=utc(2026, 11, 28))
    with pytest.raises(ConfigError, match=r"^window_end="):
        resolve_window(utc(2026, 11, 26), naive, scheduled=utc(2026, 11, 28))


# --------------------------------------------------------------------------- backfill days


def test_whole_days_are_cut_at_utc_midnights() -> None:
    assert split_days(utc(2026, 11, 27), utc(2026, 11, 30)) == [
        (utc(2026, 11, 27), utc(2026, 11, 28)),
        (utc(2026, 11, 28), utc(2026, 11, 29)),
        (utc(2026, 11, 29), utc(2026, 11, 30)),
    ]


def test_partial_first_and_last_days_keep_their_exact_bounds() -> None:
    assert split_days(utc(2026, 12, 30, 18, 30), utc(2027, 1, 1, 6, 0, 0, 1)) == [
        (utc(2026, 12, 30, 18, 30), utc(2026, 12, 31)),
        (utc(2026, 12, 31), utc(2027, 1, 1)),
        (utc(2027, 1, 1), utc(2027, 1, 1, 6, 0, 0, 1)),
    ]


def test_a_window_inside_one_day_is_one_piece() -> None:
    assert split_days(utc(2026, 11, 28, 1), utc(2026, 11, 28, 2)) == [
        (utc(2026, 11, 28, 1), utc(2026, 11, 28, 2))
    ]
    one_us = utc(2026, 11, 28) - timedelta(microseconds=1)
    assert split_days(one_us, utc(2026, 11, 28)) == [(one_us, utc(2026, 11, 28))]


def test_days_follow_utc_not_the_offset_the_bounds_were_given_in() -> None:
    # 2026-03-28 22:00 CEST is 20:00 UTC; 2026-03-30 02:00 CEST is 2026-03-30 00:00 UTC
    days = split_days(
        datetime(2026, 3, 28, 22, tzinfo=PARIS_SUMMER),
        datetime(2026, 3, 30, 2, tzinfo=PARIS_SUMMER),
    )
    assert days == [
        (utc(2026, 3, 28, 20), utc(2026, 3, 29)),
        (utc(2026, 3, 29), utc(2026, 3, 30)),
    ]
    assert all(s.tzinfo is UTC and e.tzinfo is UTC for s, e in days)


def test_days_are_contiguous_and_cover_the_window_exactly() -> None:
    start, end = utc(2028, 2, 27, 7, 45), utc(2028, 3, 2, 13)  # across a leap day
    days = split_days(start, end)
    assert len(days) == 5 and days[0][0] == start and days[-1][1] == end
    assert all(a[1] == b[0] for a, b in itertools.pairwise(days))
    assert all(timedelta(0) < e - s <= timedelta(days=1) for s, e in days)
    assert [s.date().isoformat() for s, _ in days] == [
        "2028-02-27", "2028-02-28", "2028-02-29", "2028-03-01", "2028-03-02"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("start", "end"),
    [(utc(2026, 11, 28), utc(2026, 11, 27)), (utc(2026, 11, 28), utc(2026, 11, 28))],
)
def test_split_days_refuses_an_empty_or_reversed_range(start: datetime, end: datetime) -> None:
    with pytest.raises(ConfigError, match=r"^end \(.*\) must be after start"):
        split_days(start, end)


def test_split_days_refuses_naive_bounds() -> None:
    with pytest.raises(ConfigError, match=r"^start=.* has no timezone"):
        split_days(datetime(2026, 11, 27), utc(2026, 11, 28))
    with pytest.raises(ConfigError, match=r"^end=.* has no timezone"):
        split_days(utc(2026, 11, 27), datetime(2026, 11, 28))
