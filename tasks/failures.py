"""Why a unit did not end scored and uploaded (a run's own failures: ``tasks.errors``)."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal


class Reason(StrEnum):
    """Why a unit is not (newly) scored. The report groups units by it (and its detail)."""

    # already scored
    PENDING = "pending"  # written by a recent run, not yet readable in Langfuse
    # left out before TLM
    NOT_SAMPLED = "not_sampled"
    OVER_MAX_TRACES = "over_max_traces"
    OVER_BUDGET = "over_budget"  # max_cost reached: left for the next run
    NO_GENERATION = "no_generation"
    # cannot be paired as a prompt and a response
    MISSING_INPUT = "missing_input"
    MISSING_OUTPUT = "missing_output"
    EMPTY_INPUT = "empty_input"
    EMPTY_OUTPUT = "empty_output"
    UNSUPPORTED_INPUT = "unsupported_input"
    UNSUPPORTED_OUTPUT = "unsupported_output"
    UNSUPPORTED_CONTENT = "unsupported_content"
    UNRECOGNISED_INPUT = "unrecognised_input"
    UNRECOGNISED_OUTPUT = "unrecognised_output"
    UNRECOGNISED_METADATA = "unrecognised_metadata"
    UNRECOGNISED_CONTEXT = "unrecognised_context"
    UNREADABLE_INPUT = "unreadable_input"
    UNREADABLE_OUTPUT = "unreadable_output"
    UNREADABLE_METADATA = "unreadable_metadata"
    UNREADABLE_CONTEXT = "unreadable_context"
    UNREADABLE_CHAT = "unreadable_chat"
    UNREADABLE_TRACE = "unreadable_trace"
    BAD_TOOL_CALL = "bad_tool_call"
    TOO_LARGE = "too_large"  # over the prompt-and-response character budget
    # TLM
    TLM_ERROR = "tlm_error"
    NOT_SENT = "not sent"  # TLM was down or refused the key: the item was never sent
    NOT_SCORED = "not scored"  # the engine stopped with the item outstanding
    # Langfuse
    UPLOAD_ERROR = "upload_error"
    REFUSED = "refused"  # the server answered the score's POST with an error
    NOT_CONFIRMED = "not confirmed after a 207"

    @property
    def unexpected(self) -> bool:
        """A trace shape we failed to read (worth a warning), not one that has no pair."""
        return self in _UNREADABLE


_UNREADABLE = frozenset(r for r in Reason if r.value.startswith("unreadable_"))

Part = Literal["input", "output", "metadata", "context"]  # a part of a trace


def unreadable(part: Part) -> Reason:
    return Reason(f"unreadable_{part}")


def unrecognised(part: Part) -> Reason:
    return Reason(f"unrecognised_{part}")


def why(reason: Reason | None, detail: str = "") -> str:
    """How the report names a reason: ``"tlm_error: timeout"``, or just the code."""
    if reason is None:
        return f"unknown: {detail}" if detail else "unknown"
    return f"{reason}: {detail}" if detail else str(reason)


class SkipError(Exception):
    """The trace cannot be paired; ``reason`` says why, ``detail`` says more."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(why(reason, detail))
        self.reason = reason
        self.detail = detail
