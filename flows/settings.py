"""A run's settings, checked before any call, and the stream it evaluates (which needs one
answer from Langfuse: the project of the key pair)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from flows.options import EvalOptions
from tasks.config import (
    LangfuseSettings,
    RunLogger,
    TLMSettings,
    Tuning,
    check_preset,
    load_langfuse,
    load_tlm,
    load_tuning,
)
from tasks.langfuse_api import Access, Server, connect
from tasks.spend import check_budget
from tasks.stream import Stream


@dataclass(frozen=True, slots=True)
class Settings:
    """The environment's settings; a bad one is refused before any call."""

    langfuse: LangfuseSettings
    tlm: TLMSettings | None  # None in a dry run: TLM is never called
    tuning: Tuning

    @classmethod
    def load(cls, opts: EvalOptions, logger: RunLogger | None = None) -> Settings:
        from tasks.budgets import check_limits  # Prefect: not needed to ask Langfuse

        tuning, langfuse = load_tuning(), load_langfuse()
        tuning = check_limits(tuning, logger)
        check_budget(opts.max_cost, tuning.price_per_1k_tokens)
        if opts.dry_run:
            return cls(langfuse, None, tuning)
        check_preset(opts.quality_preset, opts.explain == "all")
        return cls(langfuse, load_tlm(), tuning)


def open_stream(
    lf: Access, tags: Sequence[str], score_name: str, logger: RunLogger
) -> tuple[Server, Stream]:
    """Ask Langfuse what it is and whose keys these are (a refused key fails here, in one
    line), and name the stream."""
    server = connect(lf.cfg, lf.tuning, lf.calls(logger))
    assert server.project_id is not None  # connect reads it, or fails
    return server, Stream.of(server.project_id, tags, score_name)
