"""Quality presets in the TLM sandbox: what each costs (latency, tokens) and which refuse a
logged explanation.

The multipliers are the sandbox's own, SYNTHETIC model, ordered like the real presets (the
client's ``TLMOptions`` docstring: best = 8 consistency samples + 3 self-reflections + high
reasoning; high = 4 + 3 + high; medium = 0 + 3 + high; low = 0 + 3 + no reasoning; base = 0 + 1 +
no reasoning). ``medium`` is 1x so that a latency model set for the default preset is served as
set.

=======  =========  ========
preset   latency x  tokens x
=======  =========  ========
base     0.5        1
low      0.75       2
medium   1.0        4
high     1.5        8
best     2.0        12
=======  =========  ========

An explanation (``get_explanation``) carries no preset: it is served like one medium call
(latency x 1, tokens x 4), whatever preset scored the response (:data:`EXPLANATION`).

Tokens: the real service reports no token usage (cleanlab-tlm 1.1.39 reads none from any
answer), so the sandbox records an estimate per call: ``ceil(characters / 4) x tokens x``, the
characters being those of the prompt and the response, plus the query, the context and each
eval's criteria on the RAG endpoint, plus each custom criterion's name and criteria on TLM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Preset:
    latency_x: float
    tokens_x: int


PRESETS: dict[str, Preset] = {
    "base": Preset(0.5, 1),
    "low": Preset(0.75, 2),
    "medium": Preset(1.0, 4),
    "high": Preset(1.5, 8),
    "best": Preset(2.0, 12),
}
DEFAULT_PRESET = "medium"  # what the client sends when none is chosen
# get_explanation carries no preset (cleanlab-tlm sends prompt, response and options only): the
# sandbox serves every explanation like one medium call, whatever preset scored it
EXPLANATION = PRESETS["medium"]


def preset_of(name: object) -> Preset:
    """The multipliers of a preset name (an unknown or missing one counts as medium)."""
    return PRESETS.get(name if isinstance(name, str) else DEFAULT_PRESET, PRESETS[DEFAULT_PRESET])


def estimate_tokens(chars: int, preset: object) -> int:
    """The sandbox's token estimate for a call carrying ``chars`` characters at ``preset``."""
    return math.ceil(chars / 4) * preset_of(preset).tokens_x


# The client's own words when it refuses (cleanlab_tlm/internal/validation.py, validate_logging).
EXPLANATION_REFUSED = (
    "Your TLM configuration does not support logged explanations.  Please remove 'explanation' "
    "from your specified `log`, and instead use the `get_explanation()` method after computing "
    "trust scores."
)
_NO_EXPLANATION_PRESETS = {"low", "base"}  # TLM (not TrustworthyRAG)
_CONSISTENCY_PRESETS = {"best", "high"}
_NO_EXPLANATION_REASONING = {"none", "minimal"}
_HIDDEN_REASONING_MODELS = {
    "o1-preview",
    "o1",
    "o1-mini",
    "o3",
    "o3-mini",
    "o4-mini",
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
}


def explanation_refused(options: dict[str, Any], preset: object, *, rag: bool) -> bool:
    """True when cleanlab-tlm 1.1.39 would refuse this configuration at construction.

    A port of ``validate_logging`` (internal/validation.py): a logged explanation needs a
    preset that explains (TLM: not low/base; TrustworthyRAG: best or high only) unless the
    options name consistency samples or a reasoning effort that makes one.
    """
    log = options.get("log")
    if not isinstance(log, list) or "explanation" not in log:
        return False
    if options.get("disable_trustworthiness", False):
        return True
    model = options.get("model")
    samples = options.get("num_consistency_samples")
    reasoning = options.get("reasoning_effort")
    reflections = options.get("num_self_reflections")
    if options.get("use_self_reflection") is False:
        reflections = 0
    if samples == 0 and reflections == 0:
        return True
    if isinstance(samples, int) and samples > 0:
        return False
    if (
        reasoning is not None
        and reasoning not in _NO_EXPLANATION_REASONING
        and (reflections is None or (isinstance(reflections, int) and reflections > 0))
    ):
        return False
    if samples == 0 and reasoning in _NO_EXPLANATION_REASONING:
        return True
    if model in _HIDDEN_REASONING_MODELS:
        return True
    if not rag:
        if preset in _NO_EXPLANATION_PRESETS:
            return True
        if preset not in _CONSISTENCY_PRESETS:
            if reasoning in _NO_EXPLANATION_REASONING:
                return True
            if reflections == 0 and samples is None:
                return True
        return False
    return preset not in _CONSISTENCY_PRESETS or samples == 0
