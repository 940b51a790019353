"""The report: every fetched trace in exactly one bucket, and the Prefect artifacts of a run."""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, Field

from tasks.evals import CAUSES, EvalPlan, call_chars
from tasks.failures import Reason
from tasks.models import Bucket, Outcome, Pair, preview

HIST_BINS = 10


class LowTrustRow(BaseModel):
    trace_id: str
    observation_id: str | None = None
    name: str | None
    score: float
    explanation: str | None
    start_time: datetime | None
    url: str | None
    question: str | None = None
    answer: str | None = None
    cause: str | None = None


class StageCost(BaseModel):
    """One stage's TLM work (scoring, explaining): calls, estimated tokens, estimated cost."""

    calls: int = 0
    tokens: int = 0
    cost: float | None = None  # None: no price configured


class EvalReport(BaseModel):
    """What a window run did. ``fetched`` always equals the sum of the buckets."""

    window_start: datetime
    window_end: datetime
    tags: list[str]
    score_name: str
    scope: str = "trace"  # "generation": the units counted are GENERATION observations
    dry_run: bool = False
    fetched: int = 0
    already_scored: int = 0
    skipped: dict[str, list[str]] = Field(default_factory=dict)  # reason -> trace ids
    failed_to_score: dict[str, list[str]] = Field(default_factory=dict)
    uploaded: int = 0
    failed_to_upload: dict[str, list[str]] = Field(default_factory=dict)
    details: dict[str, str] = Field(default_factory=dict)  # "bucket/reason" -> its first detail
    would_score: int = 0  # dry run only: paired, not sent to TLM
    tlm_requests: int = 0
    langfuse_requests: int = 0
    tlm_slot_wait_s: float = 0.0  # waiting for slots of the shared TLM limit
    histogram: list[int] = Field(default_factory=lambda: [0] * HIST_BINS)
    score_sum: float = 0.0
    low_trust_threshold: float = 0.5
    low_trust_count: int = 0
    lowest: list[LowTrustRow] = Field(default_factory=list)
    capped: bool = False  # max_traces stopped the run before the window's end
    labels_failed: int = 0  # companion label scores refused (their trust scores landed)
    queued_for_review: int = 0
    already_in_review: int = 0
    flow_run_id: str | None = None
    langfuse_server: str | None = None  # e.g. "Langfuse 4.16.0"
    already_pending: int = 0  # of already_scored: written by a run, not yet readable
    existing_scored: int = 0  # already-scored units whose value is known
    existing_sum: float = 0.0
    existing_low: int = 0  # already-scored units below the threshold
    resent: int = 0  # scores paid for by an earlier run, re-sent without TLM
    read_back: int = 0  # scores read back after a 207
    confirmed: int | None = None  # accepted scores read back (verify step); None: not checked
    not_confirmed: list[str] = Field(default_factory=list)
    pair_sources: dict[str, int] = Field(default_factory=dict)  # what pairs were built from
    generations_by_trace_id: bool = False  # the app tags only root spans
    would_score_chars: int = 0  # dry run: characters of prompt and response
    estimated_tokens: int = 0  # dry run: TLM tokens at the run's preset (its multiplier)
    estimated_cost_usd: float | None = None  # dry run, when a token price is configured
    langfuse_traces_url: str | None = None  # the project's traces in the Langfuse UI
    explain: str = "all"  # "low_trust": only scores below the threshold were explained
    stages: dict[str, StageCost] = Field(default_factory=dict)  # "scoring", "explaining"
    explain_all: StageCost | None = None  # explain=low_trust: explain=all's cost, same units
    explain_all_preset: str | None = None  # the preset that comparison is priced at
    explanations_failed: int = 0  # explanation calls that brought none (the score landed)
    max_cost: float | None = None  # the run's budget
    warnings: list[str] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)
    rag_evals: bool = False  # traces with context scored by TrustworthyRAG
    rag_units: int = 0  # sent to TrustworthyRAG (dry run: would be)
    no_context_units: int = 0  # with rag_evals: no retrieved context, sent to plain TLM
    causes: dict[str, int] = Field(default_factory=dict)  # low-trust units scored, by cause
    failed_evals: dict[str, dict[str, int]] = Field(default_factory=dict)  # eval -> why -> n

    # --- accounting -------------------------------------------------------------------------

    @staticmethod
    def _n(groups: dict[str, list[str]]) -> int:
        return sum(len(v) for v in groups.values())

    def counts(self) -> dict[str, int]:
        return {
            Bucket.ALREADY_SCORED.value: self.already_scored,
            Bucket.SKIPPED.value: self._n(self.skipped),
            Bucket.FAILED_TO_SCORE.value: self._n(self.failed_to_score),
            Bucket.UPLOADED.value: self.uploaded,
            Bucket.FAILED_TO_UPLOAD.value: self._n(self.failed_to_upload),
            "would_score": self.would_score,
        }

    def accounted(self) -> int:
        return sum(self.counts().values())

    def count_sent(self, fresh: list[Pair], again: list[Any], plan: EvalPlan | None = None) -> None:
        """A chunk's units for TLM (``fresh``) and its re-sent scores; a dry run only counts
        what it would send, and its characters (for the estimate: with RAG evals and criteria,
        what those calls send too)."""
        if self.rag_evals:
            rag = sum(p.context is not None for p in fresh)
            self.rag_units += rag
            self.no_context_units += len(fresh) - rag
        if self.dry_run:
            self.would_score += len(fresh) + len(again)
            self.would_score_chars += sum(
                call_chars(plan, p.prompt, p.response, p.context) for p in fresh
            )
        else:
            self.tlm_requests += len(fresh)

    def close(
        self,
        langfuse_requests: int,
        price_per_1k_tokens: float | None,
        preset_multiplier: float = 1.0,
    ) -> None:
        """The run's last figures, and the accounting check (a bug if it ever trips). A dry
        run's estimate: characters / 4 tokens of prompt and response, times what the preset
        costs per token (``TRUST_EVAL_PRESET_COST_MULTIPLIERS``)."""
        self.langfuse_requests = langfuse_requests
        if self.dry_run:
            self.estimated_tokens = round(self.would_score_chars / 4 * preset_multiplier)
            if price_per_1k_tokens is not None:
                cost = self.estimated_tokens / 1000 * price_per_1k_tokens
                self.estimated_cost_usd = round(cost, 4)
        if self.accounted() != self.fetched:
            self.errors.append(
                f"accounting error: {self.accounted()} outcomes for {self.fetched} traces"
            )

    def groups(self) -> list[tuple[str, Bucket, dict[str, list[str]]]]:
        """The buckets that group units by reason: (title, bucket, reason -> unit ids)."""
        return [
            ("Skipped", Bucket.SKIPPED, self.skipped),
            ("Failed to score", Bucket.FAILED_TO_SCORE, self.failed_to_score),
            ("Failed to upload", Bucket.FAILED_TO_UPLOAD, self.failed_to_upload),
        ]

    def why(self, bucket: Bucket, reason: str) -> str:
        """A reason of a bucket as the report shows it: with the first detail seen."""
        detail = self.details.get(f"{bucket.value}/{reason}")
        return f"{reason}: {detail}" if detail else reason

    @property
    def ok(self) -> bool:
        return not self.errors and not self.failed_to_score and not self.failed_to_upload

    @property
    def mean_score(self) -> float | None:
        """Mean of the scores this run wrote."""
        return self.score_sum / self.uploaded if self.uploaded else None

    @property
    def scored_total(self) -> int:
        """Units of the window that carry a score now: written by this run or already there."""
        return self.uploaded + self.existing_scored

    @property
    def mean_total(self) -> float | None:
        n = self.scored_total
        return (self.score_sum + self.existing_sum) / n if n else None

    @property
    def low_total(self) -> int:
        return self.low_trust_count + self.existing_low

    def add(self, outcome: Outcome) -> None:
        b = outcome.bucket
        reason = str(outcome.reason) if outcome.reason is not None else "unknown"
        if outcome.detail and b is not Bucket.ALREADY_SCORED:
            self.details.setdefault(f"{b.value}/{reason}", outcome.detail)
        if b is Bucket.ALREADY_SCORED:
            self.already_scored += 1
            self.already_pending += outcome.reason is Reason.PENDING
        elif b is Bucket.SKIPPED:
            self.skipped.setdefault(reason, []).append(outcome.key)
        elif b is Bucket.FAILED_TO_SCORE:
            self.failed_to_score.setdefault(reason, []).append(outcome.key)
        elif b is Bucket.FAILED_TO_UPLOAD:
            self.failed_to_upload.setdefault(reason, []).append(outcome.key)
        elif b is Bucket.UPLOADED:
            assert outcome.score is not None
            self.uploaded += 1
            self.score_sum += outcome.score
            self.histogram[min(int(outcome.score * HIST_BINS), HIST_BINS - 1)] += 1
            if outcome.score < self.low_trust_threshold:
                self.low_trust_count += 1
            if outcome.cause is not None:
                self.causes[outcome.cause] = self.causes.get(outcome.cause, 0) + 1
            for name, why in (outcome.failed_evals or {}).items():
                reasons = self.failed_evals.setdefault(name, {})
                reasons[why] = reasons.get(why, 0) + 1

    def add_existing(self, value: float | None) -> None:
        """The value of a unit that already carried its score (so re-runs report it too)."""
        if value is None:
            return
        self.existing_scored += 1
        self.existing_sum += value
        self.existing_low += value < self.low_trust_threshold

    def count_sources(self, sources: Iterable[str]) -> None:
        for src in sources:
            kind = "generation" if src == "generation" else "root input/output"
            self.pair_sources[kind] = self.pair_sources.get(kind, 0) + 1


