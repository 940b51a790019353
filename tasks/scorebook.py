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

A run that writes more than trust (RAG evals, criteria: ``tasks.evals.EvalPlan``) applies the
rule to every name a unit must carry: a unit is done when each is shown or pending (for the RAG
evals: any of them, so that an eval TLM could not score is not paid for again; a RAG unit
whose evals are only in the ledger re-sends those). A unit with a
name to pay for costs one call, and only the names it lacks are written (``Pair.only``); one
with names to re-send only re-sends those. The ledger keys the trust score by unit, and every
other name by unit and name.
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
from tasks.evals import EvalPlan
from tasks.failures import Reason
from tasks.langfuse_api import ID_BATCH, Calls, scores_by_id
from tasks.models import Bucket, Outcome, Pair, Scored, TraceRecord, outcome_for, score_id
from tasks.retry import describe

logger = logging.getLogger("trust.scorebook")

# what the ledger holds per key: (value, comment, missing)
Row = tuple[float | str | None, str | None, bool]


@dataclass(frozen=True, slots=True)
class Entry:
    """A score a run wrote, as the ledger recorded it."""

    value: float | str | None  # a CATEGORICAL score (the cause): its label
    comment: str | None
    written_at: float  # epoch seconds
    missing: bool = False  # the run knows Langfuse did not take it (refused, lost, dropped)


class Verdict(Enum):
    SHOWN = "shown"  # Langfuse shows it
    PENDING = "pending"  # written by a recent run, not readable yet
    RESEND = "resend"  # paid for, not in Langfuse: re-send the recorded score
    PAY = "pay"  # score it with TLM


RESEND = Verdict.RESEND
DONE = (Verdict.SHOWN, Verdict.PENDING)


