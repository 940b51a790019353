"""prefect.yaml's deployments on a real ``prefect server`` and a real ``process`` worker.

deployments/local.py starts the server (own PREFECT_HOME and SQLite, a free port), the pool,
the deployments and a worker, whose flow runs are subprocesses talking to the sandboxes here.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.schedules import CronSchedule
from prefect.states import Cancelling, Running, Scheduled

from deployments import local
from flows.day_runs import day_key, day_parameters
from flows.options import EvalOptions
from sandbox.faults import Fault
from sandbox.langfuse import LangfuseSandbox
from sandbox.tlm import session_tlm_sandbox
from tasks.stream import Stream
from tasks.windows import midnight
from tests.support.prefect_stack import prefect_stack, runs_of
from tests.support.seeding import TAG, seed

REPO = Path(__file__).resolve().parents[2]
HELD_S = 300  # how long the test may keep the backfill's first day at TLM (its item timeout too)


def seed_day(lf: LangfuseSandbox, day: date, n: int = 4) -> list[str]:
    """``n`` traces over the day: at 00:00, 06:00 (+ 1 s), 12:00 ...; one untagged trace too."""
    other = midnight(day) + timedelta(hours=3)
    seed(lf, 1, tags=("other",), start=other, name=None, input="Q", output="A", metadata=None)

    def at(i: int) -> datetime:
        return midnight(day) + timedelta(hours=6 * i, seconds=1 if i else 0)

    return seed(lf, n, at=at, name=f"{day} q{{i}}", question=f"Question {{i}} of {day}?")


def assert_forms_document_every_parameter(schema: dict[str, Any] | None) -> None:
    """The UI builds its run form from this schema: help for every field, dropdowns for the
    fixed choices, and the required ones marked required."""
    assert schema is not None
    props = schema["properties"]
    assert "tags" in schema.get("required", []), schema.get("required")
    assert all(p.get("description") for p in props.values()), props
    options = schema["definitions"]["EvalOptions"]["properties"]
    assert all(p.get("description") for p in options.values()), options
    assert options["quality_preset"]["enum"] == ["best", "high", "medium", "low", "base"]
    assert options["scope"]["enum"] == ["trace", "generation"]


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[dict[str, str], LangfuseSandbox, Path]]:
    """Server + pool + deployments + a worker, with the sandboxes' env in the worker's env;
    one for the module's tests (a stack takes a minute to start)."""
    tmp_path = tmp_path_factory.mktemp("stack")
    extra = {
        "TRUST_EVAL_TLM_TIMEOUT_S": str(HELD_S),  # a held item must outlive the hold
        "TRUST_EVAL_PAGE_SIZE": "5",
        # a running day silent for 45 s is lost (live ones beat every 30 s, Prefect's least)
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
        "TRUST_EVAL_DAY_SILENCE_S": "45",
    }
    with prefect_stack(tmp_path, workers=("worker",), extra_env=extra) as (env, lf, home):
        yield env, lf, home


