"""The benchmark harness: ``uv run python -m benchmarks.run [--sizes 1000,10000,100000] [--quick]``.

For every workload and contender: a FRESH Langfuse sandbox store seeded with the same traces
(:mod:`benchmarks.workload`), the TLM sandbox with a fixed per-item latency, and the contender in
a fresh child process (:mod:`benchmarks.contender_flow`, ``_seed``, ``_floor``). The sandboxes
live in this process: their memory is not the contender's. Figures come from the sandboxes'
request logs and stores (requests, scores landed) and from the child (timings, peak RSS).

Writes ``benchmarks/results/run-<UTC stamp>.json`` and ``.md``, and a PNG per scenario of TLM
requests in flight over time; a full run (not ``--quick``, no ``--scenario``) also replaces the
table in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from benchmarks import charts, report, workload
from sandbox.langfuse import LangfuseSandbox, LangfuseStore
from sandbox.prefect_home import fresh_home
from sandbox.tlm import Latency, TLMSandbox

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
README = Path(__file__).resolve().parent / "README.md"
README_BEGIN = "<!-- bench:begin -->"
README_END = "<!-- bench:end -->"
CONTENDERS = ("flow", "floor", "seed", "engine")
DEFAULT_CONTENDERS = ("flow", "floor", "seed")
CACHE = Path(tempfile.gettempdir()) / "langfuse-tlm-evals-bench"  # the children's .pyc files
HOBBY_PER_MINUTE = 30  # Langfuse Cloud Hobby tier, general API (PROTOCOLS.md)
_ENV_DROPPED = ("PREFECT_", "LANGFUSE_", "CLEANLAB_", "TRUST_EVAL_", "OTEL_")
_PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
# --scenario NAME: defaults for the options not given on the command line
SCENARIOS: dict[str, dict[str, Any]] = {
    "marginal-50ms": {
        "sizes": "2000,10000",
        "hobby": "",
        "contenders": "flow,engine,floor",
        "repeat": 3,
        "tlm_latency": 0.05,
    },
    "marginal-tail": {
        "sizes": "2000,10000",
        "hobby": "",
        "contenders": "flow,engine,floor",
        "repeat": 3,
        "tlm_latency": 2.0,
        "tlm_latency_p99": 15.0,
    },
    "chart-smoke": {
        "sizes": "1500",
        "hobby": "",
        "contenders": "flow,engine,floor",
        "repeat": 1,
        "tlm_latency": 0.3,
        "tlm_latency_p99": 3.0,
    },
    # the score write path per server: a 10k window on each Langfuse profile, run twice (the
    # second run on the same data, with a fresh Prefect home and so no ledger: what Langfuse
    # shows alone must make it pay nothing)
    "v416": {
        "sizes": "10000",
        "hobby": "",
        "contenders": "flow",
        "repeat": 3,
        "tlm_latency": 0.05,
        "langfuse_profile": "v4.16",
        "rerun": True,
    },
    # explain=low_trust at base: every trace scored without a logged explanation, ~20% below
    # the threshold explained (the sandbox's synthetic scores are uniform on [0.02, 0.98], so a
    # threshold of 0.212 puts a fifth of them below it); run again: 0 TLM calls of either kind
    "low-trust-10k": {
        "sizes": "10000",
        "hobby": "",
        "contenders": "flow",
        "repeat": 1,
        "tlm_latency": 0.2,
        "rerun": True,
        "price": 0.01,
        "flow_options": {
            "explain": "low_trust",
            "quality_preset": "base",
            "low_trust_threshold": 0.212,
            "untrustworthy_below": 0.1,
            "alert_low_trust_share": None,
        },
    },
    # the flow's own CPU per trace when TLM answers fast: flow vs floor, 5k -> 20k, 0.2 s/item
    "marginal-200ms": {
        "sizes": "5000,20000",
        "hobby": "",
        "contenders": "flow,floor",
        "repeat": 3,
        "repeat_max_size": 20000,
        "tlm_latency": 0.2,
    },
    "current": {
        "sizes": "10000",
        "hobby": "",
        "contenders": "flow",
        "repeat": 3,
        "tlm_latency": 0.05,
        "langfuse_profile": "current",
        "rerun": True,
    },
}


@dataclass(frozen=True, slots=True)
class Scenario:
    size: int
    scale: float | None = None  # None: no rate limit; else Hobby limit with time ×1/scale

    @property
    def rate_limit(self) -> dict[str, Any] | None:
        if self.scale is None:
            return None
        return {"limit": HOBBY_PER_MINUTE, "window_s": 60.0 / self.scale, "scale": self.scale}


def parse_sizes(text: str) -> list[int]:
    return [int(s.replace("_", "")) for s in text.split(",") if s.strip()]


def parse_hobby(text: str) -> list[Scenario]:
    """``"1000@1,10000@10"``: 1,000 traces at real time, 10,000 with time scaled ×1/10."""
    out = []
    for item in text.split(","):
        if item.strip():
            size, _, scale = item.partition("@")
            out.append(Scenario(int(size.replace("_", "")), float(scale or 1)))
    return out


def child_env_base() -> dict[str, str]:
    """This environment minus anything that could point a contender elsewhere."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(_ENV_DROPPED) and k not in _PROXIES
    }
    # Bytecode caches, kept out of the tree and the venv: without them every fresh interpreter
    # recompiles Prefect from source (tens of seconds on a small machine). Start-up only:
    # the timed part of a contender starts after its imports.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(
        {
            "PYTHONPYCACHEPREFIX": str(CACHE / "pycache"),
            "NO_PROXY": "127.0.0.1,localhost",
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
            "DO_NOT_TRACK": "1",
        }
    )
    return env


