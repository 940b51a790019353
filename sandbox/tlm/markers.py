"""Markers: a test forces any value of a TLM sandbox answer from the text it sends.

A marker is ``[tlm:KEY=VALUE]`` anywhere in the text the request carries: the prompt, the
response text and, on the TrustworthyRAG endpoint, the query and the context. Texts are read in
that order (prompt, query, context, response) and, within a text, left to right; when a key is
given twice the last one wins. Keys are matched exactly (after stripping spaces); values are
case-insensitive.

Score keys (the value is a float, ``none``/``null`` for a JSON null, ``nan``, ``inf`` or
``-inf``; NaN and the infinities are sent as the bare JSON tokens ``NaN``/``Infinity``, which the
client's ``json.loads`` accepts):

* ``[tlm:trustworthiness=0.2]``: the trustworthiness score (``confidence_score`` on the TLM
  endpoint, ``trustworthiness.score`` on the RAG endpoint);
* ``[tlm:<eval name>=0.1]``: the score of that eval (RAG: one of the request's ``evals``, e.g.
  ``context_sufficiency``; TLM: one of ``options.custom_eval_criteria`` by name). A key naming
  nothing the request asked for is ignored.

Other keys:

* ``[tlm:eval_error=<name>]`` (repeatable): leave that eval out of the answer (RAG: no key
  ``<name>``, which the client reads as ``res_json[name]``: a KeyError, retried like a 5xx, then
  an error result; TLM: that criterion is left out of ``log.custom_eval_criteria``).
  ``eval_error=trustworthiness`` leaves the trustworthiness out (RAG: the key; TLM:
  ``confidence_score``, a KeyError the client does not retry).
* ``[tlm:status=<4xx|5xx>]``: answer that status with ``{"error": ...}`` instead of scoring
  (a per-item failure decided by the trace itself). 422: an error result, not retried; 500:
  retried 4 times over 1+2+4 s, then an error result; 429 would be retried without end.
* ``[tlm:deberta_success=false]``: add ``"deberta_success": false`` to the answer (the client
  halves its concurrency window and still returns the result).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

MARKER = re.compile(r"\[tlm:([^=\]\[]+)=([^\]\[]*)\]")

SCORE_WORDS: dict[str, float | None] = {
    "none": None,
    "null": None,
    "nan": math.nan,
    "inf": math.inf,
    "+inf": math.inf,
    "-inf": -math.inf,
}


@dataclass
class Markers:
    """What the markers of one request ask for (see the module docstring)."""

    scores: dict[str, float | None] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)
    status: int | None = None
    deberta_success: bool | None = None
    invalid: list[str] = field(default_factory=list)  # markers that could not be read

    def score(self, name: str, default: float | None) -> float | None:
        return self.scores.get(name, default)  # a forced None stays None


def parse_score(value: str) -> float | None:
    word = value.strip().lower()
    if word in SCORE_WORDS:
        return SCORE_WORDS[word]
    return float(word)  # ValueError for anything else


def parse_markers(*texts: str | None) -> Markers:
    """The markers found in ``texts`` (None entries are skipped)."""
    found = Markers()
    for text in texts:
        if not text:
            continue
        for match in MARKER.finditer(text):
            key, value = match.group(1).strip(), match.group(2).strip()
            try:
                if key == "eval_error":
                    found.missing.add(value)
                elif key == "status":
                    status = int(value)
                    if not 400 <= status < 600:
                        raise ValueError(value)
                    found.status = status
                elif key == "deberta_success":
                    if value.lower() not in ("true", "false"):
                        raise ValueError(value)
                    found.deberta_success = value.lower() == "true"
                else:
                    found.scores[key] = parse_score(value)
            except ValueError:
                found.invalid.append(match.group(0))
    return found


def marker(key: str, value: object) -> str:
    """The marker text for ``key=value`` (``None`` -> ``none``), for tests to embed."""
    text = "none" if value is None else str(value).lower() if isinstance(value, bool) else value
    return f"[tlm:{key}={text}]"