@pytest.mark.timeout(900)
def test_schedules_manual_runs_and_backfills_on_a_real_server(
    stack: tuple[dict[str, str], LangfuseSandbox, Path],
) -> None:
    env, lf, home = stack
    tlm = session_tlm_sandbox()
    t0 = time.monotonic()
    today = datetime.now(UTC).date()
    d = [today - timedelta(days=30 - i) for i in range(8)]  # eight past days
    traces = {day: seed_day(lf, day) for day in d[:7]}

    def scored() -> dict[str, int]:
        out: dict[str, int] = {}
        for s in lf.store.all_scores():
            out[s.trace_id or ""] = out.get(s.trace_id or "", 0) + 1
        return out

    with local.client_for(env) as client:
        daily = client.read_deployment_by_name("evaluate-traces-daily/daily")
        (sched,) = daily.schedules
        assert isinstance(sched.schedule, CronSchedule)
        assert sched.schedule.cron == "15 0 * * *" and sched.schedule.timezone == "UTC"
        assert sched.active and sched.slug == "daily-previous-utc-day"
        assert daily.work_pool_name == local.POOL
        window = client.read_deployment_by_name("evaluate-traces/window")
        back = client.read_deployment_by_name("evaluate-traces-backfill/backfill")
        assert window.schedules == [] and back.schedules == []
        assert_forms_document_every_parameter(window.parameter_openapi_schema)
        assert_forms_document_every_parameter(back.parameter_openapi_schema)
        # a bad value is refused when the run is created, not by the worker later
        for bad in ({"quality_preset": "ultra"}, {"sample_rate": 2}, {"scope": "span"}):
            with pytest.raises(Exception, match=r"422|409|invalid|Validation") as refused:
                client.create_flow_run_from_deployment(
                    window.id, parameters={"tags": [TAG], "options": bad}
                )
            assert next(iter(bad)) in str(refused.value), refused.value
        # (for 4. below: a run of d[7] left RUNNING by an earlier backfill's worker, which dies
        # here; its silence counts from now, while 1.-3. go on)
        stream = Stream.of(lf.store.project_id, [TAG], "trust_score")
        params = {"tags": [TAG], "options": EvalOptions()}
        d7 = (midnight(d[7]), midnight(d[7]) + timedelta(days=1))
        lost = client.create_flow_run_from_deployment(
            window.id, parameters=day_parameters(*d7, params), state=Running(),
            idempotency_key=day_key("evaluate-traces/window", stream, *d7, params),
        )  # fmt: skip
        # 1. the daily run due at d[3] 00:15 UTC, the first ever: it evaluates d[2] and catches
        # up on the 3 days before it that no run evaluated (the day before d[0], d[0], d[1])
        due = midnight(d[3]) + timedelta(minutes=15)
        daily_run = client.create_flow_run_from_deployment(
            daily.id, state=Scheduled(scheduled_time=due)
        )
        # 2. the backfill of d[4]..d[6], started from the deployment like the UI does, two days
        # at a time; d[4] is held at TLM, and must not hold d[6] back once d[5] is done
        tlm.faults.set("tlm.score", Fault(hold_items={f"of {d[4]}?"}, hang_seconds=HELD_S))
        backfill = {
            "start_date": d[4].isoformat(),
            "end_date": d[6].isoformat(),
            "tags": [TAG],
            "max_concurrency": 2,
        }
        back_run = client.create_flow_run_from_deployment(back.id, parameters=backfill)
        # 3. a manual window run, the README's way: d[1] 05:00 -> 13:00 holds q1 and q2
        cli = subprocess.run(
            local.prefect_cmd(
                "deployment",
                "run",
                "evaluate-traces/window",
                "-p",
                f"window_start={midnight(d[1]) + timedelta(hours=5):%Y-%m-%dT%H:%M:%SZ}",
                "-p",
                f"window_end={midnight(d[1]) + timedelta(hours=13):%Y-%m-%dT%H:%M:%SZ}",
                "-p",
                f'tags=["{TAG}"]',
            ),
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert cli.returncode == 0, cli.stdout + cli.stderr
        # (the backfill's days are window runs too, each with a parent: not this one)
        window_runs = [
            r
            for r in runs_of(client, window.id)
            if r.parent_task_run_id is None and r.id != lost.id
        ]
        assert len(window_runs) == 1
        print(f"runs created after {time.monotonic() - t0:.1f} s")

        def day_runs_of_backfill() -> dict[str, FlowRun]:
            kids = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[back_run.id])
                )
            )
            return {str(k.parameters["window_start"])[:10]: k for k in kids}

        # d[6] must start while d[4] is still held: the old scheduler waited for the oldest day
        deadline = time.monotonic() + HELD_S - 60
        while str(d[6]) not in (by_day := day_runs_of_backfill()):
            assert time.monotonic() < deadline, (
                "the third day waited for the held first one, not for the first to finish",
                {day: k.state_name for day, k in by_day.items()},
            )
            time.sleep(1)
        held = by_day[str(d[4])]
        assert held.state is not None and not held.state.is_final(), held.state
        tlm.faults.clear()  # releases the held items
        print(f"third day created, first released after {time.monotonic() - t0:.1f} s")
        ran = {
            "daily": local.wait_final(client, daily_run.id),
            "window": local.wait_final(client, window_runs[0].id),
            "backfill": local.wait_final(client, back_run.id),
        }
        logs = (home / "worker.log").read_text(errors="replace")[-4000:]
        for name, run in ran.items():
            assert run.state is not None and run.state.is_completed(), (name, run.state, logs)
        landed = scored()
        expected = {t for day in d[0:3] for t in traces[day]}  # the daily run and its catch-up
        expected |= {t for day in d[4:7] for t in traces[day]}
        assert set(landed) == expected  # exactly those days/windows, nothing else
        assert all(n == 1 for n in landed.values())
        assert len(tlm.prompts) == len(expected)
        assert ran["daily"].expected_start_time == due
        caught_up = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[daily_run.id])
            )
        )
        starts = sorted(str(k.parameters["window_start"])[:10] for k in caught_up)
        assert starts == [str(d[0] - timedelta(days=1)), str(d[0]), str(d[1]), str(d[2])], starts
        kids = day_runs_of_backfill()
        assert len(kids) == 3 and all(k.state and k.state.is_completed() for k in kids.values())
        print(f"daily, window and backfill done after {time.monotonic() - t0:.1f} s")
        # 5. the low-trust alert: the runs above emitted `trust-eval.window.low-trust` (the
        # synthetic scores put well over 20% below 0.5), the backfill one
        # `trust-eval.backfill.low-trust` for its range (its days none); the deployment trigger
        # in prefect.yaml turned each into a notify-low-trust run carrying the event's figures
        notify = client.read_deployment_by_name("notify-low-trust/notify-low-trust")
        deadline = time.monotonic() + 60
        while True:
            alerts = [a.parameters["figures"] for a in runs_of(client, notify.id)]
            ranges = [f for f in alerts if "days" in f]
            if (ranges and len(alerts) > len(ranges)) or time.monotonic() > deadline:
                break
            time.sleep(1)
        windows = [f for f in alerts if "days" not in f]
        assert windows and all(f["low_trust_share"] > 0.2 for f in windows), alerts
        assert all(f["tags"] == [TAG] and f["uploaded"] >= 1 for f in windows)
        (whole,) = ranges  # one for the backfill's range, listing its days over the share
        assert whole["start_date"] == d[4].isoformat() and whole["days"], whole
        backfill_days = {str(d[4]), str(d[5]), str(d[6])}
        assert not {f["window_start"][:10] for f in windows} & backfill_days  # no day alone
        # 4. the same backfill again, one day longer. A trace came late to d[5]: its day runs
        # again. d[7] has the run left RUNNING by a dead worker (no heartbeat since it was
        # made at the start): found by its silence, marked Crashed, run again. d[4] and d[6]
        # re-attach to the first backfill's runs: nothing new to score, no run.
        late = seed(lf, 1, start=midnight(d[5]) + timedelta(hours=20), question="Late one?")
        traces[d[7]] = seed_day(lf, d[7])
        before = {r.id for r in runs_of(client, window.id)}
        longer = backfill | {"end_date": d[7].isoformat()}
        same = client.create_flow_run_from_deployment(back.id, parameters=longer)
        run = local.wait_final(client, same.id, timeout=300)
        assert run.state is not None and run.state.is_completed(), run.state
        new = [r for r in runs_of(client, window.id) if r.id not in before]
        assert sorted(str(r.parameters["window_start"])[:10] for r in new) == [str(d[5]), str(d[7])]
        crashed = client.read_flow_run(lost.id)
        assert crashed.state is not None and crashed.state.is_crashed(), crashed.state
        assert "no heartbeat" in (crashed.state.message or "")
        landed = scored()
        expected |= set(late) | set(traces[d[7]])
        assert set(landed) == expected and all(n == 1 for n in landed.values())
        assert len(tlm.prompts) == len(expected)  # the re-run paid only for the new traces
        backfill = longer
        # 5. ... and evaluated afresh in this process: everything already scored, nothing added
        again = client.create_flow_run_from_deployment(
            back.id, parameters=backfill | {"days_on": "this-process"}
        )
        run = local.wait_final(client, again.id)
        print(f"second backfill done after {time.monotonic() - t0:.1f} s")
        assert run.state is not None and run.state.is_completed(), run.state
        assert scored() == landed and len(tlm.prompts) == len(expected)
        arts = [
            a
            for a in client.read_artifacts()
            if (a.key or "").startswith("trust-backfill-summary-") and a.flow_run_id == again.id
        ]
        assert len(arts) == 1, [a.key for a in client.read_artifacts()]
        summary = str(arts[0].data)
        assert "| **total** | 4 ran, 0 failed | 17 | 0 | 17 |" in summary, summary
        # a re-run's summary still reports the day's trust, from the scores already there
        assert "| – | 0 |" not in summary and "| 12 | 0 | 12 | 0 | 0 | – |" not in summary
        # the whole session (window, daily, two backfills, the alerts they set off): no failure
        time.sleep(3)  # the last alert runs
        # not the cron schedule's own runs: the upcoming ones, and the one that comes due when
        # the test spans 00:15 UTC (it evaluates the real yesterday, which has no trace: it fails)
        runs = [r for r in client.read_flow_runs() if not r.auto_scheduled]
        for r in runs:
            if r.state is None or not r.state.is_final():
                local.wait_final(client, r.id)
        failed = [
            (r.name, r.state.message if r.state else None)
            for r in client.read_flow_runs()
            if not r.auto_scheduled
            and (r.state is None or not r.state.is_completed())
            and r.id != lost.id  # the planted run of a dead worker: Crashed, as it should be
        ]
        assert failed == [], failed
        assert len(runs) >= 8  # daily, window, 2 backfills and their 6 days, the alert runs


