"""A window run's TLM spend: the budget each chunk must fit before it is sent, and the calls,
tokens and cost of each stage (scoring, explaining) for the report. Pricing: tasks/spend.py."""

from __future__ import annotations

from collections.abc import Callable

from flows.options import EvalOptions
from flows.scoring import Chunk, Scoring
from tasks.config import EXPLAINING_PRESETS, Tuning
from tasks.evals import RAG_LOGS_EXPLANATION as EXPLAINING_RAG
from tasks.explain import ExplainCount
from tasks.failures import Reason
from tasks.models import Bucket, Outcome, Pair, outcome_for
from tasks.report import EvalReport, StageCost
from tasks.score import ScoreResult
from tasks.scorebook import ScoreBook
from tasks.spend import CHEAPEST_EXPLAINING, EXPLAINING, SCORING, Budget, Rates, chars_of, tokens

Land = Callable[[Chunk, ScoreResult | None], None]


class Spending:
    """What a run sends to TLM within its budget, and what each stage cost."""

    def __init__(self, opts: EvalOptions, tuning: Tuning, report: EvalReport) -> None:
        self.opts, self.tuning, self.report = opts, tuning, report
        self.rates = Rates(
            tuning.price_per_1k_tokens,
            tuning.preset_cost(opts.quality_preset),
            tuning.explanation_cost_multiplier,
        )
        # TrustworthyRAG below best/high explains its low tail with one call each
        rag_explains = opts.plan.rag and opts.quality_preset not in EXPLAINING_RAG
        explaining = opts.explain == "low_trust" or rag_explains
        max_cost = None if opts.dry_run else opts.max_cost
        self.budget = Budget(max_cost, self.rates, explaining, plan=opts.plan)
        self.sent_chars: dict[int, int] = {}  # chunk -> characters sent for scoring
        self.score_chars = 0
        self.explained = ExplainCount()
        report.explain, report.max_cost = opts.explain, opts.max_cost

    def admit(
        self, fresh: list[Pair], no: int, at_tlm: Scoring | None
    ) -> tuple[list[Pair], list[Outcome]]:
        """The chunk's units that fit the budget (the chunks at TLM land first when it would
        not fit: what they cost is then known); the rest are over budget, left unscored."""
        b = self.budget
        if b.max_cost is not None and not b.hit and not b.fits(fresh) and at_tlm is not None:
            at_tlm.land_all()
        sent, over = b.admit(fresh, no)
        chars = chars_of(sent, self.opts.plan)
        self.sent_chars[no] = self.sent_chars.get(no, 0) + chars
        self.score_chars += chars
        return sent, [outcome_for(p, Bucket.SKIPPED, Reason.OVER_BUDGET) for p in over]

    def landing(self, land: Land, book: ScoreBook) -> Land:
        """``land``, after counting what the chunk cost (every item sent is counted). A chunk
        that paid for explanations is recorded in the ledger before it is uploaded (as not
        taken yet): a run that dies in between leaves them to be re-sent, not paid again."""

        def landed(chunk: Chunk, result: ScoreResult | None) -> None:
            cost = self.rates.cost(self.sent_chars.pop(chunk.no, 0), self.rates.score_x)
            if result is not None:
                ex, mine = result.explained, self.explained
                mine.calls, mine.chars = mine.calls + ex.calls, mine.chars + ex.chars
                mine.failed += ex.failed
                cost += self.rates.cost(ex.chars, self.rates.explain_x)
                if ex.calls and result.scored:
                    book.record(result.scored, set())
            self.budget.landed(chunk.no, cost)
            land(chunk, result)

        return landed

    def close(self, report: EvalReport) -> None:
        """The report's figures per stage (a dry run's: what it would send, at most)."""
        r, o, rates = report, self.opts, self.rates
        chars = r.would_score_chars if o.dry_run else self.score_chars
        calls = r.would_score if o.dry_run else r.tlm_requests

        def stage(n: int, c: int, x: float) -> StageCost:
            price = rates.price_per_1k_tokens
            return StageCost(
                calls=n,
                tokens=tokens(c, x),
                cost=None if price is None else round(rates.cost(c, x), 6),
            )

        r.stages = {SCORING: stage(calls, chars, rates.score_x)}
        if o.explain != "low_trust":
            return
        ex = self.explained
        r.stages[EXPLAINING] = (
            stage(calls, chars, rates.explain_x) if o.dry_run
            else stage(ex.calls, ex.chars, rates.explain_x)
        )  # fmt: skip
        r.explanations_failed = ex.failed
        preset = o.quality_preset if o.quality_preset in EXPLAINING_PRESETS else CHEAPEST_EXPLAINING
        r.explain_all_preset = preset
        r.explain_all = stage(calls, chars, self.tuning.preset_cost(preset))