@dataclass(frozen=True, slots=True, order=True)
class LowTrust:
    """A unit below the low-trust threshold: what a review queue receives."""

    score: float
    object_id: str  # the trace, or the observation in observation scope
    object_type: str  # "TRACE" or "OBSERVATION"


def review_order(low: list[LowTrust], limit: int | None) -> list[LowTrust]:
    """Lowest score first (ties by id, so re-runs agree), at most ``limit`` of them."""
    ranked = sorted(low)
    return ranked if limit is None else ranked[:limit]


class Lowest:
    """The N lowest-scored uploads, kept in a bounded heap (a window may hold 100k traces)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._heap: list[tuple[float, str, Outcome]] = []

    def offer(self, outcome: Outcome) -> None:
        assert outcome.score is not None
        item = (-outcome.score, outcome.key, outcome)
        if len(self._heap) < self.n:
            heapq.heappush(self._heap, item)
        elif item > self._heap[0]:
            heapq.heapreplace(self._heap, item)

    def rows(self, link: Any) -> list[LowTrustRow]:
        ordered = sorted(self._heap, key=lambda t: (-t[0], t[1]))
        return [
            LowTrustRow(
                trace_id=o.trace_id,
                observation_id=o.observation_id,
                name=o.name,
                score=o.score or 0.0,
                explanation=o.explanation,
                start_time=o.start_time,
                url=link(o.trace_id, o.observation_id),
                question=o.question,
                answer=o.answer,
                cause=o.cause,
            )
            for _, _, o in ordered
        ]


def trace_url(ui_base: str, project: str, trace_id: str, observation_id: str | None = None) -> str:
    """A trace (or one of its observations) in the Langfuse UI."""
    url = f"{ui_base.rstrip('/')}/project/{project}/traces/{trace_id}"
    return f"{url}?observation={observation_id}" if observation_id else url


class Tally:
    """Where a run's outcomes go: the report's buckets, the lowest-trust table, and the units
    below the threshold (for review), whether this run scored them or found them scored."""

    def __init__(self, report: EvalReport, lowest_n: int) -> None:
        self.report = report
        self.lowest = Lowest(lowest_n)
        self.values: dict[str, float | None] = {}  # already-scored units: their value
        self.low: dict[str, LowTrust] = {}  # units below the threshold

    def add(self, outcomes: Iterable[Outcome]) -> None:
        thr = self.report.low_trust_threshold
        for o in outcomes:
            self.report.add(o)
            value = o.score if o.bucket is Bucket.UPLOADED else None
            if o.bucket is Bucket.UPLOADED:
                self.lowest.offer(o)
            elif o.bucket is Bucket.ALREADY_SCORED:
                value = self.values.get(o.key)
                self.report.add_existing(value)
            if value is not None and value < thr:
                kind = "OBSERVATION" if o.observation_id else "TRACE"
                self.low[o.key] = LowTrust(value, o.observation_id or o.trace_id, kind)


# --- rendering ----------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+!|~])")


def md_escape(text: str | None, limit: int = 400) -> str:
    """Text safe inside a markdown table cell: no markup, no HTML, one line."""
    if not text:
        return ""
    one_line = " ".join(text.split())
    if len(one_line) > limit:
        one_line = one_line[: limit - 1] + "…"
    return _MD_SPECIAL.sub(r"\\\1", one_line)


def md_code(text: str | None, limit: int = 80) -> str:
    """An id or name shown as plain, escaped text (never a code span it could break out of)."""
    return md_escape(text, limit)


def md_link(text: str, url: str) -> str:
    """A markdown link whose target cannot end early or carry markup."""
    safe_url = quote(url, safe=":/?=&#%~.-_")
    return f"[{md_escape(text, 80)}]({safe_url})"


def histogram_lines(hist: list[int], width: int = 30) -> list[str]:
    top = max(hist) if any(hist) else 1
    lines = []
    for i, n in enumerate(hist):
        lo, hi = i / HIST_BINS, (i + 1) / HIST_BINS
        bar = "█" * round(width * n / top)
        lines.append(f"{lo:.1f}–{hi:.1f} | {bar} {n}")
    return lines


def summary_markdown(report: EvalReport, table_url: str | None = None) -> str:
    """The run's summary; the mean and the low-trust count cover every scored unit of the
    window, the ones already scored before this run included."""
    c = report.counts()
    mean = f"{report.mean_total:.3f}" if report.mean_total is not None else "–"
    status = "OK" if report.ok else "FAILED" if report.errors else "completed with failures"
    links = [md_link("Lowest-trust traces", table_url)] if table_url else []
    if report.langfuse_traces_url:
        links.append(md_link("the traces in Langfuse", report.langfuse_traces_url))
    lines = [
        f"# Trust scores: {report.window_start:%Y-%m-%d %H:%M} → "
        f"{report.window_end:%Y-%m-%d %H:%M} UTC",
        "",
        f"**Status:** {status}{' (dry run: nothing scored)' if report.dry_run else ''}  ",
        f"**Tags:** {md_escape(', '.join(report.tags)) or '(any)'} · "
        f"**Score:** {md_code(report.score_name)}"
        f" · **Mean trust:** {mean} over {report.scored_total} scored · "
        f"**Below {report.low_trust_threshold}:** {report.low_total}  ",
        *([" · ".join(links)] if links else []),
        "",
        "| fetched | already scored | skipped | failed to score | uploaded | failed to upload |"
        + (" would score |" if report.dry_run else ""),
        "|---:|---:|---:|---:|---:|---:|" + ("---:|" if report.dry_run else ""),
        f"| {report.fetched} | {c['already_scored']} | {c['skipped']} | {c['failed_to_score']} "
        f"| {c['uploaded']} | {c['failed_to_upload']} |"
        + (f" {c['would_score']} |" if report.dry_run else ""),
        "",
        f"TLM items sent: {report.tlm_requests} · Langfuse requests: {report.langfuse_requests}"
        + (
            f" · waited {report.tlm_slot_wait_s:.0f} s for shared TLM slots"
            if report.tlm_slot_wait_s >= 1
            else ""
        )
        + (f" · {md_escape(report.langfuse_server)}" if report.langfuse_server else ""),
    ]
    lines += _delivery_lines(report)
    if report.queued_for_review or report.already_in_review:
        lines += [
            "",
            f"Review queue: {report.queued_for_review} added, "
            f"{report.already_in_review} already queued.",
        ]
    if report.labels_failed:
        lines += ["", f"_{report.labels_failed} trust labels were refused by Langfuse._"]
    if report.capped:
        lines += ["", "_max_traces reached: later traces of the window were not fetched._"]
    lines += eval_lines(report)
    if report.uploaded:
        lines += ["", "## Score histogram", "", "```", *histogram_lines(report.histogram), "```"]
    for title, bucket, groups in report.groups():
        if groups:
            lines += ["", f"## {title}", "", "| reason | traces | e.g. |", "|---|---:|---|"]
            for reason, ids in sorted(groups.items(), key=lambda kv: -len(kv[1])):
                why = md_escape(report.why(bucket, reason), 200)
                lines.append(f"| {why} | {len(ids)} | {md_code(ids[0])} |")
    if report.errors:
        lines += ["", "## Errors", ""] + [f"- {md_escape(e, 1000)}" for e in report.errors]
    return "\n".join(lines)


def eval_lines(report: EvalReport) -> list[str]:
    """RAG evals and criteria: how many went to TrustworthyRAG, the causes of low trust, the
    evals TLM did not score."""
    out: list[str] = []
    if report.rag_evals:
        out += [
            "",
            f"RAG evals: {report.rag_units} traces with retrieved context scored by "
            f"TrustworthyRAG, {report.no_context_units} without context by TLM.",
        ]
    if report.causes:
        total = sum(report.causes.values())
        out += ["", "## Causes of low trust", "", "| cause | traces | share |", "|---|---:|---:|"]
        for cause, n in sorted(report.causes.items(), key=lambda kv: (-kv[1], kv[0])):
            out.append(f"| {md_escape(cause)} | {n} | {n / total:.0%} |")
    if report.failed_evals:
        out += ["", "## Evals not written", "", "| score | why | traces |", "|---|---|---:|"]
        for name, reasons in sorted(report.failed_evals.items()):
            for why, n in sorted(reasons.items()):
                out.append(f"| {md_code(name)} | {md_escape(why)} | {n} |")
    return out


def cause_shares(report: EvalReport) -> dict[str, float]:
    """Each cause's share of the low-trust units this run scored with RAG evals."""
    total = sum(report.causes.values())
    return {c: round(n / total, 4) for c, n in sorted(report.causes.items())} if total else {}


