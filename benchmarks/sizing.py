"""Sizing: workers and backfill hours for N traces a day, from the committed benchmark runs.

    uv run --locked python -m benchmarks.sizing              # print the table
    uv run --locked python -m benchmarks.sizing --markdown   # also write it into docs/SCALING.md

Every figure comes from benchmarks/results/*.json except the assumptions, which are flags:
traces per day (the rows), TLM calls in flight per worker, the Langfuse plan's request limit per
minute, the deadline for one day's traces and the backfill length.

Measured (our flow, the newest run of each scenario, no TLM ceiling):
- ``marginal-tail`` (TLM log-normal, mean 2 s, p99 15 s: the real TLM's speed): the marginal
  wall seconds per trace between its smallest and largest window (``report.marginal``), the TLM
  calls in flight it ran at (peak), and Langfuse requests per 1k traces at its largest window;
- ``marginal-50ms`` (TLM answers in 50 ms, so the CPUs are the limit): the marginal seconds per
  trace no TLM concurrency can beat on that machine.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import report

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "SCALING.md"
START, END = "<!-- sizing:start -->", "<!-- sizing:end -->"
TAIL_SCENARIO, FAST_SCENARIO = "marginal-tail", "marginal-50ms"
CONTENDER = "flow"
# Langfuse Cloud, "API. All other APIs" (observations, scores, score configs), per organization:
# https://langfuse.com/faq/all/api-limits
PLAN_PER_MINUTE = {"hobby": 30.0, "core": 100.0, "pro": 1000.0}


@dataclass(frozen=True)
class Measured:
    """What the benchmark runs measured, and where it comes from."""

    source: str  # the marginal-tail run's file name
    latency: str  # its TLM latency
    commit: str
    s_per_trace: float  # marginal wall s/trace at TLM's real latency
    small: int  # the windows the marginal is taken between
    big: int
    repeats: int
    concurrency: int  # TLM calls in flight during that run (peak)
    lf_per_1k: float  # Langfuse requests per 1k traces, at the window below
    lf_window: int
    cpu_source: str | None = None  # the marginal-50ms run's file name
    cpu_s_per_trace: float = 0.0  # marginal wall s/trace when TLM is not the limit
    # each window run's fixed part (not in the table's formulas; shown beside it)
    fixed_s: float = 0.0
    fixed_requests: float = 0.0


@dataclass(frozen=True)
class Assumptions:
    traces_per_day: tuple[int, ...] = (1_000, 10_000, 100_000, 1_000_000)
    concurrency: int = 512  # TLM calls in flight per worker (one run: the client's cap, 512)
    lf_per_minute: float = PLAN_PER_MINUTE["hobby"]
    deadline_h: float = 1.0  # one day's traces scored within this long
    backfill_days: int = 183  # 6 months


@dataclass(frozen=True)
class Row:
    traces: int
    tlm_s: float  # TLM-bound seconds for the day's traces, one worker
    lf_requests: float
    lf_minutes: float
    workers: int
    day_in_deadline: bool  # the Langfuse budget lets one day finish within the deadline
    backfill_h: float
    bound: str  # "TLM" or "Langfuse": which one the backfill waits on


# --- the formulas ----------------------------------------------------------------------------


def s_per_trace(measured_s: float, measured_c: int, c: int, cpu_floor_s: float = 0.0) -> float:
    """s/trace = max(measured s/trace × measured in flight / in flight, CPU floor s/trace)."""
    return max(measured_s * measured_c / c, cpu_floor_s)


def useful_concurrency(m: Measured) -> float:
    """In flight beyond which the CPU floor wins = measured s/trace × measured in flight / CPU
    floor s/trace."""
    return m.s_per_trace * m.concurrency / m.cpu_s_per_trace if m.cpu_s_per_trace else math.inf


def tlm_seconds(traces: int, s_trace: float) -> float:
    """TLM-bound s per day, one worker = traces/day × s/trace."""
    return traces * s_trace


def langfuse_requests(traces: int, per_1k: float) -> float:
    """Langfuse requests/day = requests per 1k traces × traces/day / 1000."""
    return per_1k * traces / 1000


def langfuse_minutes(requests: float, per_minute: float) -> float:
    """Minimum Langfuse minutes/day = requests/day / the plan's requests per minute."""
    return requests / per_minute


