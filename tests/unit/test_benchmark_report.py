"""The benchmark report's arithmetic: targets and marginal time per trace."""

from __future__ import annotations

import pytest

from benchmarks import report


def _run(contender: str, size: int, **over: object) -> dict[str, object]:
    run: dict[str, object] = {
        "contender": contender,
        "size": size,
        "rate_limit": None,
        "work_s": 10.0,
        "peak_rss_mb": 300.0,
        "langfuse": {"per_1k": 2.0},
        "prefect_task_runs_per_1k": 4.0,
        "scores": {"landed": size, "intended": size},
    }
    run.update(over)
    return run


def test_targets_are_computed_against_the_same_run() -> None:
    hobby = {"limit": 30, "window_s": 60.0, "scale": 1.0}
    runs = [
        _run("flow", 10_000, work_s=12.0),
        _run("floor", 10_000, work_s=10.0),
        _run("flow", 100_000, peak_rss_mb=600.0),
        _run("flow", 1_000, rate_limit=hobby, work_s=3.0),
        _run("seed", 1_000, rate_limit=hobby, work_s=60.0, scores={"landed": 400, "intended": 999}),
        _run("flow", 200, langfuse={"per_1k": 20.0}),  # too small for per-1k targets
    ]
    met = {(t["target"].split(" ")[0], t["where"]): t["met"] for t in report.evaluate_targets(runs)}
    assert met[("wall", "10,000 traces")] is True  # 1.2x
    assert met[("peak", "100,000 vs 10,000 traces")] is False  # 2x
    assert met[("peak", "100,000 traces")] is False  # 600 MB
    assert met[("≥", "1,000 traces, Hobby 30/60 s (real time)")] is True  # 20x
    assert not any("200 traces" in where for _, where in met)
    failed = report.evaluate_targets([_run("flow", 1_000, error="boom")])
    assert [t["met"] for t in failed] == [None, None]


def test_marginal_time_per_trace_uses_medians_of_the_repeats() -> None:
    runs = [_run("flow", 2_000, work_s=w, peak_rss_mb=250.0 + w) for w in (10.0, 12.0, 30.0)] + [
        _run("flow", 10_000, work_s=w) for w in (50.0, 52.0, 51.0)
    ]
    runs += [_run("floor", 2_000, work_s=5.0), _run("floor", 10_000, work_s=37.0)]
    runs.append(_run("floor", 10_000, work_s=1.0, error="boom"))  # failed runs do not count
    rows = {m["contender"]: m for m in report.marginal(runs)}
    assert rows["flow"]["wall_small_s"] == 12.0 and rows["flow"]["wall_big_s"] == 51.0
    assert rows["flow"]["ms_per_trace"] == pytest.approx((51.0 - 12.0) / 8)
    assert rows["floor"]["ms_per_trace"] == pytest.approx(4.0)
    assert rows["flow"]["peak_rss_mb"] == {2_000: 280.0, 10_000: 300.0}
    text = "\n".join(report.marginal_markdown(list(rows.values())))
    assert "our flow over floor" in text and "+0.88 ms/trace" in text


def test_rerun_targets_hold_in_every_repetition() -> None:
    def rep(at_start: int, paid: int) -> dict[str, object]:
        return _run(
            "flow",
            1_000,
            langfuse_profile="v4.16",
            scores={"landed": 1_000, "intended": 1_000, "rows": 1_000, "duplicates": 0,
                    "at_trace_start": at_start},
            rerun={"tlm_requests": paid, "langfuse": {"total": 16}},
        )  # fmt: skip

    good = report.rerun_targets([rep(1_000, 0), rep(1_000, 0), rep(1_000, 0)])
    assert [t["met"] for t in good] == [True, True]
    assert good[0]["where"] == "1,000 traces, no limit, Langfuse v4.16, 3 runs"
    bad = report.rerun_targets([rep(1_000, 0), rep(999, 0), rep(1_000, 3)])
    assert [t["met"] for t in bad] == [False, False]  # one repetition is enough to miss
    assert "1,000, 999, 1,000 of 1,000" in bad[0]["measured"]
    lines = report.repeated_markdown([rep(1_000, 0), rep(1_000, 0), rep(1_000, 0)])
    assert any(
        line.startswith("| no limit, Langfuse v4.16 | 1,000 | our flow | 3 |") for line in lines
    )
