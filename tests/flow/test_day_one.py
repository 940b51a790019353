"""Day one and day two with the CLI, in this process: a mistyped tag, bad input refused in one
line before any call, a large run asked for first, the preset in a dry run's estimate, a long
window warned of, and the worst traces of a range read back from Langfuse without TLM."""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.cli import main
from flows.evaluate_traces import Interrupted, evaluate_traces
from flows.options import EvalOptions
from flows.report_range import report_range
from flows.window_lock import window_lock
from sandbox.faults import Fault
from sandbox.langfuse import LangfuseSandbox
from sandbox.tlm import TLMSandbox
from tests.support.seeding import TAG, WINDOW, seed, stream_of

pytestmark = pytest.mark.usefixtures("prefect_harness")

TYPO = "TLM_eval_pipline"
START = WINDOW["window_start"]


def window_args(*extra: str, tag: str = TAG) -> list[str]:
    end = START + timedelta(days=1)
    return ["window", "--start", START.isoformat(), "--end", end.isoformat(), "--tag", tag, *extra]


def summary_markdown(stream_key: str) -> str:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[stream_key])), limit=1
        )
    assert found, f"no artifact {stream_key}"
    return str(found[0].data)


# --------------------------------------------------------------------------- a mistyped tag


def test_a_mistyped_tag_names_the_windows_tags_and_the_nearest_match(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    lf = langfuse_sandbox
    seed(lf, 6)
    seed(lf, 2, tags=("checkout", "beta"), start=START + timedelta(hours=3))

    assert main(window_args(tag=TYPO)) == 0  # nothing failed: nothing matched, and it says so
    out = capsys.readouterr().out
    (line,) = [x for x in out.splitlines() if x.startswith("  warning: ")]
    assert f"no trace carries the tag(s) {TYPO}" in line
    assert f"{TAG} (6)" in line and "checkout (2)" in line and "beta (2)" in line
    assert line.endswith(f"did you mean {TAG}?")
    assert "nothing to do" not in out and tlm.prompts == []

    report = evaluate_traces(tags=[TYPO], **WINDOW)  # the run's report and artifact say it too
    assert report.fetched == 0 and report.warnings == [line.removeprefix("  warning: ")]
    key = stream_of(lf, (TYPO,)).artifact_key("trust-summary")
    assert f"did you mean {TAG}?" in summary_markdown(key).replace("\\", "")


def test_a_window_with_no_trace_at_all_says_so(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    seed(langfuse_sandbox, 3, start=START - timedelta(days=2))  # all before the window
    report = evaluate_traces(tags=[TAG], **WINDOW)
    (warning,) = report.warnings
    assert "no trace at all started in this window" in warning


# --------------------------------------------------------------------------- bad input

BAD = [
    (["window", "--since", "1000000d", "--tag", TAG], {}, "'1000000d' is more than 3653 days"),
    (["window", "--start", "0001-01-01", "--end", "2026-01-01", "--tag", TAG], {}, "spans"),
    (["backfill", "--start-date", "2026-11-01", "--end-date", "2026-11-02", "--tag", TAG,
      "--max-concurrency", "65"], {}, "--max-concurrency must be 1 to 64, got 65"),
    (["backfill", "--start-date", "2026-11-01", "--end-date", "9999-12-31", "--tag", TAG], {},
     "--end-date 9999-12-31 is not over yet"),
    (window_args(), {"TRUST_EVAL_SYSTEM_PROMPT_KEYS": "foo"},
     'TRUST_EVAL_SYSTEM_PROMPT_KEYS must be a JSON list, e.g. ["system_prompt", "system"]'),
    (window_args(), {"TRUST_EVAL_PRESET_COST_MULTIPLIERS": "medium=4"},
     "TRUST_EVAL_PRESET_COST_MULTIPLIERS must be a JSON object"),
    (window_args(), {"TRUST_EVAL_PRESET_COST_MULTIPLIERS": '{"fastest": 1}'},
     "unknown preset(s) ['fastest']"),
    (["report", "--since", "7d", "--tag", TAG, "--below", "2"], {}, "--below must be 0 to 1"),
    (["report", "--since", "soon", "--tag", TAG], {}, "not a duration: 'soon'"),
    (["window", "--since", "24h"], {}, "the following arguments are required: --tag"),
    (window_args("--quality-preset", "base"), {},
     "quality_preset='base' cannot log an explanation with every score"),
    (window_args("--quality-preset", "low", "--explain", "all"), {}, "set explain=low_trust"),
    (window_args("--max-cost", "0"), {}, "options.max_cost: Input should be greater than 0"),
    (window_args("--max-cost", "nan"), {}, "options.max_cost"),
    (window_args("--max-cost", "-3"), {}, "options.max_cost"),
    (window_args("--max-cost", "5"), {}, "max_cost needs TLM's price"),
    (window_args("--max-cost", "5"), {"TRUST_EVAL_PRICE_PER_1K_TOKENS": "0"},
     "TRUST_EVAL_PRICE_PER_1K_TOKENS (greater than 0)"),
    (["backfill", "--start-date", "2026-11-01", "--end-date", "2026-11-02", "--tag", TAG,
      "--max-cost", "5"], {}, "max_cost needs TLM's price"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "env", "needle"), BAD, ids=[n[:40] for _, _, n in BAD])
def test_bad_input_is_one_line_exit_2_and_calls_nothing(
    langfuse_sandbox: LangfuseSandbox,
    tlm: TLMSandbox,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    env: dict[str, str],
    needle: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    assert needle in captured.err and "Traceback" not in captured.err
    assert langfuse_sandbox.faults.requests == [] and tlm.faults.requests == []


class HtmlPage(BaseHTTPRequestHandler):
    """Another web service: a 200 HTML page for every path."""

    def do_GET(self) -> None:
        body = b"<!doctype html><html><body>Grafana</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def html_service() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), HtmlPage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_a_base_url_of_another_service_or_with_api_public_is_named_with_the_fix(
    langfuse_sandbox: LangfuseSandbox,
    tlm: TLMSandbox,
    html_service: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lf = langfuse_sandbox
    cases = [
        (html_service, "answered HTTP 200 with text/html, not JSON"),
        (f"{lf.url}/api/public", f"without the trailing /api/public: {lf.url}"),
    ]
    for url, needle in cases:
        monkeypatch.setenv("LANGFUSE_BASE_URL", url)
        assert main(window_args()) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"error: LANGFUSE_BASE_URL={url} " in err, err
        assert needle in err and "does not point at a Langfuse API" in err
    assert tlm.faults.requests == [] and lf.store.all_scores() == []


# --------------------------------------------------------------------------- guard rails


@pytest.mark.parametrize("metrics", ["v2 metrics", "metrics 404: roots paged"])
def test_a_run_over_the_confirm_limit_is_refused_without_a_terminal_unless_yes(
    langfuse_sandbox: LangfuseSandbox,
    tlm: TLMSandbox,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    metrics: str,
) -> None:
    lf = langfuse_sandbox
    seed(lf, 5)
    monkeypatch.setenv("TRUST_EVAL_CONFIRM_ITEMS", "4")
    if metrics != "v2 metrics":
        lf.faults.set("metrics.v2", Fault(status=404))

    assert main(window_args()) == 2  # stdin is no terminal here: nobody to ask
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "up to 5 traces to TLM" in err and "add --yes" in err
    assert "TRUST_EVAL_CONFIRM_ITEMS=4" in err
    assert tlm.faults.requests == [] and lf.store.all_scores() == []
    calls = [r.endpoint for r in lf.faults.requests]
    counted = ["metrics.v2"] if metrics == "v2 metrics" else ["metrics.v2", "observations"]
    assert calls == ["health", "projects", *counted]  # a count, not a dry run

    assert main(window_args("--max-traces", "4")) == 0  # the cap keeps it under the limit
    assert main(window_args("--yes")) == 0
    assert len(lf.store.all_scores()) == 5 and len(tlm.prompts) == 5


def test_a_dry_run_estimate_counts_the_preset(
    langfuse_sandbox: LangfuseSandbox,
    tlm: TLMSandbox,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed(langfuse_sandbox, 4)
    monkeypatch.setenv("TRUST_EVAL_PRICE_PER_1K_TOKENS", "1")
    tokens = {}
    for preset in ("medium", "best"):
        opts = EvalOptions(dry_run=True, quality_preset=preset)
        report = evaluate_traces(tags=[TAG], **WINDOW, options=opts)
        tokens[preset] = report.estimated_tokens
        assert report.estimated_tokens == round(
            report.would_score_chars / 4 * (4, 12)[preset == "best"]
        )
        assert report.estimated_cost_usd == round(report.estimated_tokens / 1000, 4)
    assert tokens["best"] == 3 * tokens["medium"] > 0
    monkeypatch.setenv("TRUST_EVAL_PRESET_COST_MULTIPLIERS", '{"medium": 1}')
    assert main(window_args("--dry-run")) == 0
    chars = report.would_score_chars  # tokens at 1 per token: characters / 4
    assert f"about {round(chars / 4)} TLM tokens at this preset" in capsys.readouterr().out
    assert tlm.faults.requests == []


def test_a_window_of_ninety_days_or_more_is_warned_of(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    end = START + timedelta(days=1)
    argv = ["window", "--start", (end - timedelta(days=120)).isoformat(), "--end",
            end.isoformat(), "--tag", TAG, "--dry-run"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "warning: 120 days at once" in out
    assert "first call" in out  # the time to the first Langfuse call is reported
    assert main(window_args("--dry-run")) == 0
    assert "days at once" not in capsys.readouterr().out


# --------------------------------------------------------------------------- the worst of a range


def test_report_over_scored_days_lists_the_lowest_with_explanations_and_pays_no_tlm(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    lf = langfuse_sandbox
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    first = today - timedelta(days=3)
    ours = [
        *seed(lf, 4, start=first + timedelta(hours=1), step=timedelta(hours=5)),
        *seed(lf, 3, start=first + timedelta(days=1, hours=2), step=timedelta(hours=5)),
        *seed(lf, 5, start=first + timedelta(days=2, hours=3), step=timedelta(hours=4)),
    ]
    theirs = seed(lf, 3, tags=("other",), start=first + timedelta(hours=2), question="Other {i}?")
    days = ["backfill", "--start-date", str(first.date()),
            "--end-date", str((today - timedelta(days=1)).date()), "--show", "0"]  # fmt: skip
    assert main([*days, "--tag", TAG]) == 0
    assert main([*days, "--tag", "other"]) == 0  # same score name, another tag: not in ours
    capsys.readouterr()
    stored = {s.trace_id: s for s in lf.store.all_scores()}
    assert set(stored) == set(ours) | set(theirs)
    lowest = sorted(ours, key=lambda t: (float(stored[t].value), t))[:5]
    tlm_before, lf_before = len(tlm.faults.requests), len(lf.faults.requests)

    assert main(["report", "--since", "7d", "--tag", TAG, "--limit", "5", "--below", "0.5"]) == 0
    out = capsys.readouterr().out
    assert len(tlm.faults.requests) == tlm_before  # no TLM request at all
    writes = [r for r in lf.faults.requests[lf_before:] if r.method != "GET"]
    assert writes == []
    ranked = re.findall(r"(?m)^ *\d+  \d\.\d{3}  (\w+)", out)
    assert ranked == lowest
    for trace_id in lowest:
        assert f"why: {' '.join(str(stored[trace_id].comment).split())[:60]}" in out
    assert "Q: Question" in out and "A: Answer" in out
    below = sum(float(stored[t].value) < 0.5 for t in ours)
    assert f"12 scored of 12 tagged traces, {below} below 0.5" in out
    for day, n in ((first, 4), (first + timedelta(days=1), 3), (first + timedelta(days=2), 5)):
        (row,) = [x for x in out.splitlines() if x.startswith(f"{day:%Y-%m-%d} ")]
        assert int(row.split()[1]) == n

    report = report_range(tags=[TAG], since="7d", limit=5)  # as the deployment runs it
    assert [r.trace_id for r in report.lowest] == lowest
    assert [r.explanation for r in report.lowest] == [stored[t].comment for t in lowest]
    assert all(r.url and r.url.endswith(f"/traces/{r.trace_id}") for r in report.lowest)
    assert all(r.question and r.answer for r in report.lowest)
    assert len(tlm.faults.requests) == tlm_before
    key = stream_of(lf).artifact_key("trust-range-summary")
    assert "| scored |" in summary_markdown(key)


# --------------------------------------------------------------------------- Ctrl-C while waiting


class Said(logging.Handler):
    """Sets ``event`` once a log record contains ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text, self.event = text, threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()


def test_ctrl_c_while_waiting_for_another_runs_window_lock_stops_at_once(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    lf = langfuse_sandbox
    seed(lf, 2)
    monkeypatch.setenv("TRUST_EVAL_LOCK_TIMEOUT_S", "30")  # not stopping: a timeout, not this
    waiting = Said("; waiting")
    lock_log = logging.getLogger("prefect.trust.window_lock")
    lock_log.addHandler(waiting)

    def interrupt() -> None:
        assert waiting.event.wait(timeout=120), "the run never waited for the lock"
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C

    end = START + timedelta(days=1)
    try:  # another run holds the day (and beats it)
        with window_lock(stream_of(lf), START, end, lease_s=60, timeout_s=60):
            threading.Thread(target=interrupt, daemon=True).start()
            with pytest.raises(Interrupted) as stopped:
                evaluate_traces(tags=[TAG], **WINDOW)
    finally:
        lock_log.removeHandler(waiting)
    message = str(stopped.value)
    assert message.startswith("stopped by Ctrl-C while waiting for window 2026-11-28T00:00:00Z")
    assert stopped.value.report.fetched == 0
    assert tlm.faults.requests == [] and lf.store.all_scores() == []