def workers_for(tlm_s: float, deadline_s: float) -> int:
    """Workers = ceil(TLM-bound s per day / deadline s), at least 1."""
    return max(1, math.ceil(tlm_s / deadline_s - 1e-9))


def backfill_hours(days: int, tlm_s: float, workers: int, lf_minutes: float) -> tuple[float, str]:
    """Backfill h = max(days × TLM s/day / workers, days × Langfuse min/day × 60) / 3600, and
    which of the two it is.

    The workers share TLM's work; the Langfuse budget is one per organization, whatever the
    number of workers."""
    tlm_h = days * tlm_s / workers / 3600
    lf_h = days * lf_minutes / 60
    return (lf_h, "Langfuse") if lf_h > tlm_h else (tlm_h, "TLM")


def rows(m: Measured, a: Assumptions) -> list[Row]:
    s_trace = s_per_trace(m.s_per_trace, m.concurrency, a.concurrency, m.cpu_s_per_trace)
    out = []
    for n in a.traces_per_day:
        tlm_s = tlm_seconds(n, s_trace)
        req = langfuse_requests(n, m.lf_per_1k)
        minutes = langfuse_minutes(req, a.lf_per_minute)
        workers = workers_for(tlm_s, a.deadline_h * 3600)
        hours, bound = backfill_hours(a.backfill_days, tlm_s, workers, minutes)
        out.append(Row(n, tlm_s, req, minutes, workers, minutes <= a.deadline_h * 60, hours, bound))
    return out


FORMULAS = (s_per_trace, tlm_seconds, langfuse_requests, langfuse_minutes, workers_for,
            backfill_hours)  # fmt: skip

# --- the measured figures, from a run's JSON -------------------------------------------------


def _ok(result: dict[str, Any], contender: str) -> list[dict[str, Any]]:
    return [
        r
        for r in result["runs"]
        if r["contender"] == contender
        and not r.get("rate_limit")
        and not r.get("error")
        and r.get("work_s") is not None
    ]


def marginal_s_per_trace(result: dict[str, Any], contender: str = CONTENDER) -> dict[str, Any]:
    """The benchmark report's own marginal (medians of the repeats), in seconds per trace."""
    for m in report.marginal(_ok(result, contender)):
        return m | {"s_per_trace": m["ms_per_trace"] / 1000}
    raise ValueError(f"no marginal for {contender!r}: it needs two window sizes")


def intercept(small: int, y_small: float, big: int, y_big: float) -> float:
    """Fixed part per run = y(small) − small × (y(big) − y(small)) / (big − small)."""
    return y_small - small * (y_big - y_small) / (big - small)


def langfuse_totals(result: dict[str, Any], contender: str = CONTENDER) -> dict[int, float]:
    """Langfuse requests per window size (the highest of the repeats)."""
    out: dict[int, float] = {}
    for r in _ok(result, contender):
        out[r["size"]] = max(out.get(r["size"], 0.0), float(r["langfuse"]["total"]))
    return out


def peak_in_flight(result: dict[str, Any], contender: str = CONTENDER) -> int:
    """The most TLM calls in flight any of the contender's runs reached."""
    peaks = [(r.get("tlm_in_flight") or {}).get("peak") for r in _ok(result, contender)]
    known = [int(p) for p in peaks if p]
    if not known:
        raise ValueError(f"no TLM in-flight figures for {contender!r} in this run")
    return max(known)


def langfuse_per_1k(result: dict[str, Any], contender: str = CONTENDER) -> tuple[float, int]:
    """(requests per 1k traces, window) at the contender's largest window; the highest of its
    repeats."""
    runs = _ok(result, contender)
    if not runs:
        raise ValueError(f"no runs for {contender!r}")
    big = max(r["size"] for r in runs)
    return max(float(r["langfuse"]["per_1k"]) for r in runs if r["size"] == big), big