def ledger_key(key: str, name: str, main: str) -> str:
    """The ledger's key of a unit's score: the unit for the trust score, else unit and name."""
    return key if name == main else f"{key}\x1f{name}"


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
        plan: EvalPlan | None = None,
    ) -> None:
        self.ledger, self.score_name, self.read_lag_s = ledger, score_name, read_lag_s
        self.run_id, self.warn, self.clock = run_id, warn, clock
        self.plan = plan or EvalPlan(score_name)
        self.shown: dict[str, float | None] = {}  # key -> value, as Langfuse shows it
        self.shown_extra: dict[str, set[str]] = {}  # other names -> keys Langfuse shows them on
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
        plan: EvalPlan | None = None,
    ) -> ScoreBook:
        """The book of the stream whose ``Stream.scores_key`` is given, on the run's ledger."""
        url = tuning.ledger_url or default_ledger_url()
        ledger = Ledger(url, scores_key, retention_s=tuning.ledger_retention_s, clock=clock)
        return cls(ledger, score_name, read_lag_s=tuning.score_read_lag_s, run_id=run_id,
                   warn=warn, clock=clock, plan=plan)  # fmt: skip

    @property
    def names(self) -> tuple[str, ...]:
        """Every score name the run writes (the look-ups ask for them all)."""
        return self.plan.all_names

    # --- what is known ----------------------------------------------------------------------

    def load(self, days: Iterable[date]) -> None:
        """Read the ledger for those days (a failure: the run goes on without it)."""
        if self.ledger is None:
            return
        try:
            self.entries = self.ledger.read(days)
        except Exception as err:
            self._lost(f"score ledger unavailable: {describe(err)}")

    def saw(self, found: Mapping[str, float | None], name: str | None = None) -> None:
        """Units Langfuse shows with the score ``name`` (the trust score when None)."""
        if name is None or name == self.score_name:
            self.shown.update(found)
        else:
            self.shown_extra.setdefault(name, set()).update(found)

    def saw_all(self, found: Mapping[str, Mapping[str, float | None]]) -> None:
        """A look-up's answer for several names: name -> units."""
        for name, units in found.items():
            self.saw(units, name)

    def agrees(self, count: Callable[[], int | None]) -> bool:
        """When the ledger knows what runs wrote in the window (more than a look-up page) and
        ``count()`` (Langfuse's count of the name's scores there) says Langfuse holds just as
        many, Langfuse shows what the ledger says: the book takes the ledger's values as
        shown, and the look-up page by page is not needed."""
        if self.plan.extra:  # the count is of one name: look every name up instead
            return False
        taken = {k: _num(e.value) for k, e in self.entries.items() if not e.missing}
        if len(taken) <= ID_BATCH or len(taken) < len(self.entries):
            return False
        if count() != len(taken):
            return False
        self.saw(taken)
        return True

    def verdict(self, key: str, name: str | None = None) -> Verdict:
        """The rule for the score ``name`` (the trust score when None) of a unit."""
        if name is None or name == self.score_name:
            shown, entry = key in self.shown, self.entries.get(key)
        else:
            shown = key in self.shown_extra.get(name, ())
            entry = self.entries.get(ledger_key(key, name, self.score_name))
        return verdict(shown, entry, now=self.clock.time(), read_lag_s=self.read_lag_s)

    def _extras_done(self, key: str, *, evals: bool) -> bool:
        """Whether the unit carries (or a run wrote) each criterion, and, with ``evals``, any
        RAG eval (a unit without context never does: it is settled after pairing)."""
        plan = self.plan
        if not all(self.verdict(key, n) in DONE for n in plan.criterion_names):
            return False
        return not evals or any(self.verdict(key, n) in DONE for n in plan.eval_names)

    def _lacking(self, key: str, rag_unit: bool) -> dict[str, Verdict]:
        """The names a unit must carry that it lacks, with their verdicts (RESEND or PAY)."""
        plan = self.plan
        names = [self.score_name, *plan.criterion_names]
        verdicts = {n: self.verdict(key, n) for n in names}
        evals = {n: self.verdict(key, n) for n in plan.eval_names} if rag_unit else {}
        if any(v in DONE for v in evals.values()):
            evals = {}  # a RAG call landed: an eval it could not score is not paid for again
        elif RESEND in evals.values():
            evals = {n: v for n, v in evals.items() if v is RESEND}  # paid for: re-sent
        return {n: v for n, v in (verdicts | evals).items() if v not in DONE}

    # --- decisions --------------------------------------------------------------------------

    def triage(
        self, units: list[TraceRecord], *, rescore: bool, keep: Callable[[str], bool]
    ) -> Triage:
        """Each unit settled (already scored, not sampled) or on to pairing."""
        out = Triage()
        for unit in units:
            key = unit.key
            v = Verdict.PAY if rescore else self.verdict(key)
            if v in DONE and self.plan.extra and not self._extras_done(key, evals=self.plan.rag):
                v = Verdict.PAY  # a name it lacks: on to pairing (and to TLM, if still lacking)
            if v is Verdict.SHOWN:
                out.values[key] = self.shown[key]
                out.outcomes.append(outcome_for(unit, Bucket.ALREADY_SCORED))
            elif v is Verdict.PENDING:
                out.values[key] = _num(self.entries[key].value)
                out.outcomes.append(outcome_for(unit, Bucket.ALREADY_SCORED, Reason.PENDING))
            elif not keep(key):
                out.outcomes.append(outcome_for(unit, Bucket.SKIPPED, Reason.NOT_SAMPLED))
            else:
                out.todo.append(unit)
        return out

    def split(self, pairs: list[Pair], *, rescore: bool) -> tuple[list[Scored], list[Pair], Triage]:
        """Pairs whose scores a run already paid for (re-sent as recorded), pairs for TLM, and
        pairs that turn out to carry everything they need (a unit without context, with RAG
        evals asked: it needs none)."""
        again: list[Scored] = []
        fresh: list[Pair] = []
        done = Triage()
        for p in pairs:
            if self.plan.extra and not rescore:
                self._split_names(p, again, fresh, done)
                continue
            e = self.entries.get(p.key)
            if rescore or e is None or e.value is None or self.verdict(p.key) is not RESEND:
                fresh.append(p)
            else:
                again.append(Scored(pair=p, score=_num(e.value) or 0.0, explanation=e.comment))
        return again, fresh, done

    def _split_names(self, p: Pair, again: list[Scored], fresh: list[Pair], done: Triage) -> None:
        plan, key = self.plan, p.key
        lacking = self._lacking(key, plan.rag and p.context is not None)
        main = self.entries.get(key)
        value = self.shown[key] if key in self.shown else _num(main.value) if main else None
        if not lacking:
            pending = any(self.verdict(key, n) is Verdict.PENDING for n in plan.all_names)
            done.values[key] = value
            reason = Reason.PENDING if pending else None
            done.outcomes.append(outcome_for(p, Bucket.ALREADY_SCORED, reason))
            return
        cause = {plan.cause_name} if plan.cause_name else set()
        cause -= {n for n in cause if self.verdict(key, n) in DONE}  # written already
        if Verdict.PAY in lacking.values() or value is None:
            p.only = frozenset(lacking) | cause
            fresh.append(p)
            return
        item = Scored(pair=p, score=value, explanation=main.comment if main else None)
        for name in [*lacking, *cause]:
            e = self.entries.get(ledger_key(key, name, self.score_name))
            if e is None or name == self.score_name:
                continue
            if isinstance(e.value, str):
                item.labels[name] = e.value
            elif e.value is not None:
                item.extra[name] = e.value
        p.only = frozenset(lacking) | cause
        again.append(item)

    # --- what this run wrote ----------------------------------------------------------------

    def record(self, items: list[Scored], taken: set[str]) -> None:
        """Scores this run paid for (or re-sent), every name it wrote: which Langfuse took (by
        score id), for the runs after it."""
        rows: dict[date, dict[str, Row]] = {}
        for s in items:
            p = s.pair
            day = p.start_time.astimezone(UTC).date()
            values: dict[str, tuple[float | str, str | None]] = {}
            if s.writes(self.score_name):
                values[self.score_name] = (s.score, s.explanation)
            values |= {n: (v, None) for n, v in (s.extra | s.labels).items() if s.writes(n)}
            for name, (value, comment) in values.items():
                sid = score_id(p.trace_id, name, p.observation_id)
                lk = ledger_key(p.key, name, self.score_name)
                if sid in taken:
                    self.accepted[lk] = (sid, day)
                rows.setdefault(day, {})[lk] = (value, comment, sid not in taken)
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


def _num(value: float | str | None) -> float | None:
    return value if isinstance(value, float | int) and not isinstance(value, bool) else None


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
