"""Smoke test of the benchmark harness: a tiny window, our flow and the floor.

Checks the result file's structure and that every intended score landed exactly once; never
timings (those are compared within one benchmark run, not asserted in tests).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SIZE = 200

pytestmark = pytest.mark.timeout(240)


def test_quick_run_writes_results_and_lands_every_score(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--quick",
            "--sizes",
            str(SIZE),
            "--contenders",
            "flow,floor",
            "--out-dir",
            str(tmp_path),
            "--no-readme",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=230,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    [json_path] = tmp_path.glob("run-*-quick.json")
    [md_path] = tmp_path.glob("run-*-quick.md")
    result = json.loads(json_path.read_text())
    assert set(result) == {"meta", "runs", "targets"}
    assert result["meta"]["quick"] is True
    assert {r["contender"] for r in result["runs"]} == {"flow", "floor"}
    for run in result["runs"]:
        assert run["size"] == SIZE
        assert run["rate_limit"] is None
        assert run.get("error") is None, run.get("traceback_tail")
        counts = {k: v for k, v in run["scores"].items() if k != "at_trace_start"}
        assert counts == {
            "intended": SIZE,
            "rows": SIZE,
            "landed": SIZE,
            "stray": 0,
            "duplicates": 0,
        }
        assert run["langfuse"]["total"] >= 2  # at least one page read, one score POST
        assert run["langfuse"]["by_endpoint"]["scores.create"] >= 1
        assert run["langfuse"]["status_429"] == 0
        assert run["tlm_requests"] >= SIZE
        assert isinstance(run["work_s"], float) and run["work_s"] > 0
        assert run["peak_rss_mb"] > 0
        assert run["tlm_in_flight"]["peak"] >= 4  # the client's first window
        assert len(run["tlm_in_flight"]["t"]) == len(run["tlm_in_flight"]["n"])
        assert run["tlm_refused"] == 0
    [png] = tmp_path.glob("inflight-*.png")
    assert result["meta"]["charts"] == [png.name]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    [flow] = [r for r in result["runs"] if r["contender"] == "flow"]
    assert flow["fetched"] == SIZE
    assert flow["scored"] == SIZE
    assert flow["prefect_task_runs"] >= 4  # at least fetch, pair, score, upload
    assert flow["prefect_task_runs_per_1k"] == pytest.approx(flow["prefect_task_runs"] * 5)
    table = md_path.read_text()
    assert "| our flow |" in table and "| floor |" in table