def top_cause(report: EvalReport) -> str:
    """The most frequent cause of the run's low-trust units ("none" when it classified none;
    ties: the rule's order)."""
    if not report.causes:
        return "none"
    order = {c: i for i, c in enumerate(CAUSES)}
    return min(report.causes, key=lambda c: (-report.causes[c], order.get(c, len(order))))


def _delivery_lines(report: EvalReport) -> list[str]:
    """Accepted is what Langfuse took; confirmed only what was read back."""
    out: list[str] = []
    if report.uploaded:
        if report.confirmed is None:
            what = "not read back (set TRUST_EVAL_VERIFY_WAIT_S to confirm)"
        else:
            what = f"{report.confirmed} confirmed by reading them back"
        out.append(f"Accepted by Langfuse: {report.uploaded}; {what}.")
    if report.not_confirmed:
        out.append(
            f"**{len(report.not_confirmed)} accepted scores did not show in Langfuse** "
            f"(e.g. {md_code(report.not_confirmed[0])}): the next run re-sends them."
        )
    if report.already_pending:
        out.append(
            f"{report.already_pending} of the already-scored were written by a recent run and "
            "are not readable in Langfuse yet (read lag)."
        )
    if report.resent:
        out.append(f"{report.resent} scores paid for earlier were re-sent without TLM.")
    if report.existing_scored:
        mean = report.existing_sum / report.existing_scored
        out.append(
            f"Already-scored units: mean trust {mean:.3f}, {report.existing_low} below "
            f"{report.low_trust_threshold}."
        )
    if report.pair_sources:
        parts = ", ".join(f"{k} {v}" for k, v in sorted(report.pair_sources.items()))
        out.append(f"Prompts built from: {parts}.")
        if report.pair_sources.get("root input/output"):
            out.append(
                "Traces with no GENERATION observation found (by tag, or by trace id where the "
                "app tags only its root span) were paired from the root's input and output."
            )
    if report.dry_run and report.would_score:
        chars = report.would_score_chars
        cost = report.estimated_cost_usd
        out.append(
            f"Dry run: {report.would_score} TLM items, {chars} characters of prompt and "
            f"response (about {report.estimated_tokens} TLM tokens at the run's preset"
            + (f", about ${cost:.2f} at the configured price)." if cost is not None else ").")
        )
    out += stage_lines(report)
    out += [f"_Warning: {md_escape(w, 300)}_" for w in report.warnings]
    return ["", *[line + "  " for line in out]] if out else []


