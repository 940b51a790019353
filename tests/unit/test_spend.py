"""What TLM work costs and the budget (tasks/spend.py, flows/spending.py): the prefix a budget
admits, reservations given back, the refusals, and an explanation paid for kept in the ledger
when the run dies before its upload. No server: a ledger in a temporary folder."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flows.options import EvalOptions
from flows.scoring import Chunk
from flows.spending import Spending
from tasks.config import Tuning
from tasks.errors import ConfigError
from tasks.explain import ExplainCount
from tasks.models import Pair, Scored
from tasks.report import EvalReport
from tasks.score import ScoreResult
from tasks.scorebook import Ledger, ScoreBook, Verdict
from tasks.spend import Budget, Rates, check_budget

T0 = datetime(2026, 11, 28, 12, tzinfo=UTC)
RATES = Rates(price_per_1k_tokens=1.0, score_x=1.0, explain_x=4.0)


def pair(i: int, chars: int = 400) -> Pair:
    return Pair(f"t{i}", T0, None, None, "p" * (chars - 100), "r" * 100, "chat")


@pytest.mark.parametrize(
    ("max_cost", "price", "says"),
    [
        (0.0, 1.0, "greater than 0"),
        (-1.0, 1.0, "greater than 0"),
        (math.nan, 1.0, "greater than 0"),
        (math.inf, 1.0, "finite"),
        (5.0, None, "TRUST_EVAL_PRICE_PER_1K_TOKENS"),
        (5.0, 0.0, "TRUST_EVAL_PRICE_PER_1K_TOKENS"),
    ],
)
def test_a_bad_budget_is_one_line(max_cost: float, price: float | None, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as info:
        check_budget(max_cost, price)
    assert "\n" not in str(info.value)
    check_budget(None, None)  # no budget: nothing to check
    check_budget(1.0, 0.5)


def test_the_budget_admits_the_prefix_that_fits_and_then_nothing() -> None:
    budget = Budget(max_cost=0.35, rates=RATES, explaining=False)  # 0.1 a pair (400 chars)
    sent, over = budget.admit([pair(i) for i in range(5)], chunk=1)
    assert [p.trace_id for p in sent] == ["t0", "t1", "t2"] and len(over) == 2
    assert budget.hit and budget.room == pytest.approx(0.05)
    assert budget.admit([pair(9, chars=4)], chunk=2) == ([], [pair(9, chars=4)])  # hit: none


def test_explanations_are_reserved_and_what_was_not_used_comes_back() -> None:
    budget = Budget(max_cost=1.0, rates=RATES, explaining=True)  # a pair: 0.1 + 0.4 at most
    sent, over = budget.admit([pair(0), pair(1)], chunk=1)
    assert len(sent) == 2 and over == [] and budget.room == pytest.approx(0.0)
    assert not budget.fits([pair(2)])
    budget.landed(1, cost=0.2 + 0.4)  # two scores, one explanation
    assert budget.room == pytest.approx(0.4) and budget.spent == pytest.approx(0.6)
    assert budget.fits([pair(2, chars=320)])


def test_an_explanation_paid_for_survives_a_death_before_its_upload(tmp_path: Path) -> None:
    """The chunk is in the ledger (as not taken) before its upload starts: a run killed in
    between leaves the score and its explanation to be re-sent, not paid for again."""
    ledger_url = str(tmp_path)

    def book(run: str) -> ScoreBook:
        ledger = Ledger(ledger_url, "stream", retention_s=1e9)
        return ScoreBook(ledger, "trust_score", read_lag_s=900, run_id=run, warn=print)

    opts = EvalOptions(explain="low_trust", quality_preset="base")
    report = EvalReport(window_start=T0, window_end=T0, tags=["t"], score_name="trust_score")
    spending = Spending(opts, Tuning(), report)
    p = pair(0)
    result = ScoreResult([Scored(p, 0.1, "why it is doubtful")], [], 1)
    result.explained = ExplainCount(calls=1, chars=400)

    def killed(chunk: Chunk, result: ScoreResult | None) -> None:
        raise SystemExit("killed before the upload")

    with pytest.raises(SystemExit):
        spending.landing(killed, book("run-1"))(Chunk(1, 1, []), result)

    after = book("run-2")
    after.load([T0.date()])
    assert after.verdict(p.key) is Verdict.RESEND  # at once, not after the read lag
    again, fresh, _ = after.split([p], rescore=False)
    assert fresh == [] and [(s.score, s.explanation) for s in again] == [
        (0.1, "why it is doubtful")
    ]
