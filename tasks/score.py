"""Score stage: one batched TLM call per chunk, explanations on, a timeout on every item.

A per-item TLM error becomes a recorded failure, never a score. A chunk in which every item
failed means the service is down or refusing us: the stage fails loudly.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from tasks.config import TLMSettings, Tuning, check_preset
from tasks.models import Bucket, Outcome, Pair, Scored, outcome_for
from tasks.retry import StageError

# What cleanlab-tlm reports for a refused key (AuthError, from a 401 "invalid_api_key"). Not a
# bare "401": an item's error reads "Error executing query at index 401: ..." (batch index).
AUTH_HINTS = ("invalid_api_key", "Invalid API key", "AuthError")


@dataclass(slots=True)
class ScoreResult:
    scored: list[Scored]
    failed: list[Outcome]
    tlm_requests: int
    fatal: str | None = None  # the stage failed as a whole: the run reports, then fails


def make_tlm(cfg: TLMSettings, *, quality_preset: str, timeout_s: float) -> Any:
    check_preset(quality_preset)
    # imported here: cleanlab_tlm reads CLEANLAB_API_BASE_URL once, at import
    from cleanlab_tlm import TLM

    return TLM(
        quality_preset=quality_preset,  # type: ignore[arg-type]
        api_key=cfg.api_key.get_secret_value(),
        options={"log": ["explanation"]},
        timeout=timeout_s,
        verbose=False,
    )


def _as_dict(result: Any) -> dict[str, Any]:
    return dict(result) if isinstance(result, dict) else {}


def interpret(pair: Pair, result: Any) -> Scored | Outcome:
    """One TLM answer as a score, or as a failure when it carries no valid score."""
    data = _as_dict(result)
    log = data.get("log") if isinstance(data.get("log"), dict) else {}
    assert isinstance(log, dict)
    error = log.get("error")
    score = data.get("trustworthiness_score")
    if error is not None or not isinstance(score, int | float) or isinstance(score, bool):
        message = error.get("message") if isinstance(error, dict) else None
        reason = f"tlm_error: {message}" if message else "tlm_error: no score returned"
        return outcome_for(pair, Bucket.FAILED_TO_SCORE, reason[:500])
    value = float(score)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        return outcome_for(
            pair, Bucket.FAILED_TO_SCORE, f"tlm_error: score {value!r} outside [0, 1]"
        )
    explanation = log.get("explanation")
    return Scored(
        pair=pair,
        score=value,
        explanation=explanation if isinstance(explanation, str) and explanation else None,
    )


def _is_auth_failure(outcome: Outcome) -> bool:
    return any(h.lower() in (outcome.reason or "").lower() for h in AUTH_HINTS)


def score_pairs(pairs: list[Pair], tlm: Any, *, probe_first: bool = False) -> ScoreResult:
    """Score ``pairs`` with one TLM list call (after a one-item probe when ``probe_first``).

    The probe makes a bad key fail after one request instead of a thousand. Every pair ends as
    a score or a failure; ``fatal`` says when the stage failed as a whole.
    """
    result = ScoreResult([], [], 0)
    batches = [pairs[:1], pairs[1:]] if probe_first and len(pairs) > 1 else [pairs]
    for batch in batches:
        if not batch:
            continue
        result.tlm_requests += len(batch)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the client warns per failed item; we record
                answers = tlm.get_trustworthiness_score(
                    [p.prompt for p in batch], [p.response for p in batch]
                )
        except Exception as err:  # the whole call failed: no item has a score
            reason = f"tlm_error: {type(err).__name__}: {str(err)[:300]}"
            done = {o.key for o in result.failed} | {s.pair.key for s in result.scored}
            result.failed.extend(
                outcome_for(p, Bucket.FAILED_TO_SCORE, reason) for p in pairs if p.key not in done
            )
            result.fatal = f"the TLM call failed: {reason}"
            return result
        if not isinstance(answers, list) or len(answers) != len(batch):
            raise StageError(f"TLM answered {type(answers).__name__} for {len(batch)} items")
        for pair, answer in zip(batch, answers, strict=True):
            out = interpret(pair, answer)
            if isinstance(out, Outcome):
                result.failed.append(out)
            else:
                result.scored.append(out)
        if result.failed and _is_auth_failure(result.failed[0]):
            result.fatal = (
                "Cleanlab TLM refused the API key: check CLEANLAB_TLM_API_KEY "
                f"({result.failed[0].reason})"
            )
            done = {o.key for o in result.failed} | {s.pair.key for s in result.scored}
            result.failed.extend(
                outcome_for(p, Bucket.FAILED_TO_SCORE, "not sent: TLM refused the API key")
                for p in pairs
                if p.key not in done
            )
            return result
    if pairs and not result.scored:
        result.fatal = f"TLM scored none of {len(pairs)} items: {result.failed[0].reason}"
    return result


@task(name="score-with-tlm", task_run_name="score chunk {chunk_no}", cache_policy=NO_CACHE)
def score_task(
    pairs: list[Pair],
    cfg: TLMSettings,
    quality_preset: str,
    tuning: Tuning,
    chunk_no: int,
) -> ScoreResult:
    logger = get_run_logger()
    tlm = make_tlm(cfg, quality_preset=quality_preset, timeout_s=tuning.tlm_timeout_s)
    result = score_pairs(pairs, tlm, probe_first=chunk_no == 1)
    logger.info(
        "chunk %d: %d scored, %d failed to score (%d TLM items)",
        chunk_no,
        len(result.scored),
        len(result.failed),
        result.tlm_requests,
    )
    return result