def _money(cost: float | None) -> str:
    return "no price set" if cost is None else f"${cost:.4f}"


def stage_lines(report: EvalReport) -> list[str]:
    """TLM per stage (estimated: characters / 4 tokens times the stage's multiplier)."""
    if not report.stages:
        return []
    head = "Dry run, at most: " if report.dry_run else "TLM "
    parts = [
        f"{name} {s.calls} calls, ~{s.tokens} tokens, {_money(s.cost)}"
        for name, s in report.stages.items()
    ]
    out = [head + "; ".join(parts) + f" (explain={report.explain})."]
    if (every := report.explain_all) is not None:
        out.append(
            f"explain=all at {report.explain_all_preset} would have cost {_money(every.cost)} "
            f"(~{every.tokens} tokens)."
        )
    if report.max_cost is not None:
        over = len(report.skipped.get(Reason.OVER_BUDGET.value, []))
        out.append(
            f"Budget {_money(report.max_cost)}"
            + (f": reached, {over} traces left over_budget for the next run." if over else ".")
        )
    if report.explanations_failed:
        out.append(f"{report.explanations_failed} explanation calls brought no explanation.")
    return out


def short_id(trace_id: str) -> str:
    return trace_id if len(trace_id) <= 10 else trace_id[:8] + "…"


