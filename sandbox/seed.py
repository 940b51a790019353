"""`python -m sandbox seed`: past-dated trivia traces into a RUNNING sandbox Langfuse.

One batch per past UTC day (the ``--days`` days before today, ``--per-day`` traces each, spread
over the day), through the real Langfuse SDK (OTLP export), shaped like the trivia app's traces
(:mod:`sandbox.trivia_app`): a root span ``answer_trivia`` with ``@observe``'s input, a
GENERATION child holding the chat messages, the tags, trace name and system prompt set with
``propagate_attributes``. Each day holds the seed's five questions (the recorded answers are
partly wrong, so scores vary) and then synthetic ones, answered as the OpenAI sandbox answers
them. With traces on past days, a window run, a backfill and the Prefect UI can be tried
offline::

    python -m sandbox                                  # in one shell (stable keys)
    python -m sandbox seed --days 7 --per-day 20       # in another
    source .sandbox.env && python -m flows.cli backfill --start-date ... --end-date ...

The SDK stamps observations with the current time; the only way to date them is the OTel tracer
under the client, which takes explicit start and end times (the SDK's own ``create_event`` does
the same). Its spans are wrapped in the SDK's ``LangfuseSpan`` / ``LangfuseGeneration``, so the
attributes on the wire are the SDK's own.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING

from sandbox.openai_app import answer_for, estimate_tokens, prompt_tokens
from sandbox.serve import DEFAULT_LANGFUSE_PORT, langfuse_keys
from sandbox.trivia_app import (
    MODEL,
    ROOT_NAME,
    SEED_QUESTIONS,
    SHOP_DOCS,
    SYSTEM_PROMPT,
    TAG,
    TRACE_NAME,
    messages_for,
    rag_questions,
    synthetic_questions,
)

if TYPE_CHECKING:
    from langfuse import Langfuse

DAY = timedelta(days=1)
# how long an answer "took": the generation starts 20 ms into the root span and lasts 1.2 s
_GEN_OFFSET = timedelta(milliseconds=20)
_GEN_TIME = timedelta(seconds=1.2)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ns(at: datetime) -> int:
    """Nanoseconds since the epoch, exact (no float rounding)."""
    return (at - _EPOCH) // timedelta(microseconds=1) * 1000


def trace_answer_at(
    langfuse: Langfuse,
    question: str,
    at: datetime,
    *,
    tags: Sequence[str] = (TAG,),
    system_prompt: str = SYSTEM_PROMPT,
) -> str:
    """Trace one trivia answer that started at ``at`` (not flushed); its trace id."""
    from langfuse import LangfuseGeneration, LangfuseSpan, propagate_attributes
    from opentelemetry import trace as otel_trace

    tracer = langfuse._otel_tracer  # the client's own tracer: it takes explicit times
    answer = answer_for(question)
    messages = messages_for(question, system_prompt)
    root_span = tracer.start_span(ROOT_NAME, start_time=_ns(at))
    root = LangfuseSpan(
        otel_span=root_span,
        langfuse_client=langfuse,
        input={"args": [question], "kwargs": {}},
        output=answer,
    )
    with (
        otel_trace.use_span(root_span, end_on_exit=False),
        propagate_attributes(
            tags=list(tags), trace_name=TRACE_NAME, metadata={"system_prompt": system_prompt}
        ),
    ):
        generation = LangfuseGeneration(
            otel_span=tracer.start_span("OpenAI-generation", start_time=_ns(at + _GEN_OFFSET)),
            langfuse_client=langfuse,
            input=messages,
            output={"role": "assistant", "content": answer},
            model=MODEL,
            model_parameters={"temperature": 0},
            usage_details={
                "prompt_tokens": prompt_tokens(messages),
                "completion_tokens": estimate_tokens(answer),
            },
        )
        generation.end(end_time=_ns(at + _GEN_OFFSET + _GEN_TIME))
    root.end(end_time=_ns(at + 2 * _GEN_OFFSET + _GEN_TIME))
    return root.trace_id


def trace_rag_answer_at(
    langfuse: Langfuse, question: str, doc: str, at: datetime, *, tags: Sequence[str] = (TAG,)
) -> str:
    """Trace one answer of the RAG app (:func:`sandbox.trivia_app.trace_rag_answers`) that
    started at ``at``: a root span, a RETRIEVER child whose output is the document found, and
    the GENERATION with the document in its system prompt (not flushed); its trace id."""
    from langfuse import LangfuseGeneration, LangfuseRetriever, LangfuseSpan, propagate_attributes
    from opentelemetry import trace as otel_trace

    tracer = langfuse._otel_tracer
    docs = [{"page_content": SHOP_DOCS[doc]}]
    system = "Answer from the context.\n\nContext:\n" + SHOP_DOCS[doc]
    answer = answer_for(question)
    messages = messages_for(question, system)
    root_span = tracer.start_span("answer_shop_question", start_time=_ns(at))
    root = LangfuseSpan(
        otel_span=root_span, langfuse_client=langfuse,
        input={"args": [question, doc], "kwargs": {}}, output=answer,
    )  # fmt: skip
    with (
        otel_trace.use_span(root_span, end_on_exit=False),
        propagate_attributes(tags=list(tags), trace_name="shop-rag"),
    ):
        retriever = LangfuseRetriever(
            otel_span=tracer.start_span("search_docs", start_time=_ns(at + _GEN_OFFSET)),
            langfuse_client=langfuse, input={"args": [question, doc], "kwargs": {}}, output=docs,
        )  # fmt: skip
        retriever.end(end_time=_ns(at + 2 * _GEN_OFFSET))
        generation = LangfuseGeneration(
            otel_span=tracer.start_span("OpenAI-generation", start_time=_ns(at + 3 * _GEN_OFFSET)),
            langfuse_client=langfuse, input=messages,
            output={"role": "assistant", "content": answer}, model=MODEL,
        )  # fmt: skip
        generation.end(end_time=_ns(at + 3 * _GEN_OFFSET + _GEN_TIME))
    root.end(end_time=_ns(at + 4 * _GEN_OFFSET + _GEN_TIME))
    return root.trace_id


def questions_for(day: date, n: int) -> list[str]:
    """A day's ``n`` questions: the seed's five first (partly wrong answers), then synthetic
    ones that differ from day to day."""
    return (SEED_QUESTIONS + synthetic_questions(n, seed=day.toordinal()))[:n]


def past_days(days: int, today: date | None = None) -> list[date]:
    """The ``days`` UTC days before ``today`` (default: today in UTC), oldest first."""
    today = today or datetime.now(UTC).date()
    return [today - k * DAY for k in range(days, 0, -1)]


def seed_days(
    langfuse: Langfuse,
    *,
    days: int,
    per_day: int,
    tags: Sequence[str] = (TAG,),
    today: date | None = None,
    rag_per_day: int = 0,
) -> dict[date, list[str]]:
    """Trace ``per_day`` answers on each of the ``days`` UTC days before ``today``, evenly
    spread over the day (and ``rag_per_day`` answers of the RAG app, with a retrieval step),
    and flush once per day (one export batch per day); the trace ids by day."""
    if days < 1 or per_day < 1:
        raise ValueError("days and per_day must be >= 1")
    step = DAY / per_day
    out: dict[date, list[str]] = {}
    for day in past_days(days, today):
        start = datetime.combine(day, time(), UTC) + step / 2
        out[day] = [
            trace_answer_at(langfuse, question, start + i * step, tags=tags)
            for i, question in enumerate(questions_for(day, per_day))
        ]
        rag_step = DAY / max(rag_per_day, 1)
        out[day] += [
            trace_rag_answer_at(langfuse, q, doc, start + i * rag_step + step / 4, tags=tags)
            for i, (q, doc) in enumerate(rag_questions(rag_per_day))
        ]
        langfuse.flush()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox seed", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--days", type=int, default=7, help="past UTC days to fill (default 7)")
    parser.add_argument("--per-day", type=int, default=20, help="traces per day (default 20)")
    parser.add_argument(
        "--tag", action="append", dest="tags", help=f"trace tag, repeatable (default {TAG})"
    )
    parser.add_argument(
        "--rag-per-day", type=int, default=0,
        help="answers of the RAG app (a retrieval step) per day, for --rag-evals (default 0)",
    )  # fmt: skip
    parser.add_argument(
        "--langfuse-url",
        default=f"http://127.0.0.1:{DEFAULT_LANGFUSE_PORT}",
        help="the running sandbox Langfuse (default %(default)s)",
    )
    public_key, secret_key = langfuse_keys()
    parser.add_argument("--public-key", default=public_key, help="default: %(default)s")
    parser.add_argument("--secret-key", default=secret_key, help="default: %(default)s")
    args = parser.parse_args(argv)
    if args.days < 1 or args.per_day < 1:
        parser.error("--days and --per-day must be >= 1")
    tags = args.tags or [TAG]

    from langfuse import Langfuse

    langfuse = Langfuse(
        public_key=args.public_key, secret_key=args.secret_key, base_url=args.langfuse_url
    )
    try:
        if not langfuse.auth_check():
            raise RuntimeError("the key pair was refused")
    except Exception as exc:
        print(
            f"No sandbox Langfuse at {args.langfuse_url} with key {args.public_key} ({exc}).\n"
            "Start one with `make sandbox` (or `python -m sandbox`) first.",
        )
        return 1
    by_day = seed_days(
        langfuse, days=args.days, per_day=args.per_day, tags=tags, rag_per_day=args.rag_per_day
    )
    langfuse.shutdown()
    for day, ids in by_day.items():
        print(f"{day}: {len(ids)} traces, tags {', '.join(tags)}")
    first, last = min(by_day), max(by_day)
    print(
        f"\nSeeded {sum(map(len, by_day.values()))} traces into {args.langfuse_url}. Try:\n"
        "  source .sandbox.env\n"
        f"  python -m flows.cli window --start {last} --end {last + DAY} --tag {tags[0]}\n"
        f"  python -m flows.cli backfill --start-date {first} --end-date {last} --tag {tags[0]}"
    )
    return 0
