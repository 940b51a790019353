"""The pay-once memory (tasks/scorebook.py): its rule, the ledger, and a run's view of both, on a
fake clock and an in-memory ledger. Nothing here talks to a server."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from tasks.langfuse_api import Calls
from tasks.models import Bucket, Pair, Scored, TraceRecord, score_id
from tasks.scorebook import Entry, Ledger, ScoreBook, Verdict, read_back, verdict
from tasks.stream import Stream
from tests.support.clock import FakeClock

DAY = date(2026, 11, 28)
T0 = datetime(2026, 11, 28, 12, tzinfo=UTC)
LAG = 900.0


@pytest.mark.parametrize(
    ("shown", "entry", "expected"),
    [
        (True, None, Verdict.SHOWN),  # Langfuse shows it: nothing to pay
        (True, Entry(0.4, "c", -5000.0), Verdict.SHOWN),
        (False, None, Verdict.PAY),  # nobody wrote it
        (False, Entry(None, None, -10.0), Verdict.PAY),  # recorded without a value
        (False, Entry(0.3, "c", -899.999), Verdict.PENDING),  # within the lag: wait for it
        (False, Entry(0.3, "c", -900.0), Verdict.RESEND),  # past the lag and not shown
        (False, Entry(0.3, "c", -1.0, missing=True), Verdict.RESEND),  # refused: re-send now
    ],
)
def test_the_rule(shown: bool, entry: Entry | None, expected: Verdict) -> None:
    assert verdict(shown, entry, now=0.0, read_lag_s=LAG) is expected


def test_the_ledger_keeps_the_newest_entry_per_key_and_prunes_old_files(tmp_path: Path) -> None:
    clock = FakeClock(start=1000.0)
    ledger = Ledger(str(tmp_path), "stream", retention_s=100.0, clock=clock)
    ledger.write({DAY: {"a": (0.2, "why a", False)}}, run_id="r1", chunk=1)
    clock.advance(10)
    ledger.write({DAY: {"a": (0.2, "why a", True), "b": (0.9, None, False)}}, run_id="r2",
                 chunk=1)  # fmt: skip
    clock.advance(10)
    assert ledger.read([DAY]) == {
        "a": Entry(0.2, "why a", 1010.0, missing=True),
        "b": Entry(0.9, None, 1010.0),
    }
    assert ledger.read([DAY + timedelta(days=1)]) == {}  # other days: not read
    clock.advance(200)
    assert ledger.read([DAY]) == {}  # past retention: removed
    assert list((tmp_path / "stream" / DAY.isoformat()).iterdir()) == []


def test_an_unreadable_ledger_file_is_skipped(tmp_path: Path) -> None:
    ledger = Ledger(str(tmp_path), "s", retention_s=1e9, clock=FakeClock(start=10.0))
    ledger.write({DAY: {"a": (0.5, None, False)}}, run_id="r", chunk=1)
    (tmp_path / "s" / DAY.isoformat() / "0000000000020-torn-1.json").write_text('{"written')
    assert set(ledger.read([DAY])) == {"a"}


def test_streams_of_one_project_and_score_name_share_a_ledger_whatever_their_tags() -> None:
    a = Stream.of("p1", ["x"], "trust")
    assert a.scores_key == Stream.of("p1", ["x", "y"], "trust").scores_key
    assert a.scores_key != Stream.of("p2", ["x"], "trust").scores_key
    assert a.scores_key != Stream.of("p1", ["x"], "trust2").scores_key
    assert a.key != Stream.of("p1", ["x", "y"], "trust").key  # but they report apart


# --------------------------------------------------------------------------- a run's book


def rec(key: str) -> TraceRecord:
    return TraceRecord(key, key, T0, "q", "in", "out", None, "default")


def pair(key: str) -> Pair:
    return Pair(key, T0, "q", None, "p", "r", "text")


def book_on(tmp_path: Path, clock: FakeClock, warnings: list[str] | None = None) -> ScoreBook:
    ledger = Ledger(str(tmp_path), "s", retention_s=1e9, clock=clock)
    warn = (warnings if warnings is not None else []).append
    return ScoreBook(ledger, "trust", read_lag_s=LAG, run_id="run", warn=warn, clock=clock)


def test_a_run_pays_only_for_what_neither_langfuse_nor_a_recent_run_has(tmp_path: Path) -> None:
    clock = FakeClock(start=10_000.0)
    earlier = book_on(tmp_path, clock)
    items = [Scored(pair(k), 0.3, "c") for k in ("recent", "old", "refused")]
    clock.advance(-5000)
    earlier.record(items[1:2], {score_id("old", "trust")})  # written 5000 s ago
    clock.advance(5000 - 60)
    earlier.record(items[:1], {score_id("recent", "trust")})  # a minute ago
    earlier.record(items[2:], set())  # Langfuse refused it
    clock.advance(60)

    book = book_on(tmp_path, clock)
    book.load([DAY])
    book.saw({"shown": 0.7})
    keys = ["shown", "recent", "old", "refused", "new", "dropped"]
    triage = book.triage([rec(k) for k in keys], rescore=False, keep=lambda k: k != "dropped")
    assert [t.trace_id for t in triage.todo] == ["old", "refused", "new"]
    assert {o.trace_id: (o.bucket, o.reason) for o in triage.outcomes} == {
        "shown": (Bucket.ALREADY_SCORED, None),
        "recent": (Bucket.ALREADY_SCORED, "pending"),
        "dropped": (Bucket.SKIPPED, "not_sampled"),
    }
    assert triage.values == {"shown": 0.7, "recent": 0.3}
    again, fresh, done = book.split([pair(t.trace_id) for t in triage.todo], rescore=False)
    assert done.outcomes == []
    assert [(s.pair.trace_id, s.score, s.explanation) for s in again] == [
        ("old", 0.3, "c"), ("refused", 0.3, "c")
    ]  # fmt: skip
    assert [p.trace_id for p in fresh] == ["new"]
    # rescore pays TLM for everything, shown or recorded
    everything = book.triage([rec(k) for k in keys], rescore=True, keep=lambda k: True)
    assert [t.trace_id for t in everything.todo] == keys
    assert book.split([pair("old")], rescore=True)[:2] == ([], [pair("old")])


def test_what_a_run_records_is_what_the_next_run_knows(tmp_path: Path) -> None:
    clock = FakeClock()
    book = book_on(tmp_path, clock)
    book.record(
        [Scored(pair("a"), 0.4, "x"), Scored(pair("b"), 0.6, None)], {score_id("a", "trust")}
    )
    assert book.accepted == {"a": (score_id("a", "trust"), DAY)}
    nxt = book_on(tmp_path, clock)
    nxt.load([DAY])
    assert nxt.verdict("a") is Verdict.PENDING  # taken, not readable yet
    assert nxt.verdict("b") is Verdict.RESEND  # not taken: re-send without paying
    book.not_shown(["a"])  # read back and missing: the next run re-sends it at once
    nxt.load([DAY])
    assert nxt.verdict("a") is Verdict.RESEND


def test_a_broken_ledger_is_a_warning_and_the_run_goes_on(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("not a folder")  # the ledger's folder cannot be made
    warnings: list[str] = []
    book = book_on(tmp_path, FakeClock(), warnings)
    book.record([Scored(pair("a"), 0.4, None)], {score_id("a", "trust")})
    assert warnings and warnings[0].startswith("score ledger not written")
    assert book.accepted  # what Langfuse took is still known, for reading back


class FakeScores:
    def __init__(self, shows: list[set[str]]) -> None:
        self.shows = shows  # the ids Langfuse shows, read after read

    def get_many(self, id: str, **_: Any) -> Any:
        shown = self.shows.pop(0) if len(self.shows) > 1 else self.shows[0]
        return SimpleNamespace(data=[SimpleNamespace(id=i) for i in id.split(",") if i in shown])


def test_reading_back_waits_on_the_clock_and_marks_what_never_showed(tmp_path: Path) -> None:
    clock = FakeClock()
    book = book_on(tmp_path, clock)
    ids = {k: score_id(k, "trust") for k in "abc"}
    book.record([Scored(pair(k), 0.5, None) for k in "abc"], set(ids.values()))
    calls = SimpleNamespace(
        clock=clock,
        logger=logging.getLogger("test"),
        scores=FakeScores([{ids["a"]}, {ids["a"], ids["b"]}]),
        __call__=None,
    )
    fake = cast(Calls, _Callable(calls))
    confirmed, missing = read_back(book, fake, wait_s=12.0)
    assert (confirmed, missing) == (2, ["c"])
    assert clock.sleeps == [5.0, 5.0, 2.0]  # every 5 s until the wait is up, no longer
    nxt = book_on(tmp_path, clock)
    nxt.load([DAY])
    assert nxt.verdict("c") is Verdict.RESEND and nxt.verdict("a") is Verdict.PENDING


class _Callable:
    """``Calls`` as ``scores_by_id`` uses it: attributes, and ``calls(what, fn)``."""

    def __init__(self, ns: SimpleNamespace) -> None:
        self.__dict__.update(vars(ns))

    def __call__(self, what: str, fn: Any) -> Any:
        return fn()
