"""What a window run does besides which window it reads, and the checks made before any call."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tasks.config import ConfigError

CONFIG_NAME = re.compile(r"[A-Za-z0-9_ .()\-]{1,35}")  # Langfuse's rule for score config names


@dataclass(frozen=True)
class Options:
    """What a window run does, beside which window it reads."""

    score_name: str = "trust_score"
    quality_preset: str = "medium"
    rescore: bool = False
    max_traces: int | None = None
    sample_rate: float = 1.0
    dry_run: bool = False
    environment: list[str] | None = None
    low_trust_threshold: float = 0.5
    scope: str = "trace"  # or "generation": score each GENERATION observation
    score_config: bool = True
    label_score: bool = False
    untrustworthy_below: float = 0.3
    review_queue: str | None = None
    review_lowest_n: int | None = None
    alert_low_trust_share: float | None = 0.2

    @property
    def label_name(self) -> str | None:
        return f"{self.score_name}_label" if self.label_score else None

    @property
    def observations(self) -> bool:
        return self.scope == "generation"


def validate_options(tags: list[str] | None, o: Options) -> list[str]:
    if not tags or isinstance(tags, str):
        raise ConfigError("tags must be a non-empty list of the tag(s) the traces carry")
    bad = [t for t in tags if not isinstance(t, str) or not t.strip()]
    if bad:
        raise ConfigError(f"tags must be non-empty strings, got {bad!r}")
    if not o.score_name or not o.score_name.strip():
        raise ConfigError("score_name must not be empty")
    if not 0.0 < o.sample_rate <= 1.0:
        raise ConfigError(f"sample_rate must be in (0, 1], got {o.sample_rate}")
    if o.max_traces is not None and o.max_traces < 1:
        raise ConfigError(f"max_traces must be at least 1 (or unset), got {o.max_traces}")
    for name in ("low_trust_threshold", "untrustworthy_below"):
        if not 0.0 <= getattr(o, name) <= 1.0:
            raise ConfigError(f"{name} must be in [0, 1], got {getattr(o, name)}")
    if o.untrustworthy_below > o.low_trust_threshold:
        raise ConfigError("untrustworthy_below must not exceed low_trust_threshold")
    if o.alert_low_trust_share is not None and not 0.0 <= o.alert_low_trust_share <= 1.0:
        raise ConfigError(f"alert_low_trust_share must be in [0, 1], got {o.alert_low_trust_share}")
    if o.scope not in ("trace", "generation"):
        raise ConfigError(f"scope must be 'trace' or 'generation', got {o.scope!r}")
    if o.review_lowest_n is not None and o.review_lowest_n < 1:
        raise ConfigError(f"review_lowest_n must be at least 1, got {o.review_lowest_n}")
    if o.review_queue is not None and not o.review_queue.strip():
        raise ConfigError("review_queue must be a queue name (or unset)")
    config_names = [o.score_name] if o.score_config else []
    config_names += [o.label_name] if o.label_name else []
    for name in config_names:
        if not CONFIG_NAME.fullmatch(name):
            raise ConfigError(
                f"{name!r} cannot name a Langfuse score config (at most 35 letters, digits, "
                "spaces, _ . ( ) -): shorten score_name, or set score_config=false and "
                "label_score=false"
            )
    return list(dict.fromkeys(tags))


def validate_params(
    tags: list[str] | None,
    score_name: str = "trust_score",
    sample_rate: float = 1.0,
    max_traces: int | None = None,
    low_trust_threshold: float = 0.5,
) -> list[str]:
    """The checks of the flow's core parameters (for callers that run it later: CLI, backfill)."""
    return validate_options(
        tags,
        Options(
            score_name=score_name,
            sample_rate=sample_rate,
            max_traces=max_traces,
            low_trust_threshold=low_trust_threshold,
        ),
    )
