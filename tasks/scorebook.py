"""The pay-once memory of a stream: never pay TLM twice for a unit, never lose a paid score.

What a run knows before it pays, in one place:

- **what Langfuse shows**: the look-ups (by the window's time range, or by our score ids);
- **what runs paid for**: the score ledger. Langfuse shows a written score to readers only
  minutes later, and can drop one it accepted, so every run records the scores it wrote (value
  and comment; one small JSON file per chunk, under the UTC day of each unit's start). Any
  fsspec URL works (a local folder by default; object storage when workers run on several
  machines). It is keyed by ``Stream.scores_key``: streams whose score ids coincide share it;
- **what this run wrote**, for reading back (``verify``) and for the ledger.

The rules, for a unit not being re-scored (``verdict``):

1. Langfuse shows its score: already scored, pay nothing.
2. A run recorded it within the read lag and did not know it missing: already scored
   (*pending*: not readable yet), pay nothing.
3. A run recorded its value, and Langfuse does not show it after the lag (or refused it):
   re-send the recorded score, pay nothing.
4. Otherwise: pay TLM.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date
from enum import Enum

import fsspec

from tasks.clock import SYSTEM, Clock
from tasks.config import Tuning
from tasks.failures import Reason
from tasks.langfuse_api import ID_BATCH, Calls, scores_by_id
from tasks.models import Bucket, Outcome, Pair, Scored, TraceRecord, outcome_for, score_id
from tasks.retry import describe

logger = logging.getLogger("trust.scorebook")

# what the ledger holds per key: (value, comment, missing)
Row = tuple[float | None, str | None, bool]


@dataclass(frozen=True, slots=True)
class Entry:
    """A score a run wrote, as the ledger recorded it."""

    value: float | None
    comment: str | None
    written_at: float  # epoch seconds
    missing: bool = False  # the run knows Langfuse did not take it (refused, lost, dropped)


class Verdict(Enum):
    SHOWN = "shown"  # Langfuse shows it
    PENDING = "pending"  # written by a recent run, not readable yet
    RESEND = "resend"  # paid for, not in Langfuse: re-send the recorded score
    PAY = "pay"  # score it with TLM


RESEND = Verdict.RESEND


def verdict(shown: bool, entry: Entry | None, *, now: float, read_lag_s: float) -> Verdict:
    """The rule for one unit (see the module docstring), from what is known of it."""
    if shown:
        return Verdict.SHOWN
    if entry is None or entry.value is None:
        return Verdict.PAY
    if not entry.missing and now - entry.written_at < read_lag_s:
        return Verdict.PENDING
    return Verdict.RESEND


def default_ledger_url() -> str:
    from prefect.settings import get_current_settings

    return str(get_current_settings().home / "trust-eval" / "ledger")


class Ledger:
    """The scores runs wrote, per stream and UTC day, in JSON files under any fsspec URL."""

    def __init__(self, url: str, stream: str, *, retention_s: float, clock: Clock = SYSTEM):
        self.fs, root = fsspec.core.url_to_fs(url)
        self.root = f"{root.rstrip('/')}/{stream}"
        self.retention_s = retention_s
        self.clock = clock

    def write(self, entries: Mapping[date, Mapping[str, Row]], *, run_id: str, chunk: int) -> None:
        """Record (value, comment, missing) per key, by the UTC day of each unit's start."""
        now = self.clock.time()
        for day, scores in entries.items():
            if not scores:
                continue
            folder = f"{self.root}/{day.isoformat()}"
            self.fs.makedirs(folder, exist_ok=True)
            body = json.dumps({"written_at": now, "scores": scores}, ensure_ascii=False)
            name = f"{int(now * 1000):013d}-{run_id}-{chunk:06d}.json"  # sorts as written
            self.fs.pipe_file(f"{folder}/{name}", body.encode())

    def read(self, days: Iterable[date]) -> dict[str, Entry]:
        """The newest entry per key for those days (files past retention are removed)."""
        now = self.clock.time()
        out: dict[str, Entry] = {}
        for day in days:
            folder = f"{self.root}/{day.isoformat()}"
            try:
                names = sorted(str(p) for p in self.fs.ls(folder, detail=False))
            except FileNotFoundError:
                continue
            for path in names:  # oldest first: newer entries overwrite
                try:
                    data = json.loads(self.fs.cat_file(path))
                    written = float(data["written_at"])
                    scores = data["scores"]
                except (ValueError, KeyError, TypeError, OSError) as err:
                    logger.warning("skipping unreadable ledger file %s: %s", path, err)
                    continue
                if now - written > self.retention_s:
                    with contextlib.suppress(OSError):
                        self.fs.rm(path)
                    continue
                for key, (value, comment, missing) in scores.items():
                    out[key] = Entry(value, comment, written, bool(missing))
        return out


