"""The scores a run writes besides trust: TrustworthyRAG's evals, the user's criteria, and the
cause of a low-trust answer. Pure rules (names, the cause, reading an answer) and the clients.

- With ``rag_evals``, a unit with retrieved context is scored by ONE ``TrustworthyRAG.score``
  call with its default evals (each criterion an extra ``Eval``: TrustworthyRAG takes no
  ``custom_eval_criteria``); the others by TLM, criteria as ``custom_eval_criteria``.
- Each eval and criterion is written as ``{score_name}_{name}`` (NUMERIC 0-1); a low-trust unit
  with RAG evals also gets ``{score_name}_cause`` (CATEGORICAL, :func:`cause_of`).
- An eval TLM answers with ``None`` (a tool-call response), NaN or outside [0, 1] is not
  written: it is counted as failed, by eval and reason; the unit's other scores land.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

RAG_EVALS = ("context_sufficiency", "response_groundedness", "query_ease", "response_helpfulness")
# the cause of a low-trust answer: the first of these evals below the threshold names it
CAUSE_RULE: tuple[tuple[str, str], ...] = (
    ("context_sufficiency", "retrieval_gap"),
    ("response_groundedness", "hallucination"),
    ("query_ease", "unclear_question"),
    ("response_helpfulness", "unhelpful"),
)
OTHER = "other"
CAUSES = (*(c for _, c in CAUSE_RULE), OTHER)
CAUSE = "cause"  # the suffix of the cause score's name
RESERVED = frozenset(RAG_EVALS) | {CAUSE, "label", "trustworthiness", "response"}
CRITERION_NAME = re.compile(r"[a-z0-9][a-z0-9_]*")
MAX_CRITERIA_CHARS = 2000  # a criterion's text: TLM reads it with every item it scores
MAX_CRITERIA = 10
CONFIG_NAME_MAX = 35  # Langfuse's limit for score config names (v4.16)


def cause_of(evals: Mapping[str, float | None], threshold: float) -> str:
    """The cause of a low-trust answer: the first eval of :data:`CAUSE_RULE` whose score is
    below ``threshold`` names it; none below (or none scored): ``other``."""
    for name, cause in CAUSE_RULE:
        value = evals.get(name)
        if value is not None and value < threshold:
            return cause
    return OTHER


def criteria_problem(score_name: str, names: Sequence[str], texts: Sequence[str]) -> str | None:
    """Why these criteria cannot be written next to ``score_name`` (one line), or None."""
    seen: set[str] = set()
    for name, text in zip(names, texts, strict=True):
        if not name:
            return "criteria: a criterion needs a name"
        if not CRITERION_NAME.fullmatch(name):
            return (
                f"criteria: {name!r} is not a slug (lower-case letters, digits and _, "
                "starting with a letter or digit)"
            )
        if name in seen:
            return f"criteria: {name!r} is given twice"
        seen.add(name)
        if name in RESERVED:
            return f"criteria: {name!r} is reserved (the RAG evals, cause, label)"
        full = f"{score_name}_{name}"
        if len(full) > CONFIG_NAME_MAX:
            return (
                f"criteria: {full!r} is {len(full)} characters, over Langfuse's "
                f"{CONFIG_NAME_MAX} for a score config name: shorten {name!r} or score_name"
            )
        if not text.strip():
            return f"criteria: {name!r} has no criteria text"
        if len(text) > MAX_CRITERIA_CHARS:
            n = len(text)
            return f"criteria: the text of {name!r} is {n} characters, over {MAX_CRITERIA_CHARS}"
    if len(names) > MAX_CRITERIA:
        return f"criteria: at most {MAX_CRITERIA} criteria, got {len(names)}"
    return None


@dataclass(frozen=True, slots=True)
class EvalPlan:
    """What a run scores besides trust, and the names it writes them under."""

    score_name: str
    rag: bool = False
    criteria: tuple[tuple[str, str], ...] = ()  # (name, criteria text)
    threshold: float = 0.5  # below it a unit is low trust: explained (RAG at medium), a cause

    def name(self, suffix: str) -> str:
        return f"{self.score_name}_{suffix}"

    @property
    def eval_names(self) -> tuple[str, ...]:
        return tuple(self.name(e) for e in RAG_EVALS) if self.rag else ()

    @property
    def criterion_names(self) -> tuple[str, ...]:
        return tuple(self.name(n) for n, _ in self.criteria)

    @property
    def cause_name(self) -> str | None:
        return self.name(CAUSE) if self.rag else None

    @property
    def numeric_names(self) -> tuple[str, ...]:
        """Every NUMERIC score name besides trust: evals, then criteria."""
        return self.eval_names + self.criterion_names

    @property
    def all_names(self) -> tuple[str, ...]:
        """Every name a run may write (the ledger and the look-ups cover them all)."""
        cause = (self.cause_name,) if self.cause_name else ()
        return (self.score_name, *self.numeric_names, *cause)

    @property
    def extra(self) -> bool:
        return self.rag or bool(self.criteria)

    def required(self, rag_unit: bool) -> tuple[str, ...]:
        """The names a unit must carry to be done (the cause is derived, not required)."""
        evals = self.eval_names if rag_unit else ()
        return (self.score_name, *evals, *self.criterion_names)


@dataclass(slots=True)
class Extra:
    """What one answer said besides trust: scores by full name, failed evals by full name."""

    scores: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # full name -> reason


def _value(raw: Any) -> tuple[float | None, str | None]:
    """A score as written, or why not."""
    if raw is None:
        return None, "none"
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None, "not a number"
    value = float(raw)
    if math.isnan(value):
        return None, "nan"
    if not 0.0 <= value <= 1.0:
        return None, "out of range"
    return value, None


def read_rag(plan: EvalPlan, answer: Mapping[str, Any]) -> Extra:
    """The evals and criteria of a ``TrustworthyRAGScore`` (``{name: {"score": ...}}``)."""
    out = Extra()
    for name in (*RAG_EVALS, *(n for n, _ in plan.criteria)):
        entry = answer.get(name)
        if not isinstance(entry, Mapping):
            out.failed[plan.name(name)] = "missing"
            continue
        value, why = _value(entry.get("score"))
        if why is not None:
            error = (
                entry.get("log", {}).get("error") if isinstance(entry.get("log"), dict) else None
            )
            out.failed[plan.name(name)] = "error" if error else why
        else:
            assert value is not None
            out.scores[plan.name(name)] = value
    return out


def read_criteria(plan: EvalPlan, log: Mapping[str, Any]) -> Extra:
    """The criteria of a TLM answer's ``log.custom_eval_criteria`` (``[{name, score}]``)."""
    out = Extra()
    given = log.get("custom_eval_criteria")
    rows = {
        r.get("name"): r for r in (given if isinstance(given, list) else []) if isinstance(r, dict)
    }
    for name, _ in plan.criteria:
        row = rows.get(name)
        if row is None:
            out.failed[plan.name(name)] = "missing"
            continue
        value, why = _value(row.get("score"))
        if why is not None:
            out.failed[plan.name(name)] = why
        else:
            assert value is not None
            out.scores[plan.name(name)] = value
    return out


