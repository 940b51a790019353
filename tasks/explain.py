"""``explain=low_trust``: scores carry no logged explanation; a score below the threshold gets
one ``TLM.get_explanation`` call, on the run's own TLM client, right after it is scored.

cleanlab-tlm 1.1.39's ``get_explanation_async(prompt=, response=, tlm_result=)`` posts
``{"prompt", "response": {"response": <response>, **tlm_result}, "options": <the client's
options>}`` to ``/api/v1/tlm_explanation/get_explanation`` through the client's rate handler
(ours, paced) and reads ``{"explanation": str}`` back. It sends no quality preset. The result
given is the score alone (``{"trustworthiness_score": s}``): all the endpoint needs, and what
any score path (TLM, or TLM with criteria) can give. The call
happens inside the scoring item, so the explanation lands with its score, in the same chunk:
the ledger records both at once, and a re-run pays for neither.

What the scores carry as comment: below the threshold, the explanation (or, when its call
failed, a line saying so: the score stays, paid once); at or above it, :func:`not_explained`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tasks.models import Pair, Scored

if TYPE_CHECKING:
    from cleanlab_tlm import TLM


def not_explained(threshold: float) -> str:
    """The comment of a score at or above the threshold under ``explain=low_trust``."""
    return f"not explained: explain=low_trust explains scores below {threshold:g}"


def explanation_failed(why: str) -> str:
    return f"explanation not received from TLM ({why}): rescore to ask again"


@dataclass(slots=True)
class ExplainCount:
    """A chunk's explanation calls: how many, their characters, how many failed."""

    calls: int = 0
    chars: int = 0
    failed: int = 0


async def explain(
    tlm: TLM, pair: Pair, scored: Scored, below: float, count: ExplainCount
) -> Scored:
    """``scored`` with its comment under ``explain=low_trust``: TLM's explanation when the
    score is below ``below`` (one call, given the score as the result to explain), else
    :func:`not_explained`."""
    if scored.score >= below:
        return Scored(scored.pair, scored.score, not_explained(below))
    count.calls += 1
    count.chars += len(pair.prompt) + len(pair.response)
    try:
        result: Any = {"trustworthiness_score": scored.score}
        text = await tlm.get_explanation_async(
            prompt=pair.prompt, response=pair.response, tlm_result=result
        )
    except asyncio.CancelledError:  # the run stopped: the score was paid, it lands all the same
        count.failed += 1
        return Scored(scored.pair, scored.score, explanation_failed("the run stopped"))
    except Exception as err:  # the score was paid: it stays, saying why it has no explanation
        count.failed += 1
        detail = (str(getattr(err, "message", "") or err) or type(err).__name__)[:300]
        return Scored(scored.pair, scored.score, explanation_failed(detail))
    if not isinstance(text, str) or not text:
        count.failed += 1
        return Scored(scored.pair, scored.score, explanation_failed("an empty explanation"))
    return Scored(scored.pair, scored.score, text)
