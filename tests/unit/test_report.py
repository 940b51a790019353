"""The run report's accounting (one bucket per unit, histogram, low-trust count, means), the
lowest-N table, and the text helpers not already covered by test_poison_and_text.py."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from tasks.failures import Reason
from tasks.models import Bucket, Outcome, Pair, outcome_for, preview
from tasks.report import (
    WHY_CHARS,
    EvalReport,
    Lowest,
    LowTrustRow,
    event_payload,
    histogram_lines,
    lowest_table,
    md_code,
    md_escape,
    md_link,
    short_id,
    summary_markdown,
    text_table,
)

T0 = datetime(2026, 11, 28, tzinfo=UTC)


def report(threshold: float = 0.5) -> EvalReport:
    return EvalReport(
        window_start=T0,
        window_end=T0,
        tags=["trivia"],
        score_name="trust_score",
        low_trust_threshold=threshold,
    )


def unit(key: str, observation_id: str | None = None) -> Pair:
    return Pair(key, T0, "trivia", None, "Q?", "A.", "chat", observation_id)


def uploaded(key: str, score: float, observation_id: str | None = None) -> Outcome:
    return outcome_for(unit(key, observation_id), Bucket.UPLOADED, score=score, explanation="e")


def settled(key: str, bucket: Bucket, observation_id: str | None = None) -> Outcome:
    return outcome_for(unit(key, observation_id), bucket, Reason.NOT_SAMPLED)


# --------------------------------------------------------------------------- add and counts


def test_each_bucket_is_counted_where_it_belongs() -> None:
    r = report()
    for outcome in [
        settled("s1", Bucket.ALREADY_SCORED),
        settled("s2", Bucket.SKIPPED),
        settled("s3", Bucket.SKIPPED, observation_id="gen-3"),
        settled("s4", Bucket.FAILED_TO_SCORE),
        settled("s5", Bucket.FAILED_TO_UPLOAD),
        uploaded("s6", 0.75),
    ]:
        r.add(outcome)
    assert r.counts() == {
        "already_scored": 1,
        "skipped": 2,
        "failed_to_score": 1,
        "uploaded": 1,
        "failed_to_upload": 1,
        "would_score": 0,
    }
    assert r.accounted() == 6
    # the key is the scored unit: the observation in observation scope
    assert [ids for ids in r.skipped.values()] == [["s2", "gen-3"]]
    assert list(r.failed_to_score.values()) == [["s4"]]
    assert list(r.failed_to_upload.values()) == [["s5"]]
    assert (r.uploaded, r.score_sum, r.mean_score, r.low_trust_count) == (1, 0.75, 0.75, 0)
    assert r.histogram == [0, 0, 0, 0, 0, 0, 0, 1, 0, 0]


def test_accounted_is_the_number_of_outcomes_added() -> None:
    r = report()
    buckets = list(Bucket)
    for i in range(53):
        b = buckets[i % len(buckets)]
        r.add(uploaded(f"t{i}", (i % 11) / 10) if b is Bucket.UPLOADED else settled(f"t{i}", b))
        assert r.accounted() == i + 1
    r.would_score = 4  # a dry run's paired units count too
    assert r.accounted() == 57


def test_the_histogram_has_ten_bins_with_both_ends_inside() -> None:
    r = report()
    scores = [0.0, 0.05, 0.0999, 0.1, 0.3, 0.5, 0.7, 0.95, 0.999, 1.0]
    for i, s in enumerate(scores):
        r.add(uploaded(f"t{i}", s))
    # 0.0 is in the first bin, 1.0 in the last; a bin's lower bound is its own
    assert r.histogram == [3, 1, 0, 1, 0, 1, 0, 1, 0, 3]
    assert sum(r.histogram) == r.uploaded == len(scores)


def test_low_trust_means_strictly_below_the_threshold() -> None:
    r = report(threshold=0.5)
    for i, s in enumerate([0.4999, 0.5, 0.5001, 0.0, 1.0]):
        r.add(uploaded(f"t{i}", s))
    assert r.low_trust_count == 2
    high = report(threshold=0.8)
    for i, s in enumerate([0.7999, 0.8, 0.9]):
        high.add(uploaded(f"t{i}", s))
    assert high.low_trust_count == 1


def test_the_mean_is_over_uploaded_scores_only() -> None:
    assert report().mean_score is None
    r = report()
    r.add(settled("f", Bucket.FAILED_TO_SCORE))
    r.add(settled("a", Bucket.ALREADY_SCORED))
    r.add_existing(0.1)
    assert (r.uploaded, r.mean_score) == (0, None)
    for i, s in enumerate([0.25, 0.5, 0.75, 0.5]):
        r.add(uploaded(f"t{i}", s))
    assert (r.uploaded, r.score_sum, r.mean_score) == (4, 2.0, 0.5)


def test_ok_only_without_failures_or_errors() -> None:
    r = report()
    r.add(settled("s", Bucket.SKIPPED))
    r.add(settled("a", Bucket.ALREADY_SCORED))
    r.add(uploaded("u", 0.1))
    assert r.ok is True
    for bucket in (Bucket.FAILED_TO_SCORE, Bucket.FAILED_TO_UPLOAD):
        failing = report()
        failing.add(settled("f", bucket))
        assert failing.ok is False
    errored = report()
    errored.errors.append("TLM refused the key")
    assert errored.ok is False


def test_reasons_group_the_skips_and_failures() -> None:
    r = report()
    for key, bucket, reason, detail in [
        ("a", Bucket.SKIPPED, Reason.NOT_SAMPLED, ""),
        ("b", Bucket.SKIPPED, Reason.NO_GENERATION, ""),
        ("c", Bucket.SKIPPED, Reason.NOT_SAMPLED, ""),
        ("d", Bucket.SKIPPED, None, ""),
        ("e", Bucket.FAILED_TO_SCORE, Reason.TLM_ERROR, "timeout"),
        ("f", Bucket.FAILED_TO_UPLOAD, None, ""),
        ("g", Bucket.ALREADY_SCORED, Reason.PENDING, ""),
        ("h", Bucket.ALREADY_SCORED, None, ""),
    ]:
        r.add(outcome_for(unit(key), bucket, reason, detail))
    assert r.skipped == {"not_sampled": ["a", "c"], "no_generation": ["b"], "unknown": ["d"]}
    assert r.failed_to_score == {"tlm_error": ["e"]}
    assert r.failed_to_upload == {"unknown": ["f"]}
    assert r.why(Bucket.FAILED_TO_SCORE, "tlm_error") == "tlm_error: timeout"
    assert r.why(Bucket.SKIPPED, "not_sampled") == "not_sampled"
    assert (r.already_scored, r.already_pending) == (2, 1)


def test_a_reason_keeps_its_first_detail_and_groups_by_its_code() -> None:
    """A skip's detail says what to fix ("no prompt among keys [...]"): the report keeps the
    first one per reason, and groups by the reason's code, so details never split a group."""
    r = report()
    r.add(
        outcome_for(
            unit("a"), Bucket.SKIPPED, Reason.UNRECOGNISED_INPUT, "no prompt among keys ['q']"
        )
    )
    r.add(
        outcome_for(
            unit("b"), Bucket.SKIPPED, Reason.UNRECOGNISED_INPUT, "no prompt among keys ['x']"
        )
    )
    assert r.skipped == {"unrecognised_input": ["a", "b"]}
    assert r.why(Bucket.SKIPPED, "unrecognised_input") == (
        "unrecognised_input: no prompt among keys ['q']"
    )
    assert "no prompt among keys" in summary_markdown(r)


