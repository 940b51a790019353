"""`make screenshots` (``python -m sandbox.screenshots``): the README's pictures of the Prefect UI,
made offline from real runs.

1. starts the sandbox Langfuse and TLM servers in this process (the TLM sandbox first: the
   cleanlab_tlm client reads its base URL once, at import);
2. traces past-dated trivia answers on the last ``--days`` UTC days through the real Langfuse
   SDK (:func:`sandbox.seed.seed_days`), tagged ``TLM_eval_pipeline``;
3. starts a real ``prefect server`` (temporary PREFECT_HOME, free port), the ``trust-evals``
   process pool, a worker and ``prefect deploy --all`` (:mod:`deployments.local`); the worker's
   flow runs inherit the sandboxes' LANGFUSE_* / CLEANLAB_* environment;
4. runs the ``window`` deployment over the last day, then the ``backfill`` deployment over all
   the days (the window's day shows as already scored: nothing is scored twice), both queueing
   their low-trust traces for review; one day carries extra answers TLM scores low, a jump in
   the low-trust share;
5. plays the reviewer in the sandbox (a simulated one: a verdict on every queued trace and on a
   few unflagged ones), then runs the ``review-loop`` deployment: the precision artifact and the
   trust trend;
6. has headless Chromium capture the UI at 1400x900 into docs/images/ (overwriting), once the
   page's DOM shows what the picture is meant to show;
7. stops everything it started, also when a step fails.

Needs ``chromium`` on PATH (Debian: ``apt-get install chromium``). The scores are SYNTHETIC.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from deployments import local
from sandbox.chromium import dump_dom, find_chromium, screenshot
from sandbox.langfuse import LangfuseSandbox
from sandbox.reviewer import play_reviewer
from sandbox.runner import free_port
from sandbox.seed import seed_days, trace_answer_at
from sandbox.tlm import session_tlm_sandbox
from sandbox.trivia_app import TAG
from tasks.windows import midnight

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import Artifact, FlowRun

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "docs" / "images"
# production waits seconds to minutes between retries and for traces to settle; not here
FAST = {
    "TRUST_EVAL_RETRIES": "3",
    "TRUST_EVAL_RETRY_BASE_DELAY_S": "0.01",
    "TRUST_EVAL_RETRY_MAX_DELAY_S": "2",
    "TRUST_EVAL_TLM_TIMEOUT_S": "20",
    "TRUST_EVAL_SETTLE_LAG_S": "0",
}
OPTIONS: dict[str, Any] = {
    "quality_preset": "medium",
    "low_trust_threshold": 0.5,
    "review_queue": "Low trust",
}
JUMP_DAY, JUMP_ANSWERS = 4, 8  # days before today; extra answers TLM scores low that day


@dataclass(frozen=True)
class Shot:
    """One picture: the UI path, and texts its DOM must hold before it is taken."""

    name: str
    path: str
    expect: tuple[str, ...]
    size: tuple[int, int] = (1400, 900)


def log(msg: str, t0: float) -> None:
    print(f"[{time.monotonic() - t0:6.1f} s] {msg}", flush=True)


def worker_env(home: Path, port: int, sandbox_env: dict[str, str]) -> dict[str, str]:
    """Prefect's settings for this setup plus the sandboxes'; nothing of the caller's own
    Prefect, Langfuse, Cleanlab or proxy settings leaks in."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "LANGFUSE_", "CLEANLAB_", "TRUST_EVAL_"))
        and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env = local.prefect_env(home, port, base)
    env.update(
        {
            # no scheduled runs: the daily deployment keeps its schedule, but never runs here
            "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
            "PREFECT_LOGGING_LEVEL": "INFO",
            "LANGFUSE_TIMEOUT": "5",
            **FAST,
            **sandbox_env,
        }
    )
    return env