def test_a_cancelled_window_run_lands_what_tlm_answered(
    stack: tuple[dict[str, str], LangfuseSandbox, Path],
) -> None:
    """Cancelling a window run from the UI: the worker sends the run's process SIGTERM; the run
    stops sending, lands what TLM had answered, and ends Cancelled. Nothing paid is lost."""
    env, lf, _ = stack
    tlm = session_tlm_sandbox()
    day = datetime.now(UTC).date() - timedelta(days=60)  # a day no other run of the module reads
    ids = seed(lf, 20, start=midnight(day), step=timedelta(minutes=30), question="Cancel {i}?")
    # the oldest page's items 0 and 1 wait at TLM: the newer pages are answered and land first
    tlm.faults.set("tlm.score", Fault(hold_items={"Cancel 0?", "Cancel 1?"}, hang_seconds=HELD_S))

    def stored() -> set[str]:
        return {s.trace_id or "" for s in lf.store.all_scores()} & set(ids)

    with local.client_for(env) as client:
        window = client.read_deployment_by_name("evaluate-traces/window")
        run = client.create_flow_run_from_deployment(
            window.id,
            parameters={
                "tags": [TAG],
                "window_start": midnight(day).isoformat(),
                "window_end": midnight(day + timedelta(days=1)).isoformat(),
                "options": {"alert_low_trust_share": None},
            },
        )
        # the newer pages land; the oldest waits on its two held items, its other three
        # answered and paid for: cancel then
        deadline = time.monotonic() + 240  # only a guard against a stuck test
        while not (tlm.holding == 2 and len(stored()) == 15):
            assert time.monotonic() < deadline, "the run never got to its held page"
            time.sleep(0.2)
        client.set_flow_run_state(run.id, Cancelling(message="from the UI"), force=True)
        final = local.wait_final(client, run.id, timeout=240)
    # counted before the hold ends: the sandbox records a released item as answered even when
    # the run that asked is gone
    answered = [p for p in tlm.prompts if "Cancel " in p]  # the held two never were
    tlm.faults.clear()
    assert final.state is not None and final.state.is_cancelled(), final.state
    assert len(stored()) == len(answered) == 18  # every paid answer landed, once