def test_existing_scores_are_reported_apart_from_uploads() -> None:
    r = report(threshold=0.5)
    for value in [None, 0.25, 0.5, 0.75, None, 0.0]:
        r.add_existing(value)
    assert (r.existing_scored, r.existing_sum, r.existing_low) == (4, 1.5, 2)
    assert (r.uploaded, r.score_sum, r.low_trust_count, r.accounted()) == (0, 0.0, 0, 0)


def test_pair_sources_are_generation_or_root() -> None:
    r = report()
    r.count_sources(["generation", "chat", "generation", "observe_args", "text"])
    r.count_sources([])
    assert r.pair_sources == {"generation": 2, "root input/output": 3}


def test_the_event_payload_gives_the_low_trust_share_of_uploads() -> None:
    r = report(threshold=0.5)
    for i, s in enumerate([0.1, 0.2, 0.9]):
        r.add(uploaded(f"u{i}", s))
    for key, bucket in [("f", Bucket.FAILED_TO_SCORE), ("g", Bucket.FAILED_TO_UPLOAD),
                        ("s", Bucket.SKIPPED), ("a", Bucket.ALREADY_SCORED)]:  # fmt: skip
        r.add(settled(key, bucket))
    r.fetched = r.accounted()
    payload = event_payload(r)
    assert {k: payload[k] for k in ("fetched", "scored", "uploaded", "already_scored", "skipped",
                                    "failures", "low_trust_count", "low_trust_share", "ok")} == {
        "fetched": 7, "scored": 4, "uploaded": 3, "already_scored": 1, "skipped": 1,
        "failures": 2, "low_trust_count": 2, "low_trust_share": 0.6667, "ok": False,
    }  # fmt: skip
    assert payload["mean_score"] == pytest.approx(0.4)
    assert payload["window_start"] == "2026-11-28T00:00:00+00:00"
    empty = event_payload(report())
    assert (empty["low_trust_share"], empty["mean_score"], empty["ok"]) == (0.0, None, True)