def completed(run: FlowRun, home: Path) -> FlowRun:
    if run.state is None or not run.state.is_completed():
        logs = (home / "worker.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"flow run {run.name} ended {run.state}; worker log:\n{logs}")
    return run


def artifact(
    client: SyncPrefectClient, run_id: UUID, prefix: str, kind: str | None = None
) -> Artifact:
    """The run's (newest) artifact whose key starts with ``prefix`` (of type ``kind``)."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    found = [
        a
        for a in client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
        if (a.key or "").startswith(prefix) and kind in (None, a.type)
    ]
    if not found:
        raise RuntimeError(f"flow run {run_id} has no artifact with a key starting {prefix!r}")
    return max(found, key=lambda a: a.created or datetime.min.replace(tzinfo=UTC))


def faded(png: Path) -> bool:
    """Whether the page's heading is still dim: the UI fades some pages in (white text on the
    dark theme reaches full brightness only at the end). Not checked without Pillow."""
    try:
        from PIL import Image
    except ImportError:
        return False
    with Image.open(png) as im:
        heading = im.convert("L").crop((270, 0, im.width, 120))
        _low, high = heading.getextrema()  # one band: (min, max)
        return isinstance(high, int | float) and high < 200


def capture(ui: str, shot: Shot, out_dir: Path, budget_ms: int, attempts: int = 3) -> Path:
    """The PNG of ``shot`` once its DOM shows every expected text and the page has faded in (a
    bigger time budget on each attempt: a page caught while loading shows a spinner)."""
    url = ui + shot.path
    problem, dom, budget = "", "", budget_ms
    for attempt in range(attempts):
        budget = budget_ms * (attempt + 1)
        dom = dump_dom(url, budget_ms=budget, size=shot.size)
        missing = [text for text in shot.expect if text not in dom]
        if missing:
            problem = f"never showed {missing}"
            continue
        png = screenshot(url, out_dir / shot.name, budget_ms=budget, size=shot.size)
        if not faded(png):
            return png
        problem = "was still fading in"
    fd, kept = tempfile.mkstemp(prefix=f"{Path(shot.name).stem}-", suffix=".html")
    with os.fdopen(fd, "w") as f:
        f.write(dom)
    raise RuntimeError(f"{url} {problem} (last budget {budget} ms); its DOM: {kept}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=IMAGES, help="where the PNGs go")
    parser.add_argument("--days", type=int, default=14, help="past UTC days to seed and backfill")
    parser.add_argument("--per-day", type=int, default=12, help="traces per day")
    parser.add_argument(
        "--budget-ms", type=int, default=20000, help="Chromium's virtual time per page"
    )
    parser.add_argument(
        "--keep-open",
        action="store_true",
        help="afterwards, keep the Prefect server (and the sandboxes) up until Ctrl-C",
    )
    args = parser.parse_args(argv)
    if find_chromium() is None:
        print("error: chromium not found on PATH (Debian: apt-get install chromium)")
        return 1
    t0 = time.monotonic()
    # offline: no telemetry from the Prefect server; the TLM sandbox before cleanlab_tlm loads
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["DO_NOT_TRACK"] = "1"
    tlm = session_tlm_sandbox()
    with (
        tempfile.TemporaryDirectory(prefix="screenshots-prefect-") as tmp,
        LangfuseSandbox() as lf,
    ):
        home = Path(tmp)
        port = free_port()
        env = worker_env(home, port, lf.env() | tlm.env())
        # this process's own Prefect client talks to that server, with that home
        os.environ.update({k: env[k] for k in ("PREFECT_HOME", "PREFECT_API_URL")})
        days = seed(lf, args.days, args.per_day)
        log(f"seeded {args.per_day} traces on each of {days[0]} .. {days[-1]}", t0)
        server = worker = None
        try:
            server = local.start_server(env, home / "server.log")
            local.create_pool(env)
            worker = local.start_worker(env, home / "worker.log", limit=4)
            local.deploy(env)
            log(f"prefect server on :{port}, pool, worker and deployments ready", t0)
            shots = run_flows(home, days, lf)
            log("window, backfill and review-loop runs completed", t0)
            ui = f"http://127.0.0.1:{port}"
            for shot in shots:
                path = capture(ui, shot, args.out, args.budget_ms)
                log(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}", t0)
            if args.keep_open:
                print(f"Prefect UI: {ui}  (Ctrl-C stops it)", flush=True)
                while server.poll() is None:
                    time.sleep(1)
        except RuntimeError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("stopping ...", flush=True)
        finally:
            local.stop(worker)
            local.stop(server)
    log("done", t0)
    return 0


def seed(lf: LangfuseSandbox, days: int, per_day: int) -> list[date]:
    """Past-dated traces through the real SDK; the days, oldest first."""
    from langfuse import Langfuse

    client = Langfuse(
        public_key=lf.public_key, secret_key=lf.secret_key, base_url=lf.url, timeout=5
    )
    try:
        by_day = seed_days(client, days=days, per_day=per_day, tags=[TAG])
        if days > JUMP_DAY:  # a day whose low-trust share jumps: the trend's drift
            jump = datetime.now(UTC).date() - timedelta(days=JUMP_DAY)
            at = midnight(jump) + timedelta(hours=13)
            by_day[jump] += [
                trace_answer_at(
                    client, f"Bonus question {i}? [tlm:trustworthiness=0.1{i}]",
                    at + timedelta(minutes=7 * i), tags=[TAG],
                )
                for i in range(JUMP_ANSWERS)
            ]  # fmt: skip
            client.flush()
    finally:
        client.shutdown()
    missing = [i for ids in by_day.values() for i in ids if lf.store.trace(i) is None]
    if missing:
        raise RuntimeError(f"{len(missing)} seeded traces did not reach the sandbox")
    return sorted(by_day)


def run_flows(home: Path, days: list[date], lf: LangfuseSandbox) -> list[Shot]:
    """The window run (last day), the backfill (all days), a reviewer's verdicts and the
    review loop; the pictures to take of them."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        window = client.read_deployment_by_name("evaluate-traces/window")
        back = client.read_deployment_by_name("evaluate-traces-backfill/backfill")
        loop = client.read_deployment_by_name("trust-review-loop/review-loop")
        last = days[-1]
        w = client.create_flow_run_from_deployment(
            window.id,
            parameters={
                "tags": [TAG],
                "window_start": midnight(last).isoformat(),
                "window_end": midnight(last + timedelta(days=1)).isoformat(),
                "options": OPTIONS,
            },
        )
        # its name is set once it runs
        w = completed(local.wait_final(client, w.id, timeout=300), home)
        b = client.create_flow_run_from_deployment(
            back.id,
            parameters={
                "tags": [TAG],
                "start_date": days[0].isoformat(),
                "end_date": last.isoformat(),
                "max_concurrency": 3,
                "options": OPTIONS,
            },
        )
        completed(local.wait_final(client, b.id, timeout=600), home)
        play_reviewer(lf)
        r = client.create_flow_run_from_deployment(
            loop.id, parameters={"tags": [TAG], "options": OPTIONS}
        )
        completed(local.wait_final(client, r.id, timeout=300), home)
        lowest = artifact(client, w.id, "trust-lowest-")
        summary = artifact(client, w.id, "trust-summary-")
        back_summary = artifact(client, b.id, "trust-backfill-summary-")
        precision = artifact(client, r.id, "trust-precision-")
        trend = artifact(client, r.id, "trust-trend-chart-")
        table = artifact(client, r.id, "trust-trend-", kind="table")
    return [
        Shot(
            "deployments.png",
            "/deployments",
            ("window", "backfill", "report", "review-loop", "notify-drift", "notify-low-trust"),
        ),
        Shot(
            "run-graph.png",
            f"/runs/flow-run/{w.id}",
            (w.name, "Completed", "Finished in state Completed"),
        ),
        Shot("lowest-trust.png", f"/artifacts/artifact/{lowest.id}", ("explanation", "/traces/")),
        Shot(
            "summary.png",
            f"/artifacts/artifact/{summary.id}",
            ("Trust scores", "Lowest-trust traces"),
        ),
        Shot(
            "parameter-form.png",
            f"/deployments/deployment/{window.id}/run",
            ("Quality Preset", "TLM quality preset", "Alert Low Trust Share"),
            size=(1400, 2900),  # tall enough for every option
        ),
        Shot(
            "backfill-summary.png",
            f"/artifacts/artifact/{back_summary.id}",
            ("Trust backfill", "total"),
            size=(1400, 1500),  # every day down to the total
        ),
        Shot(
            "precision.png",
            f"/artifacts/artifact/{precision.id}",
            ("Is the low-trust flag right?", "Precision of the flag", "would flag"),
        ),
        Shot("trend.png", f"/artifacts/artifact/{trend.id}", ("Trust trend", "low-trust share")),
        Shot("trend-table.png", f"/artifacts/artifact/{table.id}", ("low-trust share", "drift")),
    ]


if __name__ == "__main__":
    # Ctrl-C and SIGTERM both stop the worker, the server and the sandboxes
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