def newest_run(results: Path, scenario: str) -> Path:
    """The newest full run of a scenario (by its start time), without a TLM ceiling."""
    found: list[tuple[str, Path]] = []
    for path in results.glob("run-*.json"):
        meta = json.loads(path.read_text(encoding="utf-8"))["meta"]
        full = not meta.get("quick") and not meta.get("tlm_ceiling")
        if meta.get("scenario") == scenario and full:
            found.append((meta["started"], path))
    if not found:
        raise FileNotFoundError(f"no {scenario} run in {results}")
    return max(found)[1]


def measure(
    tail: dict[str, Any],
    tail_name: str,
    fast: dict[str, Any] | None = None,
    fast_name: str | None = None,
) -> Measured:
    m = marginal_s_per_trace(tail)
    per_1k, window = langfuse_per_1k(tail)
    small, big = m["small"], m["big"]
    lf = langfuse_totals(tail)
    meta = tail["meta"]
    return Measured(
        source=tail_name,
        latency=report.latency_text(meta),
        commit=str(meta.get("git_commit") or "?"),
        s_per_trace=m["s_per_trace"],
        small=m["small"],
        big=m["big"],
        repeats=min(len(w) for w in m["walls"].values()),
        concurrency=peak_in_flight(tail),
        lf_per_1k=per_1k,
        lf_window=window,
        cpu_source=fast_name if fast is not None else None,
        cpu_s_per_trace=marginal_s_per_trace(fast)["s_per_trace"] if fast is not None else 0.0,
        fixed_s=intercept(small, m["wall_small_s"], big, m["wall_big_s"]),
        fixed_requests=intercept(small, lf[small], big, lf[big]),
    )


def load(results: Path = RESULTS) -> Measured:
    tail = newest_run(results, TAIL_SCENARIO)
    try:
        fast: Path | None = newest_run(results, FAST_SCENARIO)
    except FileNotFoundError:
        fast = None
    return measure(
        json.loads(tail.read_text(encoding="utf-8")),
        tail.name,
        json.loads(fast.read_text(encoding="utf-8")) if fast else None,
        fast.name if fast else None,
    )


# --- the table -------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _about(x: float) -> str:
    """Two significant digits: 9,888 → "9,900"."""
    return f"{round(x, 2 - len(str(int(abs(x))))):,.0f}" if math.isfinite(x) else "∞"


def _hours(h: float) -> str:
    return f"{h:g} h" if h == int(h) else f"{h * 60:g} min"


def formulas() -> list[str]:
    """The formulas, from the docstrings of the functions that compute them."""
    return [" ".join((f.__doc__ or "").split("\n\n")[0].split()) for f in FORMULAS]


def render(m: Measured, a: Assumptions) -> str:
    """The generated block: where the figures come from, the formulas, the assumptions and
    the table."""
    plan = next((k.title() for k, v in PLAN_PER_MINUTE.items() if v == a.lf_per_minute), "")
    deadline = _hours(a.deadline_h)
    lines = [
        f"Measured, our flow, `benchmarks/results/{m.source}` (TLM latency {m.latency}; "
        f"commit {m.commit}): **{m.s_per_trace * 1000:.2f} ms/trace** marginal "
        f"({m.small:,} → {m.big:,} traces, medians of {m.repeats} repeats) at "
        f"**{m.concurrency} TLM calls in flight**; **{m.lf_per_1k:.2f} Langfuse requests per 1k "
        f"traces** (the {m.lf_window:,}-trace window).",
    ]
    if m.cpu_source:
        lines[-1] += (
            f" CPU floor **{m.cpu_s_per_trace * 1000:.2f} ms/trace**: the marginal of "
            f"`benchmarks/results/{m.cpu_source}` (TLM at 50 ms, the 2 CPUs are the limit): "
            f"beyond ~{_about(useful_concurrency(m))} calls in flight per worker more buys nothing "
            "on such a machine."
        )
    lines += [
        "",
        f"Assumptions (flags): {a.concurrency} TLM calls in flight per worker · Langfuse "
        f"{a.lf_per_minute:g} requests/min{f' ({plan})' if plan else ''} · a day's traces "
        f"within {deadline} · backfill of {a.backfill_days} days.",
        "",
        *(f"- {f}" for f in formulas()),
        "",
        f"| traces/day | TLM time per day, 1 worker | Langfuse requests/day "
        f"| Langfuse time per day, at least | workers for a day in {deadline} "
        f"| Langfuse allows a day in {deadline} | backfill of {a.backfill_days} days "
        "| backfill bound by |",
        "|--:|--:|--:|--:|--:|---|--:|---|",
    ]
    for r in rows(m, a):
        lines.append(
            f"| {r.traces:,} | {duration(r.tlm_s)} | {r.lf_requests:,.0f} "
            f"| {duration(r.lf_minutes * 60)} | {r.workers} "
            f"| {'yes' if r.day_in_deadline else 'no'} | {r.backfill_h:,.1f} h | {r.bound} |"
        )
    if m.fixed_s or m.fixed_requests:
        lines += [
            "",
            f"Not in the table: each window run's fixed part, measured as the intercept of the "
            f"same runs, **{m.fixed_s:.0f} s** (mostly the slowest TLM item of the window) and "
            f"**{m.fixed_requests:.0f} Langfuse requests** (health, score configs, existing "
            "scores, child probes). It outweighs the marginal part below "
            f"~{_about(m.fixed_s / m.s_per_trace)} traces a day; a backfill pays it once per day, "
            "`max_concurrency` days overlapping.",
        ]
    return "\n".join(lines)