@dataclass(slots=True)
class Triage:
    """A page's units: what goes on to pairing, and what is settled already."""

    todo: list[TraceRecord] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)  # already scored, or not sampled
    values: dict[str, float | None] = field(default_factory=dict)  # already scored: value


class ScoreBook:
    """One run's view of the stream's pay-once memory (see the module docstring).

    ``ledger`` None: no ledger (unavailable); the run still looks Langfuse up, and says so.
    ``warn`` reports a ledger failure (the run goes on: it may then pay again within the lag).
    """

    def __init__(
        self,
        ledger: Ledger | None,
        score_name: str,
        *,
        read_lag_s: float,
        run_id: str,
        warn: Callable[[str], None],
        clock: Clock = SYSTEM,
    ) -> None:
        self.ledger, self.score_name, self.read_lag_s = ledger, score_name, read_lag_s
        self.run_id, self.warn, self.clock = run_id, warn, clock
        self.shown: dict[str, float | None] = {}  # key -> value, as Langfuse shows it
        self.entries: dict[str, Entry] = {}  # key -> what a run recorded
        self.accepted: dict[str, tuple[str, date]] = {}  # key -> (score id, day) taken
        self.writes = 0

    @classmethod
    def open(
        cls,
        scores_key: str,
        score_name: str,
        tuning: Tuning,
        *,
        run_id: str,
        warn: Callable[[str], None],
        clock: Clock = SYSTEM,
    ) -> ScoreBook:
        """The book of the stream whose ``Stream.scores_key`` is given, on the run's ledger."""
        url = tuning.ledger_url or default_ledger_url()
        ledger = Ledger(url, scores_key, retention_s=tuning.ledger_retention_s, clock=clock)
        return cls(ledger, score_name, read_lag_s=tuning.score_read_lag_s, run_id=run_id,
                   warn=warn, clock=clock)  # fmt: skip

    # --- what is known ----------------------------------------------------------------------

    def load(self, days: Iterable[date]) -> None:
        """Read the ledger for those days (a failure: the run goes on without it)."""
        if self.ledger is None:
            return
        try:
            self.entries = self.ledger.read(days)
        except Exception as err:
            self._lost(f"score ledger unavailable: {describe(err)}")

    def saw(self, found: Mapping[str, float | None]) -> None:
        """Units Langfuse shows with the score (a look-up's answer)."""
        self.shown.update(found)

    def agrees(self, count: Callable[[], int | None]) -> bool:
        """When the ledger knows what runs wrote in the window (more than a look-up page) and
        ``count()`` (Langfuse's count of the name's scores there) says Langfuse holds just as
        many, Langfuse shows what the ledger says: the book takes the ledger's values as
        shown, and the look-up page by page is not needed."""
        taken = {k: e.value for k, e in self.entries.items() if not e.missing}
        if len(taken) <= ID_BATCH or len(taken) < len(self.entries):
            return False
        if count() != len(taken):
            return False
        self.saw(taken)
        return True

    def verdict(self, key: str) -> Verdict:
        return verdict(
            key in self.shown, self.entries.get(key),
            now=self.clock.time(), read_lag_s=self.read_lag_s,
        )  # fmt: skip

    # --- decisions --------------------------------------------------------------------------

    def triage(
        self, units: list[TraceRecord], *, rescore: bool, keep: Callable[[str], bool]
    ) -> Triage:
        """Each unit settled (already scored, not sampled) or on to pairing."""
        out = Triage()
        for unit in units:
            key = unit.key
            v = Verdict.PAY if rescore else self.verdict(key)
            if v is Verdict.SHOWN:
                out.values[key] = self.shown[key]
                out.outcomes.append(outcome_for(unit, Bucket.ALREADY_SCORED))
            elif v is Verdict.PENDING:
                out.values[key] = self.entries[key].value
                out.outcomes.append(outcome_for(unit, Bucket.ALREADY_SCORED, Reason.PENDING))
            elif not keep(key):
                out.outcomes.append(outcome_for(unit, Bucket.SKIPPED, Reason.NOT_SAMPLED))
            else:
                out.todo.append(unit)
        return out

    def split(self, pairs: list[Pair], *, rescore: bool) -> tuple[list[Scored], list[Pair]]:
        """Pairs whose score a run already paid for (re-sent as recorded), and pairs for TLM."""
        again: list[Scored] = []
        fresh: list[Pair] = []
        for p in pairs:
            e = self.entries.get(p.key)
            if rescore or e is None or e.value is None or self.verdict(p.key) is not RESEND:
                fresh.append(p)
            else:
                again.append(Scored(pair=p, score=e.value, explanation=e.comment))
        return again, fresh

    # --- what this run wrote ----------------------------------------------------------------

    def record(self, items: list[Scored], accepted: set[str]) -> None:
        """Scores this run paid for (or re-sent): which Langfuse took, for the runs after it."""
        rows: dict[date, dict[str, Row]] = {}
        for s in items:
            p = s.pair
            day = p.start_time.astimezone(UTC).date()
            if p.key in accepted:
                sid = score_id(p.trace_id, self.score_name, p.observation_id)
                self.accepted[p.key] = (sid, day)
            rows.setdefault(day, {})[p.key] = (s.score, s.explanation, p.key not in accepted)
        self._write(rows)

    def not_shown(self, missing: Iterable[str]) -> None:
        """Accepted scores that did not show when read back: the next run re-sends them."""
        if self.ledger is None:
            return
        missing = [k for k in missing if k in self.accepted]
        try:
            entries = self.ledger.read(sorted({self.accepted[k][1] for k in missing}))
        except Exception as err:
            self._lost(f"score ledger unavailable: {describe(err)}")
            return
        rows: dict[date, dict[str, Row]] = {}
        for key in missing:
            e = entries.get(key)
            if e is not None:
                rows.setdefault(self.accepted[key][1], {})[key] = (e.value, e.comment, True)
        self._write(rows)

    def _write(self, rows: Mapping[date, Mapping[str, Row]]) -> None:
        if self.ledger is None or not rows:
            return
        self.writes += 1
        try:
            self.ledger.write(rows, run_id=self.run_id, chunk=self.writes)
        except Exception as err:
            self.warn(f"score ledger not written: {describe(err)}")

    def _lost(self, why: str) -> None:
        self.warn(why)
        self.ledger = None


def read_back(book: ScoreBook, calls: Calls, wait_s: float) -> tuple[int, list[str]]:
    """Read the scores this run wrote back until all show or ``wait_s`` is up: (how many
    showed, the keys that did not). Those are marked in the ledger: the next run re-sends them
    without paying TLM."""
    clock = calls.clock
    missing = {k: sid for k, (sid, _) in book.accepted.items()}
    deadline = clock.monotonic() + wait_s
    while missing:
        found = {str(s.id) for s in scores_by_id(calls, list(missing.values()), "verify")}
        missing = {k: v for k, v in missing.items() if v not in found}
        if not missing or clock.monotonic() >= deadline:
            break
        clock.sleep(min(5.0, max(deadline - clock.monotonic(), 0.0)))
    if missing:
        calls.logger.warning(
            "%d of %d accepted scores did not show in Langfuse within %.0f s: the next run "
            "re-sends them", len(missing), len(book.accepted), wait_s,
        )  # fmt: skip
        book.not_shown(missing)
    return len(book.accepted) - len(missing), sorted(missing)
