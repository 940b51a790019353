"""The parameters of a window run besides its window and tags: one typed model shared by the window
flow, the backfill and the CLI. Its bounds and choices go into the deployment's parameter schema,
so the Prefect UI shows them as a form and the server refuses a bad value when a run is created."""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from tasks.errors import ConfigError
from tasks.evals import MAX_CRITERIA_CHARS, EvalPlan, criteria_problem

CONFIG_NAME = re.compile(r"[A-Za-z0-9_ .()\-]{1,35}")  # Langfuse's rule for score config names
Share = Annotated[float, Field(ge=0.0, le=1.0)]


class Criterion(BaseModel):
    """A criterion of the user's own, scored by TLM for every unit: ``{score_name}_{name}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="A slug: lower-case letters, digits and _.")
    criteria: str = Field(
        description=f"What a good response does, in words (at most {MAX_CRITERIA_CHARS} "
        "characters)."
    )


class EvalOptions(BaseModel):
    """How a window is evaluated: what is scored, how, and who hears of low trust."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    score_name: str = Field(
        default="trust_score",
        min_length=1,
        max_length=200,
        description="Name of the score written to each trace in Langfuse.",
    )
    quality_preset: Literal["best", "high", "medium", "low", "base"] = Field(
        default="medium",
        description="TLM quality preset. Higher presets cost more and take longer; low and "
        "base log no explanation with a score (use explain=low_trust with them).",
    )
    rescore: bool = Field(
        default=False, description="Score again the traces that already carry the score (pays TLM)."
    )
    max_traces: int | None = Field(
        default=None, ge=1, description="At most this many traces go to TLM per window (cost cap)."
    )
    sample_rate: float = Field(
        default=1.0,
        gt=0.0,
        le=1.0,
        description="Share of traces to score, chosen the same way on every run.",
    )
    dry_run: bool = Field(
        default=False,
        description="Fetch and pair only, call no TLM, write nothing; estimates the cost.",
    )
    environment: list[str] | None = Field(
        default=None, description="Only traces of these Langfuse environments (default: all)."
    )
    scope: Literal["trace", "generation"] = Field(
        default="trace",
        description="'trace': one score per trace; 'generation': one per GENERATION observation.",
    )
    low_trust_threshold: Share = Field(
        default=0.5, description="Scores below this count as low trust (report, review, alert)."
    )
    score_config: bool = Field(
        default=True,
        description="Attach the scores to a numeric Langfuse score config (made once).",
    )
    label_score: bool = Field(
        default=False,
        description="Also write a categorical score named after score_name + '_label': "
        "trustworthy, review or untrustworthy.",
    )
    untrustworthy_below: Share = Field(
        default=0.3, description="With label_score: below this the label is 'untrustworthy'."
    )
    review_queue: str | None = Field(
        default=None,
        min_length=1,
        description="Langfuse annotation queue that receives the low-trust traces, once each.",
    )
    review_lowest_n: int | None = Field(
        default=None, ge=1, description="Queue at most this many low-trust traces, lowest first."
    )
    alert_low_trust_share: Share | None = Field(
        default=0.2,
        description="Emit a low-trust event (which can notify people) when this share of the "
        "scored traces is below the threshold; unset: never.",
    )

    review_score: str | None = Field(
        default="trust_verdict",
        min_length=1,
        max_length=35,
        description="Name of the annotation score reviewers set on queued traces: CATEGORICAL "
        "'correct'/'incorrect' (made once, offered by the queue), or an existing BOOLEAN "
        "(true: correct) or NUMERIC 0/1 (1: correct) config of that name. Unset: verdicts "
        "are not read.",
    )
    review_days: int = Field(
        default=7,
        ge=1,
        le=90,
        description="Verdicts are read for the traces scored in this many past days.",
    )
    review_target_precision: float = Field(
        default=0.8,
        gt=0.0,
        le=1.0,
        description="Share of flagged traces reviewers should find incorrect: the suggested "
        "threshold is the highest whose precision reaches it.",
    )
    trend_days: int = Field(
        default=30, ge=2, le=60, description="Days shown side by side in the trust trend."
    )
    drift_points: float = Field(
        default=10.0,
        gt=0.0,
        le=100.0,
        description="A day whose low-trust share exceeds the mean of the 7 days before it by "
        "more than this many percentage points emits a trust.drift event.",
    )
    explain: Literal["all", "low_trust"] = Field(
        default="all",
        description="'all': every score carries TLM's explanation (logged with the score: "
        "medium, high or best); 'low_trust': scores carry none, and only those below "
        "low_trust_threshold get one (one explanation call each).",
    )
    max_cost: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="Most a run may spend at TLM (in the currency of "
        "TRUST_EVAL_PRICE_PER_1K_TOKENS); a backfill's total. Traces past it are left "
        "over_budget for the next run. Unset: no budget.",
    )
    rag_evals: bool = Field(
        default=False,
        description="Score traces with retrieved context with TrustworthyRAG (one call): "
        "context_sufficiency, response_groundedness, query_ease, response_helpfulness as "
        "score_name + '_' + eval, and a cause for each low-trust one.",
    )
    criteria: list[Criterion] = Field(
        default_factory=list,
        description="Criteria of your own, each written as score_name + '_' + name (0-1); "
        "on the CLI: --criteria 'name=what a good response does' (repeatable).",
    )

    @field_validator("criteria", mode="before")
    @classmethod
    def _criteria_given_as_text(cls, value: object) -> object:
        """``name=criteria`` text (the CLI's form) as a criterion."""
        if not isinstance(value, list):
            return value
        out: list[object] = []
        for item in value:
            if isinstance(item, str):
                name, _, text = item.partition("=")
                item = {"name": name.strip(), "criteria": text.strip()}
            out.append(item)
        return out

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if not self.score_name.strip():
            raise ValueError("score_name must not be blank")
        if self.explain == "all" and self.quality_preset in ("low", "base"):
            raise ValueError(
                f"quality_preset={self.quality_preset!r} cannot log an explanation with every "
                "score (cleanlab-tlm refuses it): set explain=low_trust, or use medium, high "
                "or best"
            )
        if self.untrustworthy_below > self.low_trust_threshold:
            raise ValueError("untrustworthy_below must not exceed low_trust_threshold")
        if self.review_queue is not None and not self.review_queue.strip():
            raise ValueError("review_queue must be a queue name (or unset)")
        if self.review_score is not None and self.review_score in (
            self.score_name,
            f"{self.score_name}_label",
        ):
            raise ValueError("review_score must differ from score_name and its _label score")
        # a review queue needs a score config: without ours, it gets the trust score's
        queue_config = self.review_queue is not None and not (self.label_score or self.review_score)
        fix = "shorten score_name, or set score_config=false and label_score=false"
        if self.review_queue is not None:
            fix += " and unset review_queue (a Langfuse queue needs a score config)"
        names = [(self.score_name, fix)] if self.score_config or queue_config else []
        names += [(self.label_name, fix)] if self.label_name else []
        names += [(self.review_score, "rename review_score")] if self.review_score else []
        if self.score_config and self.rag_evals:  # each eval and the cause get a config
            rag = (*self.plan.eval_names, self.plan.cause_name or "")
            names += [(n, "shorten score_name, or set score_config=false") for n in rag]
        problem = criteria_problem(
            self.score_name, [c.name for c in self.criteria], [c.criteria for c in self.criteria]
        )
        if problem:
            raise ValueError(problem)
        for name, hint in names:
            if not CONFIG_NAME.fullmatch(name):
                raise ValueError(
                    f"{name!r} cannot name a Langfuse score config (at most 35 letters, digits, "
                    f"spaces, _ . ( ) -): {hint}"
                )
        return self

    @property
    def label_name(self) -> str | None:
        return f"{self.score_name}_label" if self.label_score else None

    @property
    def explain_below(self) -> float | None:
        """Scores below this get an explanation call (None: every score logs its own)."""
        return self.low_trust_threshold if self.explain == "low_trust" else None

    @property
    def observations(self) -> bool:
        return self.scope == "generation"

    @property
    def plan(self) -> EvalPlan:
        """What the run scores besides trust, and the names it writes."""
        return EvalPlan(
            self.score_name,
            self.rag_evals,
            tuple((c.name, c.criteria) for c in self.criteria),
            self.low_trust_threshold,
        )


def options_from(values: EvalOptions | dict[str, object] | None) -> EvalOptions:
    """Options as given by a caller; a bad value is a one-line ConfigError naming the field."""
    if isinstance(values, EvalOptions):
        return values
    try:
        return EvalOptions.model_validate(values or {})
    except ValidationError as err:
        raise ConfigError(one_line(err, "options.")) from None


def one_line(err: ValidationError, prefix: str = "") -> str:
    parts = []
    for e in err.errors():
        where = ".".join(str(x) for x in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")  # a rule of ours: its own words
        parts.append(f"{prefix}{where}: {msg}" if where else msg)
    return "; ".join(parts)


def validate_tags(tags: list[str] | None) -> list[str]:
    """The tags the traces carry: a non-empty list of non-blank strings, duplicates dropped."""
    if not tags or isinstance(tags, str):
        raise ConfigError("tags must be a non-empty list of the tag(s) the traces carry")
    bad = [t for t in tags if not isinstance(t, str) or not t.strip()]
    if bad:
        raise ConfigError(f"tags must be non-empty strings, got {bad!r}")
    return list(dict.fromkeys(tags))