def block_of(doc: str) -> str:
    """The text between the sizing markers."""
    _, sep, rest = doc.partition(START)
    body, sep2, _ = rest.partition(END)
    if not sep or not sep2:
        raise ValueError(f"the doc lacks {START} … {END}")
    return body.strip("\n")


def with_block(doc: str, block: str) -> str:
    """The doc with the text between the sizing markers replaced by ``block``."""
    block_of(doc)  # both markers present
    head, _, rest = doc.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{block}\n{END}{tail}"


# --- main ------------------------------------------------------------------------------------


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(float(x)) for x in text.replace("_", "").split(",") if x.strip())


def parse(argv: Sequence[str] | None = None) -> tuple[Assumptions, Path, bool]:
    """(assumptions, results folder, --markdown) from the command line."""
    d = Assumptions()
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.sizing",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    arg = p.add_argument
    arg("--traces-per-day", type=_ints, default=d.traces_per_day, help="rows: 1000,10000,...")
    arg("--tlm-concurrency", type=int, default=d.concurrency, help="TLM calls in flight/worker")
    arg("--langfuse-per-minute", type=float, default=d.lf_per_minute, help="Hobby 30, Core 100")
    arg("--deadline-hours", type=float, default=d.deadline_h, help="a day's traces within")
    arg("--backfill-days", type=int, default=d.backfill_days, help="183: 6 months")
    arg("--results", type=Path, default=RESULTS, help="the benchmark results folder")
    arg("--markdown", action="store_true", help=f"also write the table into {DOC.name}")
    args = p.parse_args(argv)
    a = Assumptions(
        traces_per_day=args.traces_per_day,
        concurrency=args.tlm_concurrency,
        lf_per_minute=args.langfuse_per_minute,
        deadline_h=args.deadline_hours,
        backfill_days=args.backfill_days,
    )
    if a.concurrency < 1 or a.lf_per_minute <= 0 or a.deadline_h <= 0 or a.backfill_days < 0:
        p.error("--tlm-concurrency, --langfuse-per-minute, --deadline-hours must be > 0")
    if not a.traces_per_day or min(a.traces_per_day) < 0:
        p.error("--traces-per-day: one or more sizes, none negative")
    if args.markdown and (a != d or args.results != RESULTS):
        p.error(
            f"--markdown writes {DOC.name}'s table, which shows the default assumptions on the "
            "committed results (tests/unit/test_sizing.py checks it); drop the other flags"
        )
    return a, args.results, args.markdown


def main(argv: Sequence[str] | None = None) -> int:
    a, results, markdown = parse(argv)
    block = render(load(results), a)
    print(block)
    if markdown:
        DOC.write_text(with_block(DOC.read_text(encoding="utf-8"), block), encoding="utf-8")
        print(f"\nwritten into {DOC.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
