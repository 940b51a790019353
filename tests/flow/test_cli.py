"""The CLI's ``main`` in this process: window and backfill runs, their output and exit codes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from flows.cli import main
from flows.window_lock import window_lock
from sandbox.faults import Fault
from sandbox.langfuse import LangfuseSandbox
from sandbox.tlm import TLMSandbox
from tasks.models import preview
from tasks.report import short_id
from tests.support.seeding import TAG, seed, stream_of

pytestmark = pytest.mark.usefixtures("prefect_harness")

DAY = date(2026, 9, 14)
START = datetime(2026, 9, 14, tzinfo=UTC)


def window_args(*extra: str) -> list[str]:
    end = START + timedelta(days=1)
    return ["window", "--start", START.isoformat(), "--end", end.isoformat(), "--tag", TAG, *extra]


def test_window_explicit_ok_prints_the_ranked_table(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = seed(langfuse_sandbox, 6, start=START, step=timedelta(hours=3))
    seed(
        langfuse_sandbox, 2, start=START + timedelta(days=1), step=timedelta(hours=1)
    )  # after: out

    assert main(window_args("--show", "3")) == 0

    assert sorted(s.trace_id or "" for s in langfuse_sandbox.store.all_scores()) == sorted(ids)
    out = capsys.readouterr().out
    assert "fetched 6: uploaded 6" in out
    assert "Least trustworthy, lowest first:" in out
    table = out.split("Least trustworthy, lowest first:\n", 1)[1].strip().splitlines()
    assert table[0].split()[:3] == ["#", "score", "trace"] and len(table) == 5
    assert table[-1].startswith("Lowest in Langfuse (the full explanation): http")
    assert table[0].split()[-1] == "why"  # header, 3 rows, the link
    scores = [float(line.split()[1]) for line in table[1:4]]
    assert scores == sorted(scores)
    why = {  # each row ends with the explanation, shortened (in full: the score's comment)
        short_id(s.trace_id or ""): preview(s.comment or "", 50)
        for s in langfuse_sandbox.store.all_scores()
    }
    for line in table[1:4]:
        assert len(why[line.split()[2]]) > 20 and line.endswith(why[line.split()[2]])

    assert main(window_args()) == 0  # a re-run: nothing new, still fine
    assert "already scored 6" in capsys.readouterr().out


def test_window_since_uses_the_recent_past(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)
    recent = seed(langfuse_sandbox, 4, start=now - timedelta(hours=20), step=timedelta(hours=4))
    seed(langfuse_sandbox, 2, start=now - timedelta(hours=30), step=timedelta(hours=1))  # too old
    assert main(["window", "--since", "24h", "--tag", TAG, "--show", "0"]) == 0
    assert sorted(s.trace_id or "" for s in langfuse_sandbox.store.all_scores()) == sorted(recent)


def test_window_pass_through_dry_run_and_caps(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(langfuse_sandbox, 5, start=START, step=timedelta(hours=2))
    assert main(window_args("--dry-run")) == 0
    assert tlm.prompts == [] and langfuse_sandbox.store.all_scores() == []
    assert "Dry run: 5 TLM item(s), " in capsys.readouterr().out
    assert main(window_args("--max-traces", "2", "--score-name", "trust_cli")) == 0
    scores = langfuse_sandbox.store.all_scores()
    assert len(scores) == 2 and {s.name for s in scores} == {"trust_cli"}
    assert main(window_args("--score-name", "trust_cli", "--quality-preset", "high")) == 0
    assert len(langfuse_sandbox.store.all_scores()) == 5
    assert tlm.calls[-1]["quality"] == "high"


def test_window_refused_trace_exits_nonzero(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = seed(langfuse_sandbox, 4, start=START, step=timedelta(hours=2))
    langfuse_sandbox.faults.set("scores.create", Fault(reject_trace_ids={ids[1]}))
    assert main(window_args()) == 1
    out = capsys.readouterr().out
    assert "failed to upload: 1" in out and ids[1] in out
    assert "Completed with failures" in out


def test_window_stage_failure_exits_nonzero(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(langfuse_sandbox, 3, start=START, step=timedelta(hours=2))
    tlm.fail_status = 422
    tlm.faults.set("tlm.score", Fault(fail_items={"Question"}))
    assert main(window_args()) == 1
    assert "FAILED: TLM scored none of 3 items" in capsys.readouterr().out


def test_config_errors_are_one_clean_line(
    langfuse_sandbox: LangfuseSandbox,
    tlm: TLMSandbox,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cases = [
        (window_args("--quality-preset", "low"), "quality_preset='low'"),
        (window_args("--sample-rate", "0"), "sample_rate"),
        (["window", "--start", "2026-09-14T00:00", "--tag", TAG], "has no timezone"),
        (
            ["window", "--start", START.isoformat(), "--end", START.isoformat(), "--tag", TAG],
            "must be after",
        ),
        (
            ["backfill", "--start-date", "2026-09-14", "--end-date", "2026-09-13", "--tag", TAG],
            "--end-date (2026-09-13) must not be before --start-date",
        ),
    ]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and needle in err and err.count("\n") == 1, err
    monkeypatch.delenv("CLEANLAB_TLM_API_KEY")
    assert main(window_args()) == 2
    err = capsys.readouterr().err
    assert "CLEANLAB_TLM_API_KEY" in err and "Traceback" not in err
    assert langfuse_sandbox.faults.requests == [] and tlm.prompts == []


def test_a_tlm_ceiling_on_the_embedded_server_is_refused_in_one_line(
    langfuse_sandbox: LangfuseSandbox,
    tlm: TLMSandbox,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No PREFECT_API_URL: the run would use Prefect's embedded server, which never takes
    back a killed run's slots. Refused before any call; the same run on a server is not."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    seed(langfuse_sandbox, 3, start=START, step=timedelta(hours=3))
    monkeypatch.setenv("TRUST_EVAL_TLM_CONCURRENCY_LIMIT", "tlm-in-flight")
    with temporary_settings(restore_defaults={PREFECT_API_URL}):  # as a plain CLI run
        assert main(window_args()) == 2
        assert main(window_args("--dry-run")) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 2 and lines[0] == lines[1], err
    assert lines[0].startswith("error: TRUST_EVAL_TLM_CONCURRENCY_LIMIT=tlm-in-flight needs a ")
    assert "persistent Prefect server" in err and "PREFECT_API_URL" in err
    assert langfuse_sandbox.faults.requests == [] and tlm.prompts == []


def test_backfill_ok_then_failed_day(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    lf = langfuse_sandbox
    for d in range(3):
        seed(lf, 3, start=START + timedelta(days=d), step=timedelta(hours=5))
    argv = ["backfill", "--start-date", str(DAY), "--end-date", str(DAY + timedelta(days=2))]
    argv += ["--tag", TAG, "--max-concurrency", "2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert len(lf.store.all_scores()) == 9
    assert "2026-09-15  ok" in out and "Least trustworthy over the range" in out

    lf.faults.set("scores.create", Fault(status=500))  # every upload fails: every day fails
    assert main([*argv, "--rescore"]) == 1
    out = capsys.readouterr().out
    assert "FAILED: 3 of 3 day(s) failed" in out
    assert "2026-09-14  failed" in out


def test_a_window_held_past_the_wait_timeout_fails_naming_it(
    langfuse_sandbox: LangfuseSandbox,
    tlm: TLMSandbox,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed(langfuse_sandbox, 2, start=START, step=timedelta(hours=2))
    monkeypatch.setenv("TRUST_EVAL_LOCK_TIMEOUT_S", "1")
    evening = START + timedelta(hours=20)  # another run's window overlapping the 14th
    stream = stream_of(langfuse_sandbox)
    with window_lock(stream, evening, evening + timedelta(hours=10), lease_s=60, timeout_s=1):
        assert main(window_args()) == 1
    out = capsys.readouterr().out
    assert "FAILED: window 2026-09-14T00:00:00Z..2026-09-15T00:00:00Z is still being" in out
    assert tlm.prompts == [] and langfuse_sandbox.store.all_scores() == []
    assert main(window_args()) == 0  # released: the same run now goes through