def test_a_window_ending_before_it_starts_fails_in_one_line_with_no_traceback_in_its_log(
    stack: tuple[dict[str, str], LangfuseSandbox, Path],
) -> None:
    """The UI's form cannot check two fields against each other: the worker's run refuses the
    window before any call, its state message the one line, and its log no engine traceback."""
    env, lf, _ = stack
    calls = len(lf.faults.requests)
    day = datetime.now(UTC).date() - timedelta(days=70)
    with local.client_for(env) as client:
        window = client.read_deployment_by_name("evaluate-traces/window")
        run = client.create_flow_run_from_deployment(
            window.id,
            parameters={
                "tags": [TAG],
                "window_start": midnight(day + timedelta(days=1)).isoformat(),
                "window_end": midnight(day).isoformat(),
            },
        )
        final = local.wait_final(client, run.id, timeout=240)
        deadline = time.monotonic() + 30  # logs reach the server in batches
        while True:
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
            if any("Finished in state Failed" in log.message for log in logs):
                break
            assert time.monotonic() < deadline, [log.message for log in logs]
            time.sleep(0.5)
    assert final.state is not None and final.state.is_failed(), final.state
    message = final.state.message or ""
    assert "window_end" in message and "\n" not in message, message
    text = "\n".join(log.message for log in logs)
    assert "Traceback" not in text and "Engine execution exited" not in text, text
    assert [log.message for log in logs if log.message == message] == [message], text
    assert len(lf.faults.requests) == calls  # refused before any call to Langfuse
