"""The sizing arithmetic (benchmarks/sizing.py) on hand-built figures, and docs/SCALING.md's
table against what the script computes from the committed benchmark results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import sizing
from benchmarks.sizing import Assumptions, Measured


def _measured(**over: Any) -> Measured:
    fields: dict[str, Any] = {
        "source": "run-x.json",
        "latency": "fixed 2 s",
        "commit": "abc1234",
        "s_per_trace": 0.004,
        "small": 2_000,
        "big": 10_000,
        "repeats": 3,
        "concurrency": 512,
        "lf_per_1k": 2.5,
        "lf_window": 10_000,
    }
    fields.update(over)
    return Measured(**fields)


def test_seconds_per_trace_scale_with_concurrency_down_to_the_cpu_floor() -> None:
    assert sizing.s_per_trace(0.004, 512, 512) == 0.004
    assert sizing.s_per_trace(0.004, 512, 1024) == 0.002
    assert sizing.s_per_trace(0.004, 512, 256) == 0.008
    assert sizing.s_per_trace(0.004, 512, 2048, cpu_floor_s=0.0025) == 0.0025
    assert sizing.useful_concurrency(_measured(cpu_s_per_trace=0.002)) == 1024


def test_tlm_time_and_langfuse_requests_per_day() -> None:
    assert sizing.tlm_seconds(1_000_000, 0.004) == 4000
    assert sizing.langfuse_requests(1_000_000, 2.5) == 2500
    assert sizing.langfuse_requests(1_000, 2.5) == 2.5
    assert sizing.langfuse_minutes(2500, 100) == 25
    assert sizing.langfuse_minutes(2400, 30) == 80


def test_workers_are_the_ceiling_of_tlm_time_over_the_deadline_and_at_least_one() -> None:
    assert sizing.workers_for(7200, 3600) == 2
    assert sizing.workers_for(7201, 3600) == 3
    assert sizing.workers_for(10, 3600) == 1
    assert sizing.workers_for(0, 3600) == 1


def test_backfill_is_bound_by_the_slower_of_tlm_and_the_langfuse_budget() -> None:
    # 183 days × 3600 s / 1 worker = 183 h of TLM; 183 × 10 min = 30.5 h of Langfuse
    assert sizing.backfill_hours(183, 3600, 1, 10) == (183, "TLM")
    # 183 × 3600 s / 2 workers = 91.5 h; 183 × 90 min = 274.5 h: more workers do not help
    assert sizing.backfill_hours(183, 3600, 2, 90) == (274.5, "Langfuse")


def test_rows_put_the_formulas_together() -> None:
    m = _measured(cpu_s_per_trace=0.001)
    a = Assumptions(traces_per_day=(1_000_000,), concurrency=1024, lf_per_minute=100)
    (row,) = sizing.rows(m, a)
    assert row.tlm_s == 2000  # 0.004 × 512 / 1024 = 0.002 s/trace
    assert row.lf_requests == 2500
    assert row.lf_minutes == 25
    assert row.workers == 1 and row.day_in_deadline
    # TLM 183 × 2000 s / 3600 = 101.67 h; Langfuse 183 × 25 min = 76.25 h
    assert row.backfill_h == pytest.approx(183 * 2000 / 3600) and row.bound == "TLM"
    (hobby,) = sizing.rows(m, Assumptions(traces_per_day=(1_000_000,)))  # 512, 30/min
    assert hobby.tlm_s == 4000 and hobby.workers == 2
    assert hobby.lf_minutes == pytest.approx(2500 / 30) and not hobby.day_in_deadline
    assert hobby.bound == "Langfuse" and hobby.backfill_h == pytest.approx(183 * 2500 / 30 / 60)


def _run(size: int, work_s: float, total: int, peak: int = 512, **over: Any) -> dict[str, Any]:
    run: dict[str, Any] = {
        "contender": "flow",
        "size": size,
        "rate_limit": None,
        "work_s": work_s,
        "langfuse": {"total": total, "per_1k": total / size * 1000},
        "tlm_in_flight": {"peak": peak},
    }
    run.update(over)
    return run


def _result(scenario: str, started: str, runs: list[dict[str, Any]], **meta: Any) -> dict[str, Any]:
    m: dict[str, Any] = {
        "scenario": scenario,
        "started": started,
        "tlm_latency": "fixed 2 s",
        "tlm_latency_s": 2.0,
        "git_commit": "abc1234",
    }
    m.update(meta)
    return {"meta": m, "runs": runs}


def test_measure_reads_marginal_peak_and_requests_from_a_run() -> None:
    runs = [_run(2_000, w, 10) for w in (70.0, 71.0, 90.0)] + [
        _run(10_000, w, 26, peak=500) for w in (118.0, 119.0, 200.0)
    ]
    runs += [
        _run(10_000, 1.0, 26, error="boom"),  # failed: not counted
        _run(10_000, 1.0, 99, contender="floor", peak=999),  # another contender
        _run(10_000, 1.0, 99, rate_limit={"limit": 30, "window_s": 60.0, "scale": 1.0}),
    ]
    fast = _result("marginal-50ms", "t", [_run(2_000, 5.0, 10), _run(10_000, 25.0, 26)])
    m = sizing.measure(_result("marginal-tail", "t", runs), "tail.json", fast, "fast.json")
    assert m.s_per_trace == pytest.approx((119.0 - 71.0) / 8_000)  # medians
    assert (m.small, m.big, m.repeats) == (2_000, 10_000, 3)
    assert m.concurrency == 512
    assert (m.lf_per_1k, m.lf_window) == (2.6, 10_000)
    assert m.cpu_s_per_trace == pytest.approx(20.0 / 8_000)
    assert (m.source, m.cpu_source, m.commit) == ("tail.json", "fast.json", "abc1234")
    # the fixed part per run: 71 s − 2,000 × 6 ms = 59 s; 10 − 2,000 × 16 / 8,000 = 6 requests
    assert m.fixed_s == pytest.approx(59.0) and m.fixed_requests == pytest.approx(6.0)
    assert sizing.intercept(2_000, 10.0, 10_000, 26.0) == 6.0


def test_the_newest_full_run_of_the_scenario_is_picked(tmp_path: Path) -> None:
    files = {
        "run-1.json": _result("marginal-tail", "2026-12-01T00:00:00+00:00", []),
        "run-2.json": _result("marginal-tail", "2026-12-03T00:00:00+00:00", []),
        "run-3.json": _result("marginal-tail", "2026-12-04T00:00:00+00:00", [], quick=True),
        "run-4.json": _result(
            "marginal-tail",
            "2026-12-05T00:00:00+00:00",
            [],
            tlm_ceiling={"max_in_flight": 64, "status": 429},
        ),
        "run-5.json": _result("marginal-50ms", "2026-12-06T00:00:00+00:00", []),
    }
    for name, content in files.items():
        (tmp_path / name).write_text(json.dumps(content))
    assert sizing.newest_run(tmp_path, "marginal-tail").name == "run-2.json"
    assert sizing.newest_run(tmp_path, "marginal-50ms").name == "run-5.json"
    with pytest.raises(FileNotFoundError):
        sizing.newest_run(tmp_path, "chart-smoke")


def test_durations_and_the_table() -> None:
    assert sizing.duration(6.0) == "6.0 s"
    assert sizing.duration(600.0) == "10.0 min"
    assert sizing.duration(7200.0) == "2.0 h"
    text = sizing.render(_measured(), Assumptions(traces_per_day=(1_000_000,)))
    assert "| 1,000,000 | 66.7 min | 2,500 | 83.3 min | 2 | no | 254.2 h | Langfuse |" in text
    assert "`benchmarks/results/run-x.json`" in text and "(Hobby)" in text
    for formula in sizing.formulas():
        assert f"- {formula}" in text
    # 0.004 s/trace × 512 / 0.0017 s/trace = 1,204.7 in flight; 59 s / 0.004 s = 14,750 traces
    text = sizing.render(
        _measured(cpu_source="f.json", cpu_s_per_trace=0.0017, fixed_s=59.0), Assumptions()
    )
    assert "beyond ~1,200 calls in flight" in text and "below ~15,000 traces a day" in text


def test_the_block_between_the_markers_is_replaced_and_nothing_else() -> None:
    doc = f"# T\n\nbefore\n{sizing.START}\nold\n{sizing.END}\nafter\n"
    new = sizing.with_block(doc, "new\ntable")
    assert new == f"# T\n\nbefore\n{sizing.START}\nnew\ntable\n{sizing.END}\nafter\n"
    assert sizing.block_of(new) == "new\ntable"
    with pytest.raises(ValueError):
        sizing.block_of("no markers")


def test_markdown_refuses_assumptions_other_than_the_docs() -> None:
    assert sizing.parse(["--markdown"]) == (Assumptions(), sizing.RESULTS, True)
    with pytest.raises(SystemExit):
        sizing.parse(["--markdown", "--backfill-days", "30"])
    with pytest.raises(SystemExit):
        sizing.parse(["--tlm-concurrency", "0"])


def test_the_scaling_doc_holds_the_table_of_the_committed_results() -> None:
    """docs/SCALING.md's table is generated: regenerate it with
    `uv run --locked python -m benchmarks.sizing --markdown` when the results change."""
    doc = sizing.DOC.read_text(encoding="utf-8")
    assert sizing.block_of(doc) == sizing.render(sizing.load(), Assumptions())