def child_env(
    lf: LangfuseSandbox, tlm: TLMSandbox, prefect_home: Path, price: float | None = None
) -> dict[str, str]:
    env = child_env_base()
    if price is not None:
        env["TRUST_EVAL_PRICE_PER_1K_TOKENS"] = str(price)
    env.update(lf.env() | tlm.env())
    env.update(
        {
            "PREFECT_HOME": str(prefect_home),
            # the home holds a migrated database (sandbox.prefect_home)
            "PREFECT_SERVER_DATABASE_MIGRATE_ON_START": "false",
            "TRUST_EVAL_SETTLE_LAG_S": "0",  # the window is long past anyway
        }
    )
    return env


def _wait(proc: subprocess.Popen[bytes], timeout_s: float) -> tuple[int, float, float]:
    """Reap the child: (exit code, peak RSS MB, CPU s), both including reaped descendants."""
    timer = threading.Timer(timeout_s, lambda: _kill(proc.pid))
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def run_one(
    contender: str,
    scenario: Scenario,
    tlm: TLMSandbox,
    *,
    latency: Latency,
    ceiling: tuple[int, int] | None,
    timeout_s: float,
    log_dir: Path,
    profile_dir: Path | None = None,
    langfuse_profile: str = "current",
    rerun: bool = False,
    flow_options: dict[str, Any] | None = None,
    price: float | None = None,
) -> dict[str, Any]:
    size = scenario.size
    print(f"  {contender:<5} {size:>7,} traces: seeding…", end="", flush=True)
    store = LangfuseStore(profile=langfuse_profile)
    intended = workload.seed_store(store, size)
    work = Path(tempfile.mkdtemp(prefix=f"bench-{contender}-"))
    result: dict[str, Any] = {
        "contender": contender,
        "size": size,
        "rate_limit": scenario.rate_limit,
        "langfuse_profile": langfuse_profile,
    }
    try:
        with LangfuseSandbox(store=store, profile=langfuse_profile) as lf:
            result["langfuse_profile"] = lf.store.profile  # as the server runs it
            rl = scenario.rate_limit
            if rl is not None:
                lf.set_rate_limit(per_minute=rl["limit"], window_s=rl["window_s"])
            tlm.reset()
            tlm.set_latency(latency)
            if ceiling is not None:
                tlm.set_ceiling(ceiling[0], status=ceiling[1])
            spec = work / "spec.json"
            out = work / "out.json"
            spec.write_text(
                json.dumps(
                    {
                        "window_start": workload.WINDOW_START.isoformat(),
                        "window_end": workload.WINDOW_END.isoformat(),
                        "tag": workload.TAG,
                        "score_name": workload.SCORE_NAME,
                        "system_prompt_key": "system_prompt",
                        "options": flow_options or {},
                    }
                )
            )
            home = work / "prefect-home"
            if contender == "flow":
                fresh_home(home)
            log_path = log_dir / f"{contender}-{size}{'-hobby' if rl else ''}-{work.name[-8:]}.log"
            print(" running…", end="", flush=True)
            result["load_1m_before"] = round(os.getloadavg()[0], 2)
            own0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.perf_counter()
            with log_path.open("wb") as log:
                cmd = [
                    sys.executable,
                    "-m",
                    f"benchmarks.contender_{contender}",
                    str(spec),
                    str(out),
                ]
                if profile_dir is not None:  # needs pyinstrument: uv run --with pyinstrument …
                    prof = profile_dir / f"{log_path.stem}.txt"
                    cmd[1:1] = ["-m", "pyinstrument", "-r", "text", "--show-all", "-o", str(prof)]
                proc = subprocess.Popen(
                    cmd,
                    cwd=ROOT,
                    env=child_env(lf, tlm, home, price),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: a timeout kills it all
                )
                code, tree_rss, tree_cpu = _wait(proc, timeout_s)
            result["process_s"] = round(time.perf_counter() - t0, 3)
            own1 = resource.getrusage(resource.RUSAGE_SELF)
            # the harness's CPU while the child ran: mostly the two sandbox servers' work
            result["sandbox_cpu_s"] = round(
                own1.ru_utime - own0.ru_utime + own1.ru_stime - own0.ru_stime, 3
            )
            result["process_cpu_s"] = round(tree_cpu, 3)
            result["load_1m_after"] = round(os.getloadavg()[0], 2)
            result["exit_code"] = code
            result["peak_rss_tree_mb"] = round(tree_rss, 1)
            figures: dict[str, Any] = {}
            if out.exists():
                figures = json.loads(out.read_text())
            else:
                figures["error"] = f"no result (exit code {code}); see {log_path.name}"
            result.update({k: v for k, v in figures.items() if k not in ("pid", "traceback")})
            if figures.get("traceback"):
                result["traceback_tail"] = figures["traceback"][-1500:]
            reqs = list(lf.faults.requests)
            by_endpoint = Counter(r.endpoint for r in reqs)
            result["langfuse"] = {
                "total": len(reqs),
                "per_1k": round(len(reqs) * 1000 / size, 3),
                "by_endpoint": dict(sorted(by_endpoint.items())),
                "status_429": sum(1 for r in reqs if r.status == 429),
                "errors": sum(1 for r in reqs if r.status >= 400 and r.status != 429),
                "bytes_sent": sum(r.body_bytes for r in reqs),
            }
            result["tlm_requests"] = tlm.faults.count("tlm.score")
            result["tlm"] = tlm_calls(tlm, store, intended, flow_options or {})
            spans = tlm.spans()
            result["tlm_refused"] = sum(1 for sp in spans if sp.status in (429, 503))
            result["tlm_in_flight"] = charts.series(spans)
            result["scores"] = landed_scores(store, intended)
            if rerun:
                print(" again…", end="", flush=True)
                result["rerun"] = run_again(
                    contender, store, intended, lf, tlm, work, spec, log_dir,
                    timeout_s, price,
                )  # fmt: skip
            runs = result.get("prefect_task_runs")
            result["prefect_task_runs_per_1k"] = (
                round(runs * 1000 / size, 3) if isinstance(runs, int) else None
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
        del store
        tlm.reset()
        gc.collect()
    s = result["scores"]
    print(
        f" {result.get('work_s') or float('nan'):7.1f} s, {result['langfuse']['total']:,} LF req, "
        f"{result.get('peak_rss_mb') or 0:.0f} MB, landed {s['landed']:,}/{s['intended']:,}"
        + (f"  ERROR {result['error']}" if result.get("error") else ""),
        flush=True,
    )
    return result


def tlm_calls(
    tlm: TLMSandbox, store: LangfuseStore, intended: set[str], options: dict[str, Any]
) -> dict[str, Any]:
    """The TLM calls of a run by kind: scoring calls (their presets, how many asked for a
    logged explanation), explanation calls, and the scores below the threshold that carry an
    explanation as their comment."""
    scored = tlm.records("tlm.score")
    threshold = float(options.get("low_trust_threshold", 0.5))
    below = [
        s
        for s in store.all_scores()
        if s.trace_id in intended and isinstance(s.value, float) and s.value < threshold
    ]
    explained = [s for s in below if s.comment and not s.comment.startswith("not explained")]
    return {
        "score_calls": len(scored),
        "score_presets": dict(Counter(r.preset or "?" for r in scored)),
        "score_calls_logging_explanation": sum("explanation" in r.log for r in scored),
        "explain_calls": tlm.faults.count("tlm.explain"),
        "scores_below_threshold": len(below),
        "below_with_explanation": len(explained),
    }


def landed_scores(store: LangfuseStore, intended: set[str]) -> dict[str, int]:
    """The window's scores in the store: landed, duplicated, and how many carry their trace's
    start time as their timestamp (what makes the window's time range find them)."""
    scores = [s for s in store.all_scores() if s.name == workload.SCORE_NAME]
    traced = {s.trace_id for s in scores}
    starts = {o.trace_id: o.start_ms for o in store.all_observations() if o.is_root}
    return {
        "intended": len(intended),
        "rows": len(scores),
        "landed": len(traced & intended),
        "stray": len(traced - intended),
        "duplicates": len(scores) - len(traced),
        "at_trace_start": sum(1 for s in scores if s.timestamp_ms == starts.get(s.trace_id or "")),
    }


def run_again(
    contender: str,
    store: LangfuseStore,
    intended: set[str],
    lf: LangfuseSandbox,
    tlm: TLMSandbox,
    work: Path,
    spec: Path,
    log_dir: Path,
    timeout_s: float,
    price: float | None = None,
) -> dict[str, Any]:
    """The same window again on the same Langfuse data, from a fresh Prefect home (no score
    ledger: only what Langfuse shows keeps TLM from being paid again)."""
    home = work / "prefect-home-again"
    if contender == "flow":
        fresh_home(home)
    lf.faults.reset_log()
    paid = tlm.faults.count("tlm.score")
    explained = tlm.faults.count("tlm.explain")
    out = work / "out-again.json"
    log_path = log_dir / f"{contender}-again-{work.name[-8:]}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", f"benchmarks.contender_{contender}", str(spec), str(out)],
            cwd=ROOT,
            env=child_env(lf, tlm, home, price),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        code, _, _ = _wait(proc, timeout_s)
    figures = json.loads(out.read_text()) if out.exists() else {}
    reqs = list(lf.faults.requests)
    return {
        "exit_code": code,
        "error": figures.get("error") or (None if out.exists() else f"no result ({code})"),
        "work_s": figures.get("work_s"),
        "report_counts": figures.get("report_counts"),
        "tlm_requests": tlm.faults.count("tlm.score") - paid,
        "tlm_explain_requests": tlm.faults.count("tlm.explain") - explained,
        "langfuse": {
            "total": len(reqs),
            "by_endpoint": dict(sorted(Counter(r.endpoint for r in reqs).items())),
        },
        "scores": landed_scores(store, intended),
    }