# The lowest-trust table on the Prefect UI's artifact page (cells do not wrap): at 1400 px the
# page leaves about 830 px to the table, so rank, score, trace, the explanation and the answer
# fit on the first screen; the full explanation is the score's comment on the trace in Langfuse.
WHY_CHARS, ANSWER_CHARS, QUESTION_CHARS = 56, 24, 60
TABLE_NOTE = "explanations shortened: the full text is the score's comment on the trace"


def lowest_table(rows: list[LowTrustRow]) -> list[dict[str, Any]]:
    """Rank, score and the way to the trace first; then why (shortened), the answer, the
    question."""
    return [
        {
            "rank": i + 1,
            "score": f"{r.score:.3f}",  # aligned: 0.090, not 0.09
            "trace": md_link(short_id(r.trace_id), r.url)
            if r.url
            else md_code(short_id(r.trace_id)),
            "explanation": md_escape(r.explanation, WHY_CHARS),
            **({"cause": md_escape(r.cause)} if any(x.cause for x in rows) else {}),
            "answer": md_escape(r.answer, ANSWER_CHARS),
            "question": md_escape(r.question, QUESTION_CHARS),
        }
        for i, r in enumerate(rows)
    ]


def text_table(report: EvalReport, limit: int = 20) -> str:
    """The ranked table for a terminal: the explanation shortened (its full text: the trace's
    score comment in Langfuse)."""
    rows = report.lowest[:limit]
    if not rows:
        return "(no scores uploaded)"
    out = [f"{'#':>3}  {'score':>5}  {'trace':<9}  {'question':<32}  {'answer':<22}  why"]
    for i, r in enumerate(rows, 1):
        q = preview(r.question or r.name or r.trace_id, 32)
        out.append(
            f"{i:>3}  {r.score:>5.3f}  {short_id(r.trace_id):<9}  {q:<32}  "
            f"{preview(r.answer or '', 22):<22}  {preview(r.explanation or '–', 50)}"
            + (f"  [{r.cause}]" if r.cause else "")
        )
    if rows[0].url:
        out.append(f"Lowest in Langfuse (the full explanation): {rows[0].url}")
    return "\n".join(out)


EVENT_EVALUATED = "trust-eval.window.evaluated"
EVENT_LOW_TRUST = "trust-eval.window.low-trust"


def event_payload(report: EvalReport) -> dict[str, Any]:
    scored = report.uploaded + report.counts()[Bucket.FAILED_TO_UPLOAD.value]
    failures = (
        report.counts()[Bucket.FAILED_TO_SCORE.value]
        + report.counts()[Bucket.FAILED_TO_UPLOAD.value]
    )
    return {
        "window_start": report.window_start.isoformat(),
        "window_end": report.window_end.isoformat(),
        "tags": report.tags,
        "score_name": report.score_name,
        "fetched": report.fetched,
        "scored": scored,
        "uploaded": report.uploaded,
        "already_scored": report.already_scored,
        "skipped": report.counts()[Bucket.SKIPPED.value],
        "failures": failures,
        "low_trust_count": report.low_trust_count,
        "low_trust_share": round(report.low_trust_count / report.uploaded, 4)
        if report.uploaded
        else 0.0,
        "mean_score": report.mean_score,
        "ok": report.ok,
        "causes": dict(report.causes),
        "cause_shares": cause_shares(report),
    }
