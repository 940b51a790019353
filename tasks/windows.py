"""UTC days and windows: the daily window of a scheduled time, explicit windows, the days a
window touches, backfill days. Every cut at a UTC midnight in the project is made here."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

from tasks.errors import ConfigError

# the longest window or range a run takes (a mistyped --since 1000000d is refused in one line)
MAX_SPAN = timedelta(days=3653)
LONG_SPAN = timedelta(days=90)  # a manual window this long gets a size warning
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration(text: str, name: str = "--since") -> timedelta:
    """``90m``, ``24h``, ``7d``, ``1w``, ``3600s`` (or a bare number of seconds), at most
    ``MAX_SPAN``."""
    prefix = f"{name}: " if name else ""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", str(text).lower())
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"{prefix}not a duration: {text!r} (e.g. 90m, 24h, 7d)")
    seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    if seconds > MAX_SPAN.total_seconds():
        raise ConfigError(
            f"{prefix}{text!r} is more than {MAX_SPAN.days} days (10 years), the longest "
            "window a run takes"
        )
    return timedelta(seconds=seconds)


def check_span(start: datetime, end: datetime, what: str = "the window") -> None:
    """A window or range no longer than ``MAX_SPAN``."""
    if end - start > MAX_SPAN:
        raise ConfigError(
            f"{what} {start:%Y-%m-%d} → {end:%Y-%m-%d} spans {(end - start).days} days: at "
            f"most {MAX_SPAN.days} (10 years)"
        )


def midnight(day: date) -> datetime:
    """The start of ``day`` in UTC."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ConfigError(f"{name}={value.isoformat()} has no timezone; give one, e.g. +00:00")
    return value.astimezone(UTC)


def previous_day(reference: datetime) -> tuple[datetime, datetime]:
    """The whole UTC day before ``reference``'s day: [yesterday 00:00, today 00:00)."""
    ref = aware(reference, "reference")
    end = ref.replace(hour=0, minute=0, second=0, microsecond=0)
    return end - timedelta(days=1), end


def resolve_window(
    start: datetime | None, end: datetime | None, *, scheduled: datetime
) -> tuple[datetime, datetime]:
    """An explicit window, or by default the previous whole UTC day of the scheduled time."""
    if start is None and end is None:
        return previous_day(scheduled)
    if start is None or end is None:
        raise ConfigError("give both window_start and window_end, or neither (previous day)")
    s, e = aware(start, "window_start"), aware(end, "window_end")
    if e <= s:
        raise ConfigError(
            f"window_end ({e.isoformat()}) must be after window_start ({s.isoformat()})"
        )
    return s, e


def settle_wait_s(end: datetime, lag_s: float, now: datetime) -> float:
    """How long a run waits for the window's last traces to settle (0: none). A window must
    have ended: the same rule for the CLI, a deployment run and a backfill day."""
    if end > now + timedelta(seconds=1):
        raise ConfigError(
            f"window_end {end.isoformat(timespec='seconds')} is in the future: a window is "
            f"evaluated once it has ended (its traces then get {lag_s:.0f} s to settle, "
            "TRUST_EVAL_SETTLE_LAG_S)"
        )
    return max((end - now).total_seconds() + lag_s, 0.0)


def split_days(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """[start, end) cut at UTC midnights into day windows."""
    s, e = aware(start, "start"), aware(end, "end")
    if e <= s:
        raise ConfigError(f"end ({e.isoformat()}) must be after start ({s.isoformat()})")
    out: list[tuple[datetime, datetime]] = []
    cur = s
    while cur < e:
        nxt = min(cur.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1), e)
        out.append((cur, nxt))
        cur = nxt
    return out


def days_touched(start: datetime, end: datetime) -> list[date]:
    """The UTC days that [start, end) touches (an end at 00:00 does not touch its day)."""
    return [s.date() for s, _ in split_days(start, end)]


def whole_days(start: datetime, end: datetime) -> list[date]:
    """The whole UTC days inside [start, end)."""
    return [s.date() for s, e in split_days(start, end) if e - s == timedelta(days=1)]
