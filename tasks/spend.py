"""What a run's TLM work costs, per stage, and its budget (``max_cost``).

Two stages pay TLM: **scoring** (one call per unit, at the run's preset) and, with
``explain=low_trust``, **explaining** (one ``get_explanation`` call per unit scored below the
threshold). TLM reports no token usage, so tokens are estimated: characters of prompt and
response / 4, times the stage's multiplier (the preset's, ``TRUST_EVAL_PRESET_COST_MULTIPLIERS``;
an explanation's, ``TRUST_EVAL_EXPLANATION_COST_MULTIPLIER``); a cost is tokens / 1000 times
``TRUST_EVAL_PRICE_PER_1K_TOKENS``.

The budget never passes ``max_cost``: a chunk reserves the most it can cost (its scoring, and
with ``explain=low_trust`` an explanation for every unit) before it is sent; what it did not
use comes back when it lands.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from tasks.config import EXPLAINING_PRESETS
from tasks.errors import ConfigError
from tasks.evals import EvalPlan, call_chars
from tasks.models import Pair

SCORING, EXPLAINING = "scoring", "explaining"
CHEAPEST_EXPLAINING = EXPLAINING_PRESETS[-1]  # medium: the cheapest that logs explanations


def check_budget(max_cost: float | None, price_per_1k_tokens: float | None) -> None:
    """A budget is a positive number and has a price to be counted in (one-line refusals)."""
    if max_cost is None:
        return
    if not isinstance(max_cost, int | float) or math.isnan(max_cost) or not max_cost > 0:
        raise ConfigError(f"max_cost must be a number greater than 0, got {max_cost!r}")
    if math.isinf(max_cost):
        raise ConfigError("max_cost must be finite (unset it for no budget)")
    if price_per_1k_tokens is None or price_per_1k_tokens <= 0:
        raise ConfigError(
            "max_cost needs TLM's price: set TRUST_EVAL_PRICE_PER_1K_TOKENS (greater than 0) "
            "to the price per 1000 tokens of your TLM plan"
        )


def tokens(chars: int, multiplier: float) -> int:
    return round(chars / 4 * multiplier)


def chars_of(pairs: Sequence[Pair], plan: EvalPlan | None = None) -> int:
    """What the units' score calls send (with RAG evals or criteria: those too)."""
    return sum(call_chars(plan, p.prompt, p.response, p.context) for p in pairs)


@dataclass(frozen=True, slots=True)
class Rates:
    """What a character of prompt and response costs in each stage."""

    price_per_1k_tokens: float | None
    score_x: float  # the run's preset
    explain_x: float  # one get_explanation call

    def cost(self, chars: int, multiplier: float) -> float:
        return tokens(chars, multiplier) / 1000 * (self.price_per_1k_tokens or 0.0)


@dataclass
class Budget:
    """A run's ``max_cost`` (None: no budget) and what its chunks spent and hold."""

    max_cost: float | None
    rates: Rates
    explaining: bool  # a chunk may pay an explanation per unit (explain=low_trust, RAG)
    plan: EvalPlan | None = None  # RAG evals and criteria: what a call sends
    spent: float = 0.0
    held: dict[int, float] = field(default_factory=dict)  # chunk -> its reservation
    hit: bool = False  # a chunk did not fit: nothing more is sent

    def most(self, pairs: Sequence[Pair]) -> float:
        """The most these units can cost: their scoring, and maybe an explanation each."""
        chars = chars_of(pairs, self.plan)
        explain = self.rates.cost(chars, self.rates.explain_x) if self.explaining else 0.0
        return self.rates.cost(chars, self.rates.score_x) + explain

    @property
    def room(self) -> float:
        if self.max_cost is None:
            return math.inf
        return self.max_cost - self.spent - sum(self.held.values())

    def fits(self, pairs: Sequence[Pair]) -> bool:
        return self.max_cost is None or self.most(pairs) <= self.room + 1e-12

    def admit(self, pairs: list[Pair], chunk: int) -> tuple[list[Pair], list[Pair]]:
        """The longest prefix of ``pairs`` that fits (reserved for ``chunk``), and the rest;
        once one does not fit, nothing more is admitted."""
        if self.max_cost is None or not pairs:
            return pairs, []
        if self.hit:
            return [], pairs
        room, n = self.room, 0
        for p in pairs:
            cost = self.most([p])
            if cost > room + 1e-12:
                break
            room -= cost
            n += 1
        if n < len(pairs):
            self.hit = True
        if n:
            self.held[chunk] = self.held.get(chunk, 0.0) + self.most(pairs[:n])
        return pairs[:n], pairs[n:]

    def landed(self, chunk: int, cost: float) -> None:
        """A chunk came back: its reservation goes, what it cost stays spent."""
        self.held.pop(chunk, None)
        self.spent += cost
