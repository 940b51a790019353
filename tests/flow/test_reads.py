"""What a run reads, as Langfuse servers answer: a page too heavy for ClickHouse, a server left
writing its legacy tables only, a trace whose root observations straddle midnight, a listing
that goes round in circles, and a re-run of a scored day that needs no score look-up."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from urllib.parse import parse_qs

import pytest

from flows.backfill import backfill
from flows.evaluate_traces import EvaluationFailed, evaluate_traces
from sandbox.faults import Fault
from sandbox.langfuse import LangfuseSandbox
from sandbox.tlm import TLMSandbox
from tasks.windows import midnight
from tests.support.profiles import ON_BOTH_SERVERS
from tests.support.seeding import DAY, TAG, WINDOW, seed

pytestmark = pytest.mark.usefixtures("prefect_harness")


def limits_asked(lf: LangfuseSandbox, status: int | None = None) -> list[int]:
    """The ``limit`` of every request for pages of traces (root observations with their io)."""
    out = []
    for r in lf.faults.requests:
        q = parse_qs(r.query)
        pages = q.get("isRootObservation") == ["true"] and "io" in q.get("fields", [""])[0]
        if r.endpoint == "observations" and pages and status in (None, r.status):
            out.append(int(q["limit"][0]))
    return out


@ON_BOTH_SERVERS
def test_a_page_too_heavy_is_asked_again_at_half_the_size(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    lf = langfuse_sandbox
    ids = seed(lf, 600, step=timedelta(seconds=100))
    lf.heavy_read_rows = 300  # ClickHouse gives up on pages of io and metadata over 300
    report = evaluate_traces(tags=[TAG], **WINDOW)
    assert report.ok and report.uploaded == 600 and report.fetched == 600
    assert Counter(s.trace_id for s in lf.store.all_scores()) == Counter(ids)  # once each
    assert len(tlm.prompts) == 600
    assert limits_asked(lf, 422)[:2] == [1000, 500]  # halved from the same cursor...
    assert set(limits_asked(lf, 200)) == {250}  # ...until it passes, then kept


def test_a_page_still_too_heavy_at_the_floor_fails_in_one_line(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    lf = langfuse_sandbox
    seed(lf, 5)
    lf.heavy_read_rows = 10
    with pytest.raises(EvaluationFailed) as err:
        evaluate_traces(tags=[TAG], **WINDOW)
    message = str(err.value)
    assert "TRUST_EVAL_PAGE_SIZE" in message and "422" in message and "\n" not in message
    assert limits_asked(lf, 422) == [1000, 500, 250, 125, 62, 50]
    assert tlm.prompts == [] and lf.store.all_scores() == []


@pytest.mark.parametrize("langfuse_sandbox", ["v4.16"], indirect=True)
def test_a_server_writing_only_its_legacy_tables_is_named_not_reported_empty(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    lf = langfuse_sandbox
    lf.write_mode = "legacy"  # LANGFUSE_MIGRATION_V4_WRITE_MODE=legacy, after a v3 upgrade
    seed(lf, 4)
    with pytest.raises(EvaluationFailed) as err:
        evaluate_traces(tags=[TAG], **WINDOW)
    message = str(err.value)
    assert "LANGFUSE_MIGRATION_V4_WRITE_MODE=legacy" in message and "4 traces" in message
    assert tlm.prompts == [] and err.value.report.fetched == 0
    seed(lf, 1, tags=("another",))
    lf.write_mode = "dual"  # a window that is truly empty (another tag) is not an error
    assert evaluate_traces(tags=["nothing-here"], **WINDOW).fetched == 0


def test_a_trace_whose_roots_straddle_midnight_is_paid_for_once(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    """Two root observations of one trace, at 23:58 on day D and 00:03 on D+1 (two services
    starting spans of one trace): the trace belongs to D, the day of its first root."""
    lf = langfuse_sandbox
    day = DAY.date() - timedelta(days=30)
    late = midnight(day + timedelta(days=1)) - timedelta(minutes=2)
    (trace,) = seed(lf, 1, start=late)
    lf.store.add_observation(
        trace_id=trace, type="SPAN", name="second root", is_root=True,
        start_time=late + timedelta(minutes=5), input="Another question?", output="Another.",
    )  # fmt: skip
    other = seed(lf, 1, start=late + timedelta(hours=3))  # an ordinary trace of D+1
    summary = backfill(day, day + timedelta(days=1), tags=[TAG], max_concurrency=1)
    assert summary.ok
    assert [d.report.fetched for d in summary.days if d.report] == [1, 1]
    scores = lf.store.all_scores()
    assert sorted(str(s.trace_id) for s in scores) == sorted([trace, *other])  # one score each
    assert len(tlm.prompts) == 2  # paid once
    (mine,) = [s for s in scores if s.trace_id == trace]
    assert mine.timestamp == late  # the first root's start


def test_paging_stops_when_langfuse_hands_out_new_cursors_over_the_same_rows(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    lf = langfuse_sandbox
    monkeypatch.setenv("TRUST_EVAL_PAGE_SIZE", "5")
    ids = seed(lf, 5)
    lf.faults.set("observations", Fault(loop_pages=True))
    with pytest.raises(EvaluationFailed) as err:
        evaluate_traces(tags=[TAG], **WINDOW)
    assert "no row not seen before" in str(err.value) and "\n" not in str(err.value)
    assert len(limits_asked(lf)) == 4  # the page, then 3 with nothing new: stopped
    assert sorted(str(s.trace_id) for s in lf.store.all_scores()) == sorted(ids)  # once
    assert len(tlm.prompts) == 5


def test_a_rerun_of_a_scored_day_needs_no_score_look_up_when_langfuse_agrees(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    """The ledger says what runs wrote in the day; one count says Langfuse holds as many: the
    re-run reads its pages and nothing else, and pays nothing."""
    lf = langfuse_sandbox
    seed(lf, 150, step=timedelta(minutes=9))
    first = evaluate_traces(tags=[TAG], **WINDOW)
    assert first.uploaded == 150
    lf.faults.reset_log()
    again = evaluate_traces(tags=[TAG], **WINDOW)
    assert again.already_scored == 150 and again.uploaded == 0 and len(tlm.prompts) == 150
    by_endpoint = Counter(r.endpoint for r in lf.faults.requests)
    assert by_endpoint["scores.list"] == 0  # no look-up page by page
    # one page, and the traces of the hour before the day (roots straddling midnight)
    assert by_endpoint["metrics.v2"] == 1 and by_endpoint["observations"] == 2
    assert again.langfuse_requests == len(lf.faults.requests) <= 7
    # a score of that name the ledger does not know (another tool wrote it): the count
    # disagrees, and the run looks its scores up page by page as before
    (stranger,) = seed(lf, 1, start=DAY + timedelta(hours=23, minutes=50))
    lf.store.add_score(name="trust_score", value=0.5, trace_id=stranger, timestamp=DAY)
    lf.faults.reset_log()
    third = evaluate_traces(tags=[TAG], **WINDOW)
    assert lf.faults.count("scores.list") >= 2
    assert third.already_scored == 151 and third.uploaded == 0 and len(tlm.prompts) == 150
