"""A local, Cleanlab-TLM-compatible sandbox server (wire-compatible with cleanlab-tlm 1.1.39).

The SCORES ARE SYNTHETIC. This server is not a trust model and knows nothing about correctness:

* a handful of well-known demo prompt/response pairs (:data:`KNOWN_PAIRS`, the seed's trivia
  questions) get hand-picked scores and explanations, matched by case-insensitive substrings of
  the prompt and of the response, so that demos show a believable spread;
* every other pair gets a score derived from a SHA-256 hash of ``(prompt, response)``, mapped into
  ``[0.02, 0.98]``. The same pair always gets the same score, across runs and machines.

Endpoints (under ``/api``, the value for ``CLEANLAB_API_BASE_URL``):

* ``POST /api/v0/trustworthy_llm/get_confidence_score`` (fault endpoint ``"tlm.score"``;
  ``TLM.get_trustworthiness_score``, one request per item):
  ``{"prompt", "response": {"response": str, ...}, "quality", "task", "options"}`` ->
  ``{"confidence_score": float | null, "log": {...}}``. ``log`` is present whenever
  ``options.log`` is non-empty OR ``options.custom_eval_criteria`` is set (the client then reads
  ``log`` unconditionally), unless ``Fault.missing_log``. ``log.explanation`` when asked;
  ``log.custom_eval_criteria`` = ``[{"name": str, "score": float}, ...]``, one per criterion
  sent, in order. ``options.disable_trustworthiness`` -> ``confidence_score: null``.
* ``POST /api/v1/rag_trustworthy_llm/score`` (fault endpoint ``"tlm.rag_score"``;
  ``TrustworthyRAG.score``, one request per item): ``{"response": {"response": str}, "prompt",
  "query", "context", "evals": [{"name", "criteria", "query_identifier", "context_identifier",
  "response_identifier"}], "quality", "options", "user_id", "client_id", "constrain_outputs"}``
  -> ``{"trustworthiness": {"score": float | null, "log"?: {"explanation"?: str}}, "<eval name>":
  {"score": float | null}, ...}``: one entry per eval SENT, keyed by its name (the client reads
  ``res_json[name]`` for each eval it sent: a missing one is a KeyError). ``trustworthiness.log``
  is present whenever ``options.log`` is non-empty. Tool-call-only responses: the CLIENT leaves
  out the evals that have a ``response_identifier`` and fills them in as ``{"score": None}``
  itself (cleanlab_tlm/internal/rag.py); the sandbox scores whatever evals it is sent.
* ``POST /api/v1/tlm_explanation/get_explanation`` (fault endpoint ``"tlm.explain"``;
  ``TLM.get_explanation`` / ``TrustworthyRAG.get_explanation`` for a result without one):
  ``{"prompt", "response": {"response": str, "trustworthiness_score": float, ...the result's
  other keys, e.g. "log"}, "options"}`` (no ``quality``) -> ``{"explanation": str}``.

Scores: the trustworthiness score is :func:`synthetic_score` of (prompt, response) on both score
endpoints; a RAG eval's is :func:`eval_score` of its name and of the inputs its identifiers name
(``query_ease`` depends on the query only, ``context_sufficiency`` on query + context...); a
custom criterion's is :func:`criteria_score` of (name, prompt, response). All deterministic.

Markers (:mod:`sandbox.tlm.markers`): ``[tlm:KEY=VALUE]`` in the prompt, query, context or
response forces an answer: ``[tlm:trustworthiness=0.2]``, ``[tlm:context_sufficiency=0.1]``
(any eval or custom criterion by name), ``=none`` (null), ``=nan``, ``=inf``;
``[tlm:eval_error=response_helpfulness]`` (that eval left out of the answer);
``[tlm:status=422]`` (that status with ``{"error"}`` instead of a score);
``[tlm:deberta_success=false]``. An unreadable marker is a 422.

Presets (:mod:`sandbox.tlm.presets`): the latency model's draw is multiplied by the preset's
latency multiplier (base 0.5, low 0.75, medium 1, high 1.5, best 2) and each call's token
estimate (``ceil(chars / 4)``) by its token multiplier (1, 2, 4, 8, 12). The real service
reports no token usage, so the estimate is only recorded (``records()``, ``tokens_by_preset()``).
A logged explanation where cleanlab-tlm would refuse one at construction (TLM: low/base;
TrustworthyRAG: anything but best/high; see :func:`~sandbox.tlm.presets.explanation_refused`)
is answered 422 ``{"error": <the client's own message>}``.

Auth is ``Authorization: bearer <key>``; a wrong or missing key is a 401
``{"code": "invalid_api_key", "description": ...}`` (cleanlab-tlm raises ``AuthError`` and does
not retry). ``TLMSandbox.auth_shape`` gives every 401 (refusals and injected faults) another
shape: ``"error"`` (``{"error": "Unauthorized"}``: a ``TlmBadRequestError``, not retried),
``"detail"`` (``{"detail": ...}``: ``TlmBadRequestError`` with a generic message, marked
retryable, not retried) or ``"text"`` (``text/plain``: the client's ``resp.json()`` fails, which
it retries 4 times over 1+2+4 s like a 5xx). Every other answer, errors included, is
``application/json`` (the client calls ``resp.json()`` before looking at the status); errors
are ``{"error": "..."}``. A malformed body is a 422 (not 400: cleanlab-tlm retries a 400 four
times, but not a 422).

Faults (see :mod:`sandbox.faults`): status/latency/hang faults apply as usual. ``Fault.fail_items``
makes a score call whose prompt (RAG: prompt, query or context) contains one of the substrings
answer ``fail_status`` (500 by default: the client retries it 4 times over 1+2+4 s, then the
item's slot carries the error; set :attr:`TLMSandbox.fail_status` to 422 for a fast,
non-retried per-item failure). ``Fault.hold_items`` holds the items whose text contains a key
until the faults are cleared (``TLMSandbox.holding`` counts them). ``Fault.missing_log`` drops
``log`` from answers. A 429 fault without ``retry_after`` sends no ``Retry-After`` header; so does
the ceiling with ``retry_after=None`` (the client then retries at once, without end).

Load knobs (constructor arguments, setters, restored by ``reset``): ``latency`` (a
:class:`Latency`: fixed, or log-normal from a mean and a p99, drawn per item from a seeded hash,
times the preset's multiplier) and a concurrency ceiling shared by both score endpoints
(``max_in_flight``: above it a score call is answered ``over_status``, 429 with ``Retry-After``
or 503, as the real service does when pushed). Every score call's start, end, status and
endpoint are kept (:meth:`TLMSandbox.spans`) to chart requests in flight over time.

IMPORTANT: cleanlab-tlm reads ``CLEANLAB_API_BASE_URL`` ONCE, when
``cleanlab_tlm.internal.api.api`` is first imported (module globals ``base_url``,
``tlm_base_url``, ``tlm_explanation_base_url``...). A process can therefore point it at one
sandbox only: use :func:`session_tlm_sandbox` early (before anything imports ``cleanlab_tlm``)
and :meth:`TLMSandbox.reset` between tests.

Modules: ``scores`` (the synthetic scores and explanations), ``markers`` (forced values),
``presets`` (multipliers, the explanation rule), ``wire`` (bodies, answers, call records),
``load`` (latency models, the concurrency ceiling, spans), ``app`` (the routes, auth, capture,
fault hooks), ``server`` (:class:`TLMSandbox`), ``session`` (:func:`session_tlm_sandbox`).
The public names are re-exported here: ``from sandbox.tlm import TLMSandbox, Latency``.
"""