def rag_cause(plan: EvalPlan, trust: float, scores: Mapping[str, float]) -> str | None:
    """The cause of a RAG unit below the threshold (None above it, or without RAG)."""
    if not plan.rag or trust >= plan.threshold:
        return None
    evals = {e: scores.get(plan.name(e)) for e in RAG_EVALS}
    return cause_of(evals, plan.threshold)


# --------------------------------------------------------------------------- the clients


def tlm_options(plan: EvalPlan | None, *, explain: bool = True) -> dict[str, Any]:
    """TLM's options: the explanation logged, criteria as ``custom_eval_criteria``."""
    options: dict[str, Any] = {"log": ["explanation"]} if explain else {}
    if plan is not None and plan.criteria:
        options["custom_eval_criteria"] = [{"name": n, "criteria": c} for n, c in plan.criteria]
    return options


RAG_LOGS_EXPLANATION = frozenset({"best", "high"})  # cleanlab-tlm refuses the log otherwise


def make_rag(plan: EvalPlan, *, api_key: str, quality_preset: str, timeout_s: float) -> Any:
    """A ``TrustworthyRAG`` client with the default evals and each criterion as an extra
    ``Eval`` (query, context and response in its criteria's words). Its explanation is logged
    only at best/high (the client refuses it at construction otherwise)."""
    from cleanlab_tlm.utils.rag import Eval, TrustworthyRAG, get_default_evals

    evals = get_default_evals() + [
        Eval(
            name=name,
            criteria=f"{text}\nJudge the Response to the Query, given the Context.",
            query_identifier="Query",
            context_identifier="Context",
            response_identifier="Response",
        )
        for name, text in plan.criteria
    ]
    explain = quality_preset in RAG_LOGS_EXPLANATION
    return TrustworthyRAG(
        quality_preset=quality_preset,  # type: ignore[arg-type]
        api_key=api_key,
        options={"log": ["explanation"]} if explain else None,
        timeout=timeout_s,
        verbose=False,
        evals=evals,
    )


def default_eval_chars() -> int:
    """Characters of the default evals' criteria, sent with every TrustworthyRAG call."""
    from cleanlab_tlm.utils.rag import get_default_evals

    return sum(len(e.criteria) for e in get_default_evals())


def call_chars(plan: EvalPlan | None, prompt: str, response: str, context: str | None) -> int:
    """Characters one score call sends, as the dry run's estimate counts them: prompt and
    response; with RAG evals and context, the query, the context and every eval's criteria;
    else each criterion's name and text."""
    n = len(prompt) + len(response)
    if plan is None or not plan.extra:
        return n
    if plan.rag and context is not None:
        criteria = sum(len(c) + 60 for _, c in plan.criteria)  # + the Eval's framing line
        return n + len(context) * 2 + default_eval_chars() + criteria
    return n + sum(len(name) + len(c) for name, c in plan.criteria)
