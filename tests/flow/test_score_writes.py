"""Score writes as the servers take them: v4.16's ingestion batches (one result per event, each
score timestamped by its event), labels in the same batches, their own request budget, and a
project whose ingestion Langfuse suspended."""

from __future__ import annotations

import pytest

from sandbox.faults import Fault
from sandbox.langfuse import LangfuseSandbox
from sandbox.tlm import TLMSandbox
from tasks.models import Bucket
from tests.support.fault_matrix import ids_in, run
from tests.support.fault_matrix import seed as seed_pairs
from tests.support.prefect_stack import global_limit
from tests.support.profiles import ON_BOTH_SERVERS

pytestmark = pytest.mark.usefixtures("prefect_harness", "fault_tuning")

V416 = pytest.mark.parametrize("langfuse_sandbox", ["v4.16"], indirect=True)


def trace_starts(lf: LangfuseSandbox) -> dict[str, int]:
    return {o.trace_id: o.start_ms for o in lf.store.all_observations() if o.is_root}


def stored(lf: LangfuseSandbox, name: str = "trust_score") -> dict[str, int]:
    """trace id -> the timestamp (ms) of its one score named ``name``; a second row fails."""
    rows = [s for s in lf.store.all_scores() if s.name == name]
    by_trace = {s.trace_id or "": s.timestamp_ms for s in rows}
    assert len(by_trace) == len(rows) == len({s.id for s in rows}), "a score stored twice"
    return by_trace


@V416
def test_an_event_refused_in_the_207_fails_only_its_score_and_the_next_run_resends_it(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    lf = langfuse_sandbox
    seeded = seed_pairs(lf, 20)
    refused = {seeded.order[4], seeded.order[11]}
    lf.faults.set("ingestion", Fault(reject_trace_ids=refused))
    r = run()

    assert r.error is None and not r.report.ok  # some scores failed: reported, not a crash
    assert ids_in(r.report.failed_to_upload) == refused
    (reason,) = r.report.failed_to_upload
    why = r.report.why(Bucket.FAILED_TO_UPLOAD, reason)
    assert reason == "refused" and "HTTP 400: Invalid request data: Score rejected" in why
    starts = trace_starts(lf)
    landed = stored(lf)
    assert set(landed) == set(seeded.pairs) - refused
    assert all(ts == starts[t] for t, ts in landed.items())
    assert [r.status for r in lf.faults.requests if r.endpoint == "ingestion"] == [207]

    lf.faults.set("ingestion", None)
    paid = len(tlm.calls)
    again = run()
    assert again.error is None and again.report.ok and again.report.resent == 2
    assert len(tlm.calls) == paid  # re-sent from the ledger: TLM not paid again
    landed = stored(lf)
    assert set(landed) == set(seeded.pairs) and all(ts == starts[t] for t, ts in landed.items())


@V416
def test_labels_go_in_the_same_ingestion_batches(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox
) -> None:
    lf = langfuse_sandbox
    seeded = seed_pairs(lf, 30)
    r = run(label_score=True)
    assert r.error is None and r.report.ok and r.report.labels_failed == 0
    assert [x.status for x in lf.faults.requests if x.endpoint == "ingestion"] == [207]
    starts = trace_starts(lf)
    for name in ("trust_score", "trust_score_label"):
        landed = stored(lf, name)
        assert set(landed) == set(seeded.pairs)
        assert all(ts == starts[t] for t, ts in landed.items())
    assert lf.faults.count("scores.create") == 0


@V416
def test_ingestion_batches_take_slots_of_their_own_budget_not_the_general_apis(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Langfuse counts POST ingestion in its "ingestion" bucket, not the general API's: each
    request takes a slot of the limit of its own bucket (slots barely decay here, so the
    limits' active slots count the requests)."""
    from prefect import get_client

    lf = langfuse_sandbox
    seed_pairs(lf, 12)
    monkeypatch.setenv("TRUST_EVAL_PAGE_SIZE", "5")  # 3 chunks: 3 batches
    with (
        global_limit("lf-general", 1000, decay=0.001) as general,
        global_limit("lf-ingestion", 1000, decay=0.001) as ingestion,
    ):
        monkeypatch.setenv("TRUST_EVAL_LANGFUSE_RATE_LIMIT", general)
        monkeypatch.setenv("TRUST_EVAL_LANGFUSE_INGESTION_RATE_LIMIT", ingestion)
        r = run()
        assert r.error is None and r.report.uploaded == 12
        with get_client(sync_client=True) as client:
            taken = {
                name: client.read_global_concurrency_limit_by_name(name).active_slots
                for name in (general, ingestion)
            }
    batches = lf.faults.count("ingestion")
    assert batches == 3
    assert taken == {general: len(lf.faults.requests) - batches, ingestion: batches}


@ON_BOTH_SERVERS
def test_a_suspended_project_fails_in_one_line_and_the_next_run_writes_without_paying(
    langfuse_sandbox: LangfuseSandbox, tlm: TLMSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Langfuse answers 403 "Ingestion suspended: Usage threshold exceeded" to every write of
    a project over its plan's usage. Not a refused key: the run fails naming the threshold and
    what to do; what TLM scored stays in the ledger as not taken, and the run after the
    suspension is lifted writes it without paying TLM again."""
    monkeypatch.setenv("TRUST_EVAL_PAGE_SIZE", "5")
    lf = langfuse_sandbox
    seeded = seed_pairs(lf, 12)
    lf.set_ingestion_suspended(True)
    r = run()

    assert r.error is not None
    message = str(r.error)
    assert "\n" not in message and "refused the API keys" not in message
    assert "suspended ingestion" in message and "usage threshold exceeded" in message
    assert "upgrade" in message and "without paying TLM again" in message
    paid = len(tlm.calls)
    assert paid > 0 and lf.store.all_scores() == []
    assert ids_in(r.report.failed_to_upload) == ids_in(r.report.failed_to_upload) & set(
        seeded.pairs
    )
    assert len(ids_in(r.report.failed_to_upload)) == paid
    writes = [x for x in lf.faults.requests if x.endpoint in ("ingestion", "scores.create")]
    assert writes and all(x.status == 403 for x in writes)
    assert len(writes) <= 3  # one try per chunk at TLM, never one per score

    lf.set_ingestion_suspended(False)
    again = run()
    assert again.error is None and again.report.ok
    assert again.report.resent == paid and len(tlm.calls) == 12  # only the unpaid rest
    starts = trace_starts(lf)
    landed = stored(lf)
    assert set(landed) == set(seeded.pairs) and all(ts == starts[t] for t, ts in landed.items())