from __future__ import annotations

from sandbox.tlm.app import (
    AUTH_SHAPES,
    ENDPOINTS,
    EXPLAIN_PATH,
    RAG_SCORE_PATH,
    SCORE_PATH,
    create_app,
    error_body,
)
from sandbox.tlm.load import Latency, Load, Span, in_flight_series
from sandbox.tlm.markers import Markers, marker, parse_markers
from sandbox.tlm.presets import (
    EXPLANATION_REFUSED,
    PRESETS,
    Preset,
    estimate_tokens,
    explanation_refused,
)
from sandbox.tlm.scores import (
    KNOWN_PAIRS,
    RICH_SUFFIX,
    SYNTHETIC_LABEL,
    KnownPair,
    criteria_score,
    eval_score,
    known_pair,
    synthetic_explanation,
    synthetic_score,
)
from sandbox.tlm.server import TLMSandbox
from sandbox.tlm.session import session_tlm_sandbox
from sandbox.tlm.wire import CallRecord

__all__ = [
    "AUTH_SHAPES",
    "ENDPOINTS",
    "EXPLAIN_PATH",
    "EXPLANATION_REFUSED",
    "KNOWN_PAIRS",
    "PRESETS",
    "RAG_SCORE_PATH",
    "RICH_SUFFIX",
    "SCORE_PATH",
    "SYNTHETIC_LABEL",
    "CallRecord",
    "KnownPair",
    "Latency",
    "Load",
    "Markers",
    "Preset",
    "Span",
    "TLMSandbox",
    "create_app",
    "criteria_score",
    "error_body",
    "estimate_tokens",
    "eval_score",
    "explanation_refused",
    "in_flight_series",
    "known_pair",
    "marker",
    "parse_markers",
    "session_tlm_sandbox",
    "synthetic_explanation",
    "synthetic_score",
]