# --------------------------------------------------------------------------- Lowest


def link(trace_id: str, observation_id: str | None) -> str:
    return f"https://lf.example/t/{trace_id}" + (f"?o={observation_id}" if observation_id else "")


def test_lowest_keeps_the_n_lowest_lowest_first() -> None:
    low = Lowest(3)
    for i, s in enumerate([0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.95]):
        low.offer(uploaded(f"t{i}", s))
    rows = low.rows(link)
    assert [(r.trace_id, r.score) for r in rows] == [("t1", 0.1), ("t5", 0.2), ("t3", 0.3)]
    first = rows[0]
    assert (first.name, first.explanation, first.start_time) == ("trivia", "e", T0)
    assert (first.url, first.question, first.answer) == ("https://lf.example/t/t1", None, None)


def test_lowest_with_fewer_offers_than_n_keeps_them_all() -> None:
    low = Lowest(5)
    assert low.rows(link) == []
    low.offer(uploaded("a", 0.6))
    low.offer(uploaded("b", 0.4))
    assert [r.trace_id for r in low.rows(link)] == ["b", "a"]


def test_lowest_tells_observations_of_one_trace_apart() -> None:
    low = Lowest(2)
    low.offer(uploaded("t", 0.2, observation_id="g2"))
    low.offer(uploaded("t", 0.2, observation_id="g1"))
    low.offer(uploaded("u", 0.9))
    rows = low.rows(link)
    assert [(r.trace_id, r.observation_id) for r in rows] == [("t", "g1"), ("t", "g2")]
    assert [r.url for r in rows] == ["https://lf.example/t/t?o=g1", "https://lf.example/t/t?o=g2"]


def test_lowest_ties_do_not_depend_on_the_order_of_offers() -> None:
    outcomes = [uploaded(k, s) for k, s in [("a", 0.5), ("b", 0.5), ("c", 0.5), ("d", 0.2),
                                             ("e", 0.9)]]  # fmt: skip
    seen = set()
    for order in itertools.permutations(outcomes):
        low = Lowest(3)
        for o in order:
            low.offer(o)
        seen.add(tuple((r.trace_id, r.score) for r in low.rows(link)))
    (rows,) = seen  # the same rows whatever the order
    assert rows[0] == ("d", 0.2)
    assert [s for _, s in rows[1:]] == [0.5, 0.5]
    assert [k for k, _ in rows[1:]] == sorted(k for k, _ in rows[1:])


