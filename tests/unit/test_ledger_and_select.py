"""The score ledger and the selection rules that decide what goes to TLM."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from tasks.config import LangfuseSettings
from tasks.ledger import Ledger, days_of, stream_of
from tasks.models import Bucket, Entry, Pair, TraceRecord
from tasks.select import Known, sampled, select, split_resends

DAY = date(2026, 11, 28)
T0 = datetime(2026, 11, 28, 12, tzinfo=UTC)


def test_ledger_keeps_the_newest_entry_per_key_and_prunes_old_files(tmp_path: Path) -> None:
    ledger = Ledger(str(tmp_path), "stream", retention_s=100.0)
    ledger.write({DAY: {"a": (0.2, "why a", False)}}, run_id="r1", chunk=1, now=1000.0)
    ledger.write({DAY: {"a": (0.2, "why a", True), "b": (0.9, None, False)}}, run_id="r2",
                 chunk=1, now=1010.0)  # fmt: skip
    assert ledger.read([DAY], now=1020.0) == {
        "a": Entry(0.2, "why a", 1010.0, missing=True),
        "b": Entry(0.9, None, 1010.0),
    }
    assert ledger.read([DAY + timedelta(days=1)], now=1020.0) == {}  # other days: not read
    assert ledger.read([DAY], now=1200.0) == {}  # past retention: removed
    assert list((tmp_path / "stream" / DAY.isoformat()).iterdir()) == []


def test_an_unreadable_ledger_file_is_skipped(tmp_path: Path) -> None:
    ledger = Ledger(str(tmp_path), "s", retention_s=1e9)
    ledger.write({DAY: {"a": (0.5, None, False)}}, run_id="r", chunk=1, now=10.0)
    (tmp_path / "s" / DAY.isoformat() / "0000000000020-torn-1.json").write_text('{"written')
    assert set(ledger.read([DAY], now=30.0)) == {"a"}


def test_streams_are_per_project_and_score_name() -> None:
    cfg = LangfuseSettings.model_validate(
        {"LANGFUSE_PUBLIC_KEY": "pk", "LANGFUSE_SECRET_KEY": "sk", "LANGFUSE_BASE_URL": "http://x"}
    )
    other = cfg.model_copy(update={"public_key": "pk2"})
    assert stream_of(cfg, "trust") != stream_of(cfg, "trust2") != stream_of(other, "trust")
    assert days_of(T0, T0 + timedelta(days=1)) == [DAY, DAY + timedelta(days=1)]
    assert days_of(T0.replace(hour=0), T0.replace(hour=0) + timedelta(days=1)) == [DAY]


def rec(key: str) -> TraceRecord:
    return TraceRecord(key, key, T0, "q", "in", "out", None, "default")


def test_selection_counts_what_langfuse_shows_or_a_recent_run_wrote() -> None:
    now = 10_000.0
    known = Known(
        in_langfuse={"shown": 0.7},
        ledger={
            "recent": Entry(0.3, "c", now - 60),  # within the read lag: pending
            "old": Entry(0.4, "c", now - 5000),  # past the lag, not shown: re-send it
            "refused": Entry(0.5, "c", now - 1, missing=True),  # Langfuse did not take it
        },
        read_lag_s=900.0,
        now=now,
    )
    sel = select([rec(k) for k in ("shown", "recent", "old", "refused", "new")], known=known,
                 observations=False, rescore=False, sample_rate=1.0)  # fmt: skip
    assert sel.units == 5 and [t.trace_id for t in sel.todo] == ["old", "refused", "new"]
    assert {o.trace_id: (o.bucket, o.reason) for o in sel.outcomes} == {
        "shown": (Bucket.ALREADY_SCORED, None),
        "recent": (Bucket.ALREADY_SCORED, "pending"),
    }
    assert sel.values == {"shown": 0.7, "recent": 0.3}
    pairs = [Pair(t.trace_id, T0, "q", None, "p", "r", "text") for t in sel.todo]
    again, fresh = split_resends(pairs, known, rescore=False)
    assert [(s.pair.trace_id, s.score) for s in again] == [("old", 0.4), ("refused", 0.5)]
    assert [p.trace_id for p in fresh] == ["new"]
    assert split_resends(pairs, known, rescore=True)[0] == []  # rescore pays TLM for all
    everything = select([rec("shown")], known=known, observations=False, rescore=True,
                        sample_rate=1.0)  # fmt: skip
    assert [t.trace_id for t in everything.todo] == ["shown"]


def test_sampling_is_deterministic_and_roughly_the_rate() -> None:
    keys = [f"trace-{i}" for i in range(4000)]
    picked = [k for k in keys if sampled(k, 0.25)]
    assert picked == [k for k in keys if sampled(k, 0.25)]
    assert 900 < len(picked) < 1100 and all(sampled(k, 1.0) for k in keys)
