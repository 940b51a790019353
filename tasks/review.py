"""Close the loop: a score config for the trust score, a human review queue, and run events.

- The trust score is attached to a NUMERIC score config (0 to 1, with a description), created on
  first use, so Langfuse shows it as a first-class metric; an optional CATEGORICAL companion
  score labels each trace ``trustworthy`` / ``review`` / ``untrustworthy``.
- Traces below a threshold (or the N lowest of a window) are added to a named annotation queue,
  created if missing, ONCE however often the window runs: a normal run only enqueues what it
  scored itself; a re-run (anything already scored below the threshold) first reads the queue's
  items so that nothing is added twice.
- Every window run emits a Prefect event with its figures, and a second one when the low-trust
  share passes the alert threshold (what an automation reacts to).
- Reviewers' verdicts: the annotation score ``review_score`` (CATEGORICAL ``correct`` /
  ``incorrect``, made once) is attached to the queue the pipeline creates, so its review form
  offers it; an existing config of that name must be one the verdict reader understands
  (``tasks/verdicts.py``), else the run is refused before TLM is paid.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from langfuse.api.core.api_error import ApiError
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from tasks.errors import ConfigError
from tasks.evals import CAUSES, EvalPlan
from tasks.langfuse_api import NO_RETRY, Access, Calls

LABELS = ("untrustworthy", "review", "trustworthy")
VERDICT_LABELS = ("incorrect", "correct")  # the review score's categories, values 0 and 1
PAGE = 100


def _all_pages(fetch: Any) -> Iterable[Any]:
    """Rows of a page/limit-paged listing (score configs, queues, queue items)."""
    page = 1
    while True:
        resp = fetch(page)
        yield from resp.data
        total_pages = getattr(resp.meta, "total_pages", None)
        if not resp.data or (total_pages is not None and page >= total_pages):
            return
        page += 1


def _score_configs(calls: Calls) -> Iterable[Any]:
    api = calls.api
    return _all_pages(
        lambda page: calls(
            "reading score configs",
            lambda: api.score_configs.get(page=page, limit=PAGE, request_options=NO_RETRY),
        )
    )


def ensure_score_config(
    calls: Calls,
    name: str,
    *,
    data_type: str,
    description: str,
    categories: list[dict[str, Any]] | None = None,
) -> str:
    """The id of the score config ``name`` (created when missing)."""
    api = calls.api
    for cfg in _score_configs(calls):
        if cfg.name == name and str(cfg.data_type) == data_type and not cfg.is_archived:
            return str(cfg.id)
    kwargs: dict[str, Any] = {"name": name, "data_type": data_type, "description": description}
    if data_type == "NUMERIC":
        kwargs |= {"min_value": 0.0, "max_value": 1.0}
    if categories is not None:
        kwargs["categories"] = categories
    created = calls(
        f"creating score config {name!r}",
        lambda: api.score_configs.create(**kwargs, request_options=NO_RETRY),
    )
    calls.logger.info("created score config %r (%s)", name, data_type)
    return str(created.id)


def verdict_config_problem(cfg: Any) -> str | None:
    """Why a score config cannot hold reviewers' verdicts (None: it can)."""
    kind = str(cfg.data_type)
    if kind == "BOOLEAN":
        return None
    if kind == "NUMERIC":
        low = cfg.min_value if cfg.min_value is not None else float("-inf")
        high = cfg.max_value if cfg.max_value is not None else float("inf")
        return None if low <= 0 and high >= 1 else f"a NUMERIC config from {low} to {high}"
    if kind == "CATEGORICAL":
        labels = {str(c.label).lower() for c in cfg.categories or []}
        missing = " or ".join(repr(label) for label in VERDICT_LABELS if label not in labels)
        return f"a CATEGORICAL config without {missing}" if missing else None
    return f"a {kind} config"


def check_review_config(calls: Calls, name: str) -> str | None:
    """The id of the (unarchived) score config ``name`` reviewers set, None when there is
    none; a ConfigError when it cannot hold a verdict (refused before anything is paid)."""
    found = [c for c in _score_configs(calls) if c.name == name and not c.is_archived]
    for cfg in found:
        if verdict_config_problem(cfg) is None:
            return str(cfg.id)
    if found:
        raise ConfigError(
            f"review_score {name!r} names {verdict_config_problem(found[0])} in Langfuse; "
            "verdicts must be CATEGORICAL 'correct'/'incorrect', BOOLEAN (true: correct) or "
            "NUMERIC 0/1 (1: correct): set review_score to another name (it is then created) "
            "or change that config"
        )
    return None


def ensure_review_config(calls: Calls, name: str) -> str:
    """The id of the review score's config: an existing one that can hold verdicts, or a new
    CATEGORICAL one with the labels ``incorrect`` (0) and ``correct`` (1)."""
    found = check_review_config(calls, name)
    if found is not None:
        return found
    created = calls(
        f"creating score config {name!r}",
        lambda: calls.api.score_configs.create(
            name=name,
            data_type="CATEGORICAL",
            description="Reviewer's verdict on the answer (langfuse-tlm-evals reads it back to "
            "measure how often a low trust score was right).",
            categories=[{"label": label, "value": i} for i, label in enumerate(VERDICT_LABELS)],
            request_options=NO_RETRY,
        ),
    )
    calls.logger.info("created score config %r (CATEGORICAL: correct, incorrect)", name)
    return str(created.id)


def find_queue(calls: Calls, name: str) -> str | None:
    queues = _all_pages(
        lambda page: calls(
            "reading annotation queues",
            lambda: calls.api.annotation_queues.list_queues(
                page=page, limit=PAGE, request_options=NO_RETRY
            ),
        )
    )
    return next((str(q.id) for q in queues if q.name == name), None)


