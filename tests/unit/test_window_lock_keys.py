"""Window-lock keys and knobs, and the OS-lock wait: no Prefect server involved."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import flows.window_lock as wl
from flows.window_lock import WindowLockTimeout, lock_names, window_days
from tasks.config import ConfigError

DAY = datetime(2026, 11, 28, tzinfo=UTC)
NEXT = DAY + timedelta(days=1)


def test_a_window_locks_every_utc_day_it_touches() -> None:
    assert window_days(DAY, NEXT) == [date(2026, 11, 28)]  # the end (00:00) is exclusive
    assert window_days(DAY + timedelta(hours=7), NEXT + timedelta(hours=1)) == [
        date(2026, 11, 28),
        date(2026, 11, 29),
    ]
    paris = datetime(2026, 11, 29, 0, 0, tzinfo=timezone(timedelta(hours=1)))
    assert window_days(paris, paris + timedelta(minutes=30)) == [date(2026, 11, 28)]
    assert window_days(DAY, DAY) == [date(2026, 11, 28)]


def test_day_lock_names_are_deterministic_and_valid() -> None:
    (name,) = lock_names(DAY, NEXT, ["b/x", "a"], "trust_score")
    assert (
        name
        == lock_names(
            DAY + timedelta(hours=5), DAY + timedelta(hours=6), ["a", "b/x", "a"], "trust_score"
        )[0]
    )
    assert name != lock_names(DAY, NEXT, ["a"], "trust_score")[0]
    assert name != lock_names(DAY, NEXT, ["a", "b/x"], "other")[0]
    assert name.startswith("trust_window_2026-11-28_")
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789_-")
    two = lock_names(DAY - timedelta(hours=1), NEXT, ["a"], "s")
    assert [n.split("_")[2] for n in two] == ["2026-11-27", "2026-11-28"]  # date order


def test_lock_knobs_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRUST_EVAL_LOCK_LEASE_S", raising=False)
    monkeypatch.delenv("TRUST_EVAL_LOCK_TIMEOUT_S", raising=False)
    assert wl.lock_settings() == (120.0, 3600.0)
    monkeypatch.setenv("TRUST_EVAL_LOCK_LEASE_S", "0.5")
    with pytest.raises(ConfigError, match="TRUST_EVAL_LOCK_LEASE_S must be at least 1"):
        wl.lock_settings()
    monkeypatch.setenv("TRUST_EVAL_LOCK_LEASE_S", "30")
    monkeypatch.setenv("TRUST_EVAL_LOCK_TIMEOUT_S", "soon")
    with pytest.raises(ConfigError, match="TRUST_EVAL_LOCK_TIMEOUT_S must be a number"):
        wl.lock_settings()


def test_the_os_lock_wait_times_out_naming_the_holder(tmp_path: Path) -> None:
    """Without a server the wait is on the OS lock first: bounded, and it names the holder."""
    import fcntl
    from types import SimpleNamespace

    path = tmp_path / "trust_window_2026-11-28_abc.lock"
    path.touch()
    record = {"flow_run_id": "0f0e", "pid": 7, "host": "h"}
    client: Any = SimpleNamespace(read_variable_by_name=lambda name: SimpleNamespace(value=record))
    with path.open("ab") as other:
        fcntl.flock(other.fileno(), fcntl.LOCK_EX)  # another run (another open file) holds it
        began = time.monotonic()
        with pytest.raises(WindowLockTimeout, match=r"window W .* flow run 0f0e \(pid 7 on h\)"):
            wl._take_file(path, began + 0.5, "W", client)
        assert 0.5 <= time.monotonic() - began < 2
    with wl._take_file(path, time.monotonic(), "W", client):  # released: taken at once
        pass
