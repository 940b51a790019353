"""What the shared TLM ceiling costs: ``uv run python -m benchmarks.tlm_ceiling [--repeat 3]``.

TLM engines (one per run) score the same items with and without a shared Prefect global
concurrency limit, against the TLM sandbox, on a persistent ``prefect server`` (as ``make
prefect`` runs it), all in this process. Two cases, each repeated (runs alternate):

- ``overhead``: one engine, a ceiling it never reaches (the client's own cap is 512): the cost
  of taking slots in leased blocks, as the ratio of wall times, shared over alone.
- ``binding``: two engines, a ceiling of 512 for both: calls at TLM at once, at most the
  ceiling with it and up to twice that without; the wall time is what the ceiling costs.

Writes ``benchmarks/results/tlm-ceiling-<UTC stamp>.json`` and ``.md`` (medians of the repeats).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect.settings import PREFECT_API_URL, temporary_settings
from pydantic import SecretStr

from benchmarks.run import git_state
from deployments import local
from sandbox.runner import free_port
from sandbox.tlm import Latency, TLMSandbox

RESULTS = Path(__file__).resolve().parent / "results"
LIMIT = "bench-tlm-in-flight"


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    engines: int
    items: int  # per engine
    ceiling: int
    mean_s: float
    p99_s: float | None  # None: a fixed latency


@dataclass(slots=True)
class Sample:
    case: str
    shared: bool
    repeat: int
    wall_s: float
    peak_in_flight: int
    scored: int
    slot_wait_s: float


@contextmanager
def prefect_server() -> Iterator[dict[str, str]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    with (
        tempfile.TemporaryDirectory(prefix="tlm-ceiling-") as tmp,
        local.running_server(Path(tmp), free_port(), base) as env,
    ):
        yield env


def run_case(tlm: TLMSandbox, case: Case, shared: bool, repeat: int) -> Sample:
    from tasks.config import TLMSettings
    from tasks.models import Pair
    from tasks.score import SharedLimit, TLMEngine

    tlm.reset()
    latency = (
        Latency.lognormal(case.mean_s, case.p99_s, seed=repeat)
        if case.p99_s
        else Latency.fixed(case.mean_s)
    )
    tlm.set_latency(latency)
    cfg = TLMSettings(api_key=SecretStr(tlm.api_key))
    limit = SharedLimit(LIMIT, block=16, lease_s=120) if shared else None
    t0 = datetime(2025, 6, 1, tzinfo=UTC)
    engines = [
        TLMEngine(cfg, quality_preset="medium", timeout_s=120, shared=limit)
        for _ in range(case.engines)
    ]
    try:
        started = time.perf_counter()
        futures = [
            e.submit(
                [
                    Pair(f"{n}-{i}", t0, "t", None, f"r{repeat} e{n} q{i}?", "An answer.", "b")
                    for i in range(case.items)
                ]
            )
            for n, e in enumerate(engines)
        ]
        results = [f.result() for f in futures]
        wall = time.perf_counter() - started
        waited = sum(e.slot_wait_s for e in engines)
    finally:
        for e in engines:
            e.close()
    return Sample(
        case.name, shared, repeat, round(wall, 2), tlm.peak_in_flight(),
        sum(len(r.scored) for r in results), round(waited, 2),
    )  # fmt: skip


def summarise(cases: list[Case], samples: list[Sample]) -> list[dict[str, Any]]:
    rows = []
    for case in cases:

        def of(shared: bool, case: Case = case) -> list[Sample]:
            return [s for s in samples if s.case == case.name and s.shared is shared]

        alone, shared = of(False), of(True)
        wall_alone = statistics.median(s.wall_s for s in alone)
        wall_shared = statistics.median(s.wall_s for s in shared)
        # each repeat has its own latency seed: the pair (alone, shared) of a repeat is alike
        paired = statistics.median(b.wall_s / a.wall_s for a, b in zip(alone, shared, strict=True))
        rows.append(
            {
                **asdict(case),
                "repeats": len(alone),
                "wall_alone_s": wall_alone,
                "wall_shared_s": wall_shared,
                "ratio_shared_over_alone": round(paired, 3),
                "peak_alone": max(s.peak_in_flight for s in alone),
                "peak_shared": max(s.peak_in_flight for s in shared),
                "all_scored": all(s.scored == case.engines * case.items for s in alone + shared),
            }
        )
    return rows


def markdown(rows: list[dict[str, Any]], stamp: str, commit: str) -> str:
    lines = [
        f"# TLM ceiling: {stamp} (commit {commit})",
        "",
        "Walls: medians of the repeats. shared / alone: the median over the repeats of each "
        "repeat's ratio (a repeat's two runs share its latency seed). Peaks: the largest of "
        "the repeats.",
        "",
        "| case | engines × items | ceiling | TLM latency | wall alone | wall shared | "
        "shared / alone | peak alone | peak shared | all scored |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lat = (
            f"log-normal mean {r['mean_s']} s, p99 {r['p99_s']} s"
            if r["p99_s"]
            else f"{r['mean_s'] * 1000:.0f} ms fixed"
        )
        lines.append(
            f"| {r['name']} | {r['engines']} × {r['items']} | {r['ceiling']} | {lat} | "
            f"{r['wall_alone_s']} s | {r['wall_shared_s']} s | {r['ratio_shared_over_alone']} | "
            f"{r['peak_alone']} | {r['peak_shared']} | {r['all_scored']} |"
        )
    return "\n".join(lines) + "\n"


def run_all(
    tlm: TLMSandbox, env: dict[str, str], cases: list[Case], repeat: int, samples: list[Sample]
) -> None:
    for case in cases:
        local.upsert_limit(env, LIMIT, case.ceiling, 0.0)
        for n in range(repeat):
            for shared in (False, True):  # alternate, so drift hits both alike
                sample = run_case(tlm, case, shared, n)
                print(sample, flush=True)
                samples.append(sample)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--items", type=int, default=3000, help="items per engine")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    cases = [
        Case("overhead", 1, args.items, 1024, 2.0, 15.0),
        Case("overhead-50ms", 1, args.items, 1024, 0.05, None),
        Case("binding", 2, args.items, 512, 2.0, 15.0),
    ]
    samples: list[Sample] = []
    with TLMSandbox() as tlm, prefect_server() as env:
        os.environ["CLEANLAB_API_BASE_URL"] = tlm.base_url  # read by cleanlab_tlm at import
        with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}):
            run_all(tlm, env, cases, args.repeat, samples)
    rows = summarise(cases, samples)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    commit, dirty = git_state()
    commit = f"{commit or '?'}{' (dirty)' if dirty else ''}"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"tlm-ceiling-{stamp}"
    out.with_suffix(".json").write_text(
        json.dumps({"commit": commit, "rows": rows, "samples": [asdict(s) for s in samples]},
                   indent=2) + "\n"
    )  # fmt: skip
    text = markdown(rows, stamp, commit)
    out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