# --------------------------------------------------------------------------- text helpers


def test_md_escape_is_one_escaped_line_cut_before_escaping() -> None:
    assert md_escape(None) == md_escape("") == ""
    assert md_escape("  a\n\tb  \r\n c ") == "a b c"
    assert md_escape(r"\`*_{}[]()<>#+!|~") == "".join("\\" + ch for ch in r"\`*_{}[]()<>#+!|~")
    assert md_escape("plain - text. 50% = ok") == "plain - text. 50% = ok"
    assert md_escape("abcdef", limit=6) == "abcdef"
    assert md_escape("abcdefg", limit=6) == "abcde…"
    assert md_escape("a*cdefg", limit=4) == "a\\*c…"  # the limit counts the text, not escapes
    assert md_code("x" * 100) == "x" * 79 + "…"  # ids: 80 characters
    assert md_code("trace_1") == "trace\\_1"


def test_md_link_escapes_its_text_and_quotes_its_target() -> None:
    assert md_link("trace [1]", "https://lf.example/t/a b?x=(1)") == (
        "[trace \\[1\\]](https://lf.example/t/a%20b?x=%281%29)"
    )
    assert md_link("t", "https://lf.example/p/t?o=g-1&v=2#top") == (
        "[t](https://lf.example/p/t?o=g-1&v=2#top)"
    )


@pytest.mark.parametrize(
    ("hist", "bars"),
    [([0] * 10, [0] * 10), ([1, 0, 0, 0, 0, 0, 0, 0, 0, 2], [15, 0, 0, 0, 0, 0, 0, 0, 0, 30])],
)
def test_histogram_lines_label_each_bin_and_scale_to_the_largest(
    hist: list[int], bars: list[int]
) -> None:
    lines = histogram_lines(hist)
    assert lines[0] == f"0.0–0.1 | {'█' * bars[0]} {hist[0]}"
    assert lines[9] == f"0.9–1.0 | {'█' * bars[9]} {hist[9]}"
    assert [line.count("█") for line in lines] == bars


def test_the_lowest_table_shows_why_before_the_answer_within_the_first_screen() -> None:
    long = (
        "The capital of Australia is Canberra, not Sydney; the answer names the largest city. " * 4
    )
    row = LowTrustRow(
        trace_id="0f3a9c2e5b7d4e1f8a6c2b9d0e4f7a13", name="q", score=0.1, explanation=long,
        start_time=T0, url="https://lf/t", question="What is the capital of Australia? " * 5,
        answer="Sydney is the capital of Australia, of course. " * 5,
    )  # fmt: skip
    (cells,) = lowest_table([row])
    assert list(cells) == ["rank", "score", "trace", "explanation", "answer", "question"]
    assert cells["explanation"].startswith("The capital of Australia is Canberra")
    assert cells["explanation"].endswith("…") and len(cells["explanation"]) == WHY_CHARS
    # what the first screen holds: at 1400 px the UI leaves about 830 px to the table, cells
    # do not wrap, ~6.6 px a character plus ~30 px padding a column (measured on the screenshot)
    first_screen = ["rank", "score", "trace", "explanation", "answer"]
    shown = ["1", "0.100", short_id(row.trace_id), cells["explanation"], cells["answer"]]
    width = sum(max(len(h), len(c)) * 6.6 + 30 for h, c in zip(first_screen, shown, strict=True))
    assert width <= 830, width
    text = text_table(EvalReport(window_start=T0, window_end=T0, tags=["t"], score_name="s",
                                 lowest=[row]))  # fmt: skip
    header, line, link = text.splitlines()
    assert header.split()[-1] == "why" and line.endswith(preview(long, 50))
    assert link == "Lowest in Langfuse (the full explanation): https://lf/t"
