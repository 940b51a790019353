"""Seeding the Langfuse sandbox with traces of the seed app's shape, shared by the tests."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sandbox.langfuse import LangfuseSandbox

if TYPE_CHECKING:
    from tasks.report import EvalReport
    from tasks.stream import Stream

DAY = datetime(2026, 11, 28, tzinfo=UTC)
WINDOW: dict[str, Any] = {"window_start": DAY, "window_end": DAY + timedelta(days=1)}
TAG = "TLM_eval_pipeline"
SYSTEM_PROMPT = "You are a trivia master."


def stream_of(
    lf: LangfuseSandbox, tags: Sequence[str] = (TAG,), score: str = "trust_score"
) -> Stream:
    """The stream a run of ``tags`` on the sandbox's project evaluates."""
    from tasks.stream import Stream

    return Stream.of(lf.store.project_id, tags, score)


_APP: Any = object()  # "as the seed app records it" (None is a value: no input, no metadata)


def seed(
    lf: LangfuseSandbox,
    n: int,
    *,
    tags: tuple[str, ...] = (TAG,),
    start: datetime = DAY,
    step: timedelta = timedelta(minutes=7),
    at: Callable[[int], datetime] | None = None,
    name: str | None = "q{i}",
    question: str = "Question {i}?",
    answer: str = "Answer {i}.",
    input: Any = _APP,
    output: Any = _APP,
    metadata: Any = _APP,
    ids: Sequence[str] | None = None,
) -> list[str]:
    """``n`` traces, ``step`` apart from ``start`` (or trace ``i`` at ``at(i)``); their ids.

    As the seed app records a call: input ``{"args": [question], "kwargs": {}}``, output the
    answer, metadata the system prompt; ``{i}`` in ``name``, ``question`` and ``answer`` is
    the trace's index. ``input``, ``output`` and ``metadata`` replace the app's (``None``
    included) for every trace. ``ids`` fixes the trace ids (random otherwise).
    """
    out = []
    for i in range(n):
        q, a = question.replace("{i}", str(i)), answer.replace("{i}", str(i))
        out.append(
            lf.store.add_trace(
                trace_id=None if ids is None else ids[i],
                name=None if name is None else name.replace("{i}", str(i)),
                tags=tags,
                start_time=at(i) if at is not None else start + i * step,
                input={"args": [q], "kwargs": {}} if input is _APP else input,
                output=a if output is _APP else output,
                metadata={"system_prompt": SYSTEM_PROMPT} if metadata is _APP else metadata,
            )
        )
    return out


def scores_by_trace(lf: LangfuseSandbox) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for s in lf.store.all_scores():
        out.setdefault(s.trace_id or "", []).append(s)
    return out


def with_options(params: dict[str, Any]) -> dict[str, Any]:
    """Flow keyword arguments with the EvalOptions fields gathered into ``options``, as the
    plain dict a deployment run passes (Prefect validates it when the flow is called)."""
    from flows.options import EvalOptions

    fields = {k: v for k, v in params.items() if k in EvalOptions.model_fields}
    rest = {k: v for k, v in params.items() if k not in fields}
    if fields:
        base = rest.pop("options", None)
        given = base.model_dump(exclude_defaults=True) if isinstance(base, EvalOptions) else {}
        rest["options"] = given | fields
    return rest


def windows_at_once(runs: Sequence[str | list[str]], own_score: bool = True) -> list[EvalReport]:
    """One window run (``WINDOW``) per entry (a tag, or a list of tags), all at once in
    threads; their reports, or the first error raised. ``own_score``: each run writes a score
    name of its own (``trust_0``, ``trust_1``...), so the runs neither lock nor pay as one (runs
    of one score name and project take the same window lock)."""
    from flows.evaluate_traces import evaluate_traces
    from flows.options import EvalOptions

    reports: list[EvalReport] = []
    errors: list[BaseException] = []

    def one(i: int, tags: str | list[str]) -> None:
        opts = EvalOptions(score_name=f"trust_{i}" if own_score else "trust_score")
        try:
            tag_list = [tags] if isinstance(tags, str) else tags
            reports.append(evaluate_traces(tags=tag_list, options=opts, **WINDOW))
        except BaseException as err:  # raised below
            errors.append(err)

    threads = [threading.Thread(target=one, args=(i, t)) for i, t in enumerate(runs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return reports


def artifact_keys(flow_run_id: str | None) -> set[str]:
    """The keys of the artifacts a flow run made (its progress bar left out)."""
    from uuid import UUID

    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    assert flow_run_id is not None
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)])
            )
        )
    return {a.key for a in found if a.key and a.key != "trust-progress"}
