"""A local, Cleanlab-TLM-compatible sandbox server (wire-compatible with cleanlab-tlm 1.1.39).

The SCORES ARE SYNTHETIC. This server is not a trust model and knows nothing about correctness:

* a handful of well-known demo prompt/response pairs (:data:`KNOWN_PAIRS`, the seed's trivia
  questions) get hand-picked scores and explanations, matched by case-insensitive substrings of
  the prompt and of the response, so that demos show a believable spread;
* every other pair gets a score derived from a SHA-256 hash of ``(prompt, response)``, mapped into
  ``[0.02, 0.98]``. The same pair always gets the same score, across runs and machines.

Endpoints (under ``/api``, the value for ``CLEANLAB_API_BASE_URL``):

* ``POST /api/v0/trustworthy_llm/get_confidence_score`` (fault endpoint ``"tlm.score"``):
  ``{"prompt", "response": {"response": str, ...}, "quality", "task", "options"}`` ->
  ``{"confidence_score": float, "log": {"explanation": str}}``; ``log`` is present whenever
  ``options.log`` is non-empty (unless ``Fault.missing_log``).
* ``POST /api/v1/tlm_explanation/get_explanation`` (fault endpoint ``"tlm.explain"``):
  ``{"prompt", "response": {"response": str, "trustworthiness_score": float, ...}, "options"}``
  -> ``{"explanation": str}``. Used by ``TLM.get_explanation()``.

Auth is ``Authorization: bearer <key>``; a wrong or missing key is a 401
``{"code": "invalid_api_key", "description": ...}`` (cleanlab-tlm raises ``AuthError`` and does
not retry). Every answer, errors included, is ``application/json`` (the client calls
``resp.json()`` before looking at the status); other errors are ``{"error": "..."}``. A
malformed body is a 422 (not 400: cleanlab-tlm retries a 400 four times, but not a 422).

Faults (see :mod:`sandbox.faults`): status/latency/hang faults apply as usual. ``Fault.fail_items``
makes a score call whose prompt contains one of the substrings answer ``fail_status`` (500 by
default: the client retries it 4 times over 1+2+4 s, then the item's slot carries the error; set
:attr:`TLMSandbox.fail_status` to 422 for a fast, non-retried per-item failure).
``Fault.hold_items`` holds the items whose prompt contains a key until the faults are cleared
(one day kept at TLM while the others go on). ``Fault.missing_log`` drops ``log`` from answers.

Load knobs (constructor arguments, setters, restored by ``reset``): ``latency`` (a
:class:`Latency`: fixed, or log-normal from a mean and a p99, drawn per item from a seeded hash)
and a concurrency ceiling (``max_in_flight``: above it a score call is answered ``over_status``,
429 with ``Retry-After`` or 503, as the real service does when pushed). Every score call's start,
end and status are kept (:meth:`TLMSandbox.spans`) to chart requests in flight over time.

IMPORTANT: cleanlab-tlm reads ``CLEANLAB_API_BASE_URL`` ONCE, when
``cleanlab_tlm.internal.api.api`` is first imported (module globals ``base_url``,
``tlm_base_url``, ``tlm_explanation_base_url``...). A process can therefore point it at one
sandbox only: use :func:`session_tlm_sandbox` early (before anything imports ``cleanlab_tlm``)
and :meth:`TLMSandbox.reset` between tests.

Modules: ``scores`` (the synthetic scores and explanations), ``load`` (latency models, the
concurrency ceiling, spans), ``app`` (the routes, auth, capture, fault hooks), ``server``
(:class:`TLMSandbox`), ``session`` (:func:`session_tlm_sandbox`). The public names are
re-exported here: ``from sandbox.tlm import TLMSandbox, Latency``.
"""

from __future__ import annotations

from sandbox.tlm.app import ENDPOINTS, EXPLAIN_PATH, SCORE_PATH, create_app, error_body
from sandbox.tlm.load import Latency, Load, Span, in_flight_series
from sandbox.tlm.scores import (
    KNOWN_PAIRS,
    RICH_SUFFIX,
    SYNTHETIC_LABEL,
    KnownPair,
    known_pair,
    synthetic_explanation,
    synthetic_score,
)
from sandbox.tlm.server import TLMSandbox
from sandbox.tlm.session import session_tlm_sandbox

__all__ = [
    "ENDPOINTS",
    "EXPLAIN_PATH",
    "KNOWN_PAIRS",
    "RICH_SUFFIX",
    "SCORE_PATH",
    "SYNTHETIC_LABEL",
    "KnownPair",
    "Latency",
    "Load",
    "Span",
    "TLMSandbox",
    "create_app",
    "error_body",
    "in_flight_series",
    "known_pair",
    "session_tlm_sandbox",
    "synthetic_explanation",
    "synthetic_score",
]