def git_state() -> tuple[str | None, bool]:
    """The short commit, and whether the product code differs from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--", "flows", "tasks", "sandbox"],
                cwd=ROOT,
                capture_output=True,
                text=True,
            ).stdout.strip()
        )
        return commit or None, dirty
    except OSError:
        return None, False


def update_readme(table: str, path: Path = README) -> None:
    if not path.exists():
        return
    text = path.read_text()
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        return
    path.write_text(text[: start + len(README_BEGIN)] + "\n" + table + text[end:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--sizes", help="window sizes (default 1000,10000,100000; quick: 200)")
    parser.add_argument(
        "--hobby",
        help="Hobby-tier runs as SIZE@SCALE, comma separated: 30 requests per 60/SCALE s "
        "(default 1000@1,10000@10; quick: none; '' for none)",
    )
    parser.add_argument(
        "--scenario",
        choices=sorted(SCENARIOS),
        help="preset defaults: marginal-50ms / marginal-tail (flow vs floor at 2k and 10k, "
        "3 repeats, 50 ms or log-normal mean 2 s p99 15 s), "
        "chart-smoke (1,500 traces, mean 0.3 s p99 3 s)",
    )
    parser.add_argument(
        "--contenders",
        help=f"of {','.join(CONTENDERS)} (default {','.join(DEFAULT_CONTENDERS)})",
    )
    parser.add_argument(
        "--seed-max",
        type=int,
        default=10_000,
        help="largest window the seed's approach runs on (default 10000: at 100k it is slow)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        help="repetitions (interleaved) of each unlimited scenario up to --repeat-max-size "
        "traces; the table keeps the fastest (default 2; quick: 1)",
    )
    parser.add_argument("--repeat-max-size", type=int)
    parser.add_argument(
        "--tlm-latency",
        type=float,
        help="s per TLM item (default 0.05); the mean with --tlm-latency-p99",
    )
    parser.add_argument(
        "--tlm-latency-p99", type=float, help="log-normal per-item latency with this p99 (s)"
    )
    parser.add_argument("--tlm-seed", type=int, default=0, help="seed of the latency draws")
    parser.add_argument(
        "--tlm-ceiling",
        type=int,
        help="TLM sandbox answers --tlm-ceiling-status above this many requests in flight",
    )
    parser.add_argument("--tlm-ceiling-status", type=int, choices=(429, 503), default=429)
    parser.add_argument(
        "--langfuse-profile",
        choices=("current", "v4.16"),
        help="the Langfuse sandbox's server profile (default current)",
    )
    parser.add_argument(
        "--rerun",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run each contender a second time on the same data, from a fresh Prefect home",
    )
    parser.add_argument(
        "--charts",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write a PNG per scenario of TLM requests in flight (default on)",
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="s per contender run")
    parser.add_argument(
        "--flow-options", type=json.loads, help="the flow's options as JSON, e.g. "
        '\'{"explain": "low_trust", "quality_preset": "base"}\''
    )  # fmt: skip
    parser.add_argument("--price", type=float, help="TRUST_EVAL_PRICE_PER_1K_TOKENS of the flow")
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run (200 traces)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="profile each contender with pyinstrument into DIR "
        "(uv run --with pyinstrument python -m benchmarks.run --profile DIR …)",
    )
    parser.add_argument(
        "--readme",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="replace the table in benchmarks/README.md (default: on for full runs)",
    )
    args = parser.parse_args(argv)
    for name, value in SCENARIOS.get(args.scenario or "", {}).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.contenders = args.contenders or ",".join(DEFAULT_CONTENDERS)
    args.repeat = 2 if args.repeat is None else args.repeat
    args.tlm_latency = 0.05 if args.tlm_latency is None else args.tlm_latency
    args.langfuse_profile = args.langfuse_profile or "current"
    args.rerun = bool(args.rerun)
    args.repeat_max_size = args.repeat_max_size or 10_000
    latency = (
        Latency.lognormal(args.tlm_latency, args.tlm_latency_p99, args.tlm_seed)
        if args.tlm_latency_p99 is not None
        else Latency.fixed(args.tlm_latency)
    )
    ceiling = (args.tlm_ceiling, args.tlm_ceiling_status) if args.tlm_ceiling else None

    sizes = parse_sizes(args.sizes or ("200" if args.quick else "1000,10000,100000"))
    hobby_text = args.hobby if args.hobby is not None else ("" if args.quick else "1000@1,10000@10")
    contenders = [c for c in args.contenders.split(",") if c]
    unknown = set(contenders) - set(CONTENDERS)
    if unknown:
        parser.error(f"unknown contenders {sorted(unknown)}")
    scenarios = [Scenario(n) for n in sizes] + parse_hobby(hobby_text)
    write_readme = args.readme if args.readme is not None else not (args.quick or args.scenario)
    repeat = 1 if args.quick else max(args.repeat, 1)

    started = datetime.now(UTC)
    stamp = (
        started.strftime("%Y%m%dT%H%M%SZ")
        + ("-quick" if args.quick else "")
        + (f"-{args.scenario}" if args.scenario else "")
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    log_dir = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    commit, dirty = git_state()
    meta: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "argv": sys.argv[1:] if argv is None else argv,
        "quick": args.quick,
        "scenario": args.scenario,
        "tlm_latency_s": args.tlm_latency,
        "tlm_latency": latency.describe(),
        "tlm_ceiling": {"max_in_flight": ceiling[0], "status": ceiling[1]} if ceiling else None,
        "langfuse_profile": args.langfuse_profile,
        "rerun": args.rerun,
        "flow_options": args.flow_options,
        "price_per_1k_tokens": args.price,
        "repeat": repeat,
        "seed_max": args.seed_max,
        "cpus": os.cpu_count(),
        "load_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {
            p: version(p) for p in ("prefect", "langfuse", "cleanlab-tlm", "langfuse-tlm-evals")
        },
        "git_commit": commit,
        "git_dirty": dirty,
        "workload": {
            "shape": "@observe root span, system prompt in trace metadata, no generations",
            "question_chars": workload.QUESTION_CHARS,
            "answer_chars": workload.ANSWER_CHARS,
            "noise_share": workload.NOISE_SHARE,
        },
        "skipped": [],
        "logs": str(log_dir),
    }
    runs: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with TLMSandbox() as tlm:
        for sc in scenarios:
            label = "no rate limit" if sc.scale is None else f"Hobby limit, time ×1/{sc.scale:g}"
            print(f"{sc.size:,} traces, {label}", flush=True)
            reps = repeat if sc.scale is None and sc.size <= args.repeat_max_size else 1
            for rep in range(reps):
                for contender in contenders:
                    if contender == "seed" and sc.size > args.seed_max:
                        if rep == 0:
                            meta["skipped"].append(
                                f"seed's approach at {sc.size:,} traces "
                                f"(--seed-max {args.seed_max:,})"
                            )
                        continue
                    run = run_one(
                        contender,
                        sc,
                        tlm,
                        latency=latency,
                        ceiling=ceiling,
                        timeout_s=args.timeout,
                        log_dir=log_dir,
                        profile_dir=args.profile,
                        langfuse_profile=args.langfuse_profile,
                        rerun=args.rerun,
                        flow_options=args.flow_options if contender == "flow" else None,
                        price=args.price,
                    )
                    runs.append(run | {"rep": rep})
    meta["duration_s"] = round(time.perf_counter() - t0, 1)
    if args.charts:
        pngs = charts.write_charts(runs, args.out_dir, stamp, report.latency_text(meta))
        meta["charts"] = [p.name for p in pngs]
    result = {"meta": meta, "runs": runs, "targets": report.evaluate_targets(runs)}
    table = report.markdown(result)
    json_path = args.out_dir / f"run-{stamp}.json"
    json_path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    (args.out_dir / f"run-{stamp}.md").write_text(f"# Benchmark run {stamp}\n\n{table}")
    if write_readme:
        update_readme(table)
    print("\n" + table)
    print(f"results: {json_path}  (child logs: {log_dir})")
    for name in meta.get("charts", []):
        print(f"chart: {args.out_dir / name}")
    return 0 if all(r.get("scores") for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