def ensure_queue(
    calls: Calls,
    name: str,
    *,
    score_config_ids: list[str],
    score_name: str | None = None,
    review_score: str | None = None,
) -> str:
    """The id of the annotation queue ``name`` (created when missing, offering the run's score
    configs and the review score's, made if missing).

    Langfuse creates a queue only with at least one score config (its reviewers' form:
    ``scoreConfigIds`` is ``min(1)`` and every id must exist). A run that attaches its scores
    to none (score_config and label_score off, no review_score) creates the trust score's
    numeric config for the queue all the same, named ``score_name``; its scores stay without
    a configId.
    """
    found = find_queue(calls, name)
    if found:
        return found
    if review_score:
        score_config_ids = [*score_config_ids, ensure_review_config(calls, review_score)]
    if not score_config_ids and score_name:
        score_config_ids = [ensure_trust_config(calls, score_name)]
    try:
        created = calls(
            f"creating annotation queue {name!r}",
            lambda: calls.api.annotation_queues.create_queue(
                name=name,
                score_config_ids=score_config_ids,
                description="Traces whose answers TLM scored least trustworthy "
                "(langfuse-tlm-evals).",
                request_options=NO_RETRY,
            ),
        )
    except ApiError as err:
        # Langfuse answers 400 to a duplicate name: another run may have just created it
        found = find_queue(calls, name) if err.status_code in (400, 409) else None
        if found:
            return found
        raise
    calls.logger.info("created annotation queue %r", name)
    return str(created.id)


@dataclass(slots=True)
class QueueResult:
    queue_id: str
    added: int
    already_queued: int


def enqueue(
    calls: Calls, queue_id: str, objects: list[tuple[str, str]], *, check_existing: bool
) -> tuple[int, int]:
    """Add (object id, TRACE|OBSERVATION) items once; returns (added, already there)."""
    existing: set[str] = set()
    if check_existing:
        existing = {
            str(item.object_id)
            for item in _all_pages(
                lambda page: calls(
                    "reading annotation queue items",
                    lambda: calls.api.annotation_queues.list_queue_items(
                        queue_id, page=page, limit=PAGE, request_options=NO_RETRY
                    ),
                )
            )
        }
    added = 0
    for object_id, object_type in objects:
        if object_id in existing:
            continue

        def add(oid: str = object_id, otype: Any = object_type) -> Any:
            return calls.api.annotation_queues.create_queue_item(
                queue_id, object_id=oid, object_type=otype, request_options=NO_RETRY
            )

        calls("adding an annotation queue item", add)
        existing.add(object_id)
        added += 1
    return added, len(objects) - added


def ensure_trust_config(calls: Calls, score_name: str) -> str:
    """The id of the trust score's NUMERIC config (0 to 1), created when missing."""
    return ensure_score_config(
        calls,
        score_name,
        data_type="NUMERIC",
        description=(
            "Cleanlab TLM trustworthiness of the trace's answer, 0 (untrustworthy) to 1. "
            "The comment holds TLM's explanation."
        ),
    )


@task(name="ensure-score-configs", task_run_name="ensure score configs", cache_policy=NO_CACHE)
def ensure_configs_task(
    lf: Access,
    score_name: str | None,
    label_name: str | None,
    review_score: str | None = None,
    plan: EvalPlan | None = None,
) -> dict[str, str]:
    """Score config ids by score name (the numeric trust score, and its label, as wanted); the
    reviewers' verdict config is made (or checked: a ConfigError) when ``review_score`` is
    given."""
    calls = lf.calls(get_run_logger())
    ids: dict[str, str] = {}
    if review_score:
        ids[review_score] = ensure_review_config(calls, review_score)
    if score_name:
        ids[score_name] = ensure_trust_config(calls, score_name)
    if label_name:
        ids[label_name] = ensure_score_config(
            calls,
            label_name,
            data_type="CATEGORICAL",
            description="Trust label from the Cleanlab TLM score (langfuse-tlm-evals).",
            categories=[{"label": label, "value": i} for i, label in enumerate(LABELS)],
        )
    for name in plan.numeric_names if plan is not None else ():
        ids[name] = ensure_score_config(
            calls, name, data_type="NUMERIC",
            description="A Cleanlab TLM eval of the trace's answer, 0 (bad) to 1 "
            "(langfuse-tlm-evals).",
        )  # fmt: skip
    if plan is not None and plan.cause_name:
        ids[plan.cause_name] = ensure_score_config(
            calls, plan.cause_name, data_type="CATEGORICAL",
            description="Why a low-trust answer is low: the first RAG eval below the threshold "
            "(langfuse-tlm-evals).",
            categories=[{"label": c, "value": i} for i, c in enumerate(CAUSES)],
        )  # fmt: skip
    return ids


@task(name="review-queue", task_run_name="queue low-trust for review", cache_policy=NO_CACHE)
def review_task(
    lf: Access,
    queue_name: str,
    score_config_ids: list[str],
    objects: list[tuple[str, str]],
    check_existing: bool,
    score_name: str | None = None,
    review_score: str | None = None,
) -> QueueResult:
    """Queue ``objects`` once; a queue to create with no ``score_config_ids`` gets the config
    of ``score_name`` (see ``ensure_queue``)."""
    calls = lf.calls(get_run_logger())
    queue_id = ensure_queue(
        calls,
        queue_name,
        score_config_ids=score_config_ids,
        score_name=score_name,
        review_score=review_score,
    )
    added, there = enqueue(calls, queue_id, objects, check_existing=check_existing)
    calls.logger.info("review queue %r: %d added, %d already queued", queue_name, added, there)
    return QueueResult(queue_id, added, there)
