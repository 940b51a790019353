"""Paid work always lands, whatever stops a run: TLM failing as a whole mid-chunk, a lock the run
learns it lost, Ctrl-C. Items TLM answered are uploaded (or recorded in the ledger) before the
failure propagates; nothing more is sent; every fetched trace stays accounted for."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from concurrent.futures import Future
from typing import Any

import pytest
from prefect import flow, get_client

from flows.evaluate_traces import EvaluationFailed, Interrupted, evaluate_traces
from flows.landing import Landing, score_spec
from flows.options import EvalOptions
from flows.scoring import Chunk, TLMHealth
from flows.settings import Settings, open_stream
from flows.window_lock import free, lock_names
from sandbox.faults import Fault
from sandbox.langfuse import LangfuseSandbox
from sandbox.tlm import TLMSandbox
from tasks.errors import StageError
from tasks.failures import Reason
from tasks.langfuse_api import Access
from tasks.models import Bucket, Pair, Scored, outcome_for
from tasks.report import EvalReport, Tally
from tasks.score import ScoreResult
from tasks.scorebook import ScoreBook, Verdict
from tests.support.seeding import DAY, TAG, WINDOW, seed, stream_of

pytestmark = pytest.mark.usefixtures("prefect_harness")
LOG = logging.getLogger("tests.flow.stopping")


def wait_until(cond: Any, what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s  # only a guard against a stuck test
    while not cond():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.02)


def test_a_chunk_tlm_failed_as_a_whole_lands_what_it_paid_for_then_stops(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    """The slots of the shared ceiling went away mid-chunk: 2 items had been answered, 3 were
    never sent. The 2 are uploaded and recorded, then the run stops, saying why."""
    lf = langfuse_sandbox
    ids = seed(lf, 5)
    settings = Settings.load(EvalOptions())
    access = Access(settings.langfuse, settings.tuning)
    server, stream = open_stream(access, [TAG], "trust_score", LOG)
    report = EvalReport(tags=[TAG], score_name="trust_score", **WINDOW)
    tally = Tally(report, 20)
    book = ScoreBook.open(
        stream.scores_key, "trust_score", settings.tuning, run_id="r", warn=LOG.warning
    )
    pairs = [Pair(t, DAY, "q", None, f"Question {t}?", "An answer.", "chat") for t in ids]
    report.fetched, report.tlm_requests = 5, 5  # counted when handed to TLM
    why = "could not take slots of the shared TLM limit 'gone': 404"
    result = ScoreResult(
        scored=[Scored(p, 0.4, "meh") for p in pairs[:2]],
        failed=[outcome_for(p, Bucket.FAILED_TO_SCORE, Reason.NOT_SENT, why) for p in pairs[2:]],
        tlm_requests=2,
        fatal=why,
    )
    future: Future[ScoreResult] = Future()
    future.set_result(result)
    landing = Landing(access, score_spec(EvalOptions(), {}, None, 1000), server, book, tally,
                      TLMHealth(3), LOG)  # fmt: skip

    @flow
    def land() -> None:  # tasks run in a flow, as in a window run
        landing.land(Chunk(1, 5, [], None), future.result())

    with pytest.raises(StageError, match="could not take slots"):
        land()
    assert {s.trace_id for s in lf.store.all_scores()} == set(ids[:2])  # paid work landed
    assert report.uploaded == 2 and report.accounted() == report.fetched
    assert report.tlm_requests == 2  # what reached TLM, not what was handed to it
    later = ScoreBook.open(
        stream.scores_key, "trust_score", settings.tuning, run_id="s", warn=LOG.warning
    )
    later.load([DAY.date()])
    assert [later.verdict(t) for t in ids] == [Verdict.PENDING] * 2 + [Verdict.PAY] * 3


def test_a_run_that_learns_it_lost_its_lock_stops_sending_and_lands_what_came_back(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A waiter freed this run's lock (it looked dead for a lease): at its next beat the run
    learns it, sends nothing more, lands what TLM answered and fails in one line."""
    lf = langfuse_sandbox
    monkeypatch.setenv("TRUST_EVAL_LOCK_LEASE_S", "1")  # a beat every 0.25 s
    monkeypatch.setenv("TRUST_EVAL_PAGE_SIZE", "5")
    ids = seed(lf, 100)
    tlm.set_latency(0.2)
    # all but the newest page (95..99) wait at TLM, so the run cannot end before its lock is
    # taken; not that page, whose first item goes alone (a held one would hold the whole run
    # until TLM's item timeout)
    held = {f"Question {i}?" for i in range(95)}
    tlm.faults.set("tlm.score", Fault(hold_items=held))
    (name,) = lock_names(stream_of(lf), WINDOW["window_start"], WINDOW["window_end"])
    outcome: list[BaseException | EvalReport] = []

    def run() -> None:
        try:
            outcome.append(evaluate_traces(tags=[TAG], **WINDOW))
        except Exception as err:
            outcome.append(err)

    worker = threading.Thread(target=run)
    worker.start()
    wait_until(lambda: tlm.holding >= 3, "items held at TLM")
    with get_client(sync_client=True) as client:
        var = client.read_variable_by_name(name)
        assert var is not None
        assert free(client, var.id)  # what a waiter does to a dead holder's lock
    worker.join(timeout=240)
    tlm.faults.release_hangs()
    (err,) = outcome
    assert isinstance(err, EvaluationFailed), err
    assert "lost the window lock" in str(err) and "\n" not in str(err)
    report = err.report
    assert report.accounted() == report.fetched
    assert len(tlm.prompts) <= report.tlm_requests < len(ids)  # it stopped sending
    answered = {p.split("Question ")[1].split("?")[0] for p in tlm.prompts}
    stored = {s.trace_id for s in lf.store.all_scores()}
    assert len(stored) == report.uploaded == len(answered)  # what came back landed


def test_ctrl_c_stops_sending_lands_what_was_answered_and_reports(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    lf = langfuse_sandbox
    monkeypatch.setenv("TRUST_EVAL_PAGE_SIZE", "5")
    ids = seed(lf, 20)
    # the oldest page's 3 and 4 wait at TLM (pages come newest first: 19..15 land first)
    tlm.faults.set("tlm.score", Fault(hold_items={"Question 3?", "Question 4?"}))
    answered_before = threading.Event()

    def interrupt() -> None:
        wait_until(lambda: tlm.holding >= 1 and len(lf.store.all_scores()) >= 1, "a landed chunk")
        answered_before.set()
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(Interrupted) as stopped:
        evaluate_traces(tags=[TAG], **WINDOW)
    assert answered_before.is_set()
    report = stopped.value.report
    assert "stopped by Ctrl-C" in str(stopped.value) and "\n" not in str(stopped.value)
    assert report.accounted() == report.fetched
    stored = {s.trace_id for s in lf.store.all_scores()}
    assert report.uploaded == len(stored) and stored <= set(ids)
    assert report.uploaded + sum(len(v) for v in report.failed_to_score.values()) >= 1
    tlm.faults.release_hangs()
