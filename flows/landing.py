"""Where a window run's paid work goes: each chunk TLM finished, its scores (and the scores
re-sent with it) to Langfuse, every unit's outcome to the tally, what Langfuse took to the
score book; then the low-trust units to the review queue."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from prefect.exceptions import Abort

from flows.options import EvalOptions
from flows.scoring import Chunk, TLMHealth, bulk
from flows.stopping import critical
from tasks.config import RunLogger
from tasks.errors import StageError, stage
from tasks.failures import Reason
from tasks.langfuse_api import Access, Calls, Server
from tasks.models import Bucket, Scored, outcome_for
from tasks.report import EvalReport, Tally, review_order
from tasks.retry import describe
from tasks.review import review_task
from tasks.score import ScoreResult
from tasks.scorebook import ScoreBook, read_back
from tasks.upload import LabelSpec, ScoreSpec, upload_task

DEFAULT_MODEL = "gpt-4.1-mini"  # TLM's default model (we do not override it)


def project_version() -> str:
    try:
        return version("langfuse-tlm-evals")
    except PackageNotFoundError:
        return "0+unknown"


def score_spec(
    opts: EvalOptions, config_ids: dict[str, str], run_id: str | None, comment_max_chars: int
) -> ScoreSpec:
    """What every score of the run carries besides its value."""
    label = None
    if opts.label_name:
        label = LabelSpec(
            opts.label_name, opts.low_trust_threshold, opts.untrustworthy_below,
            config_ids.get(opts.label_name),
        )  # fmt: skip
    meta = {  # small on purpose: it is sent with every score (1000 must fit one 1 MB POST)
        "evaluator": f"langfuse-tlm-evals {project_version()}",
        "tlm_quality_preset": opts.quality_preset,
        "tlm_model": DEFAULT_MODEL,
        "prefect_flow_run_id": run_id,
    }
    configs = {n: config_ids[n] for n in opts.plan.all_names if n in config_ids}
    return ScoreSpec(
        opts.score_name, meta, config_ids.get(opts.score_name), label, comment_max_chars, configs
    )


@dataclass
class Landing:
    lf: Access
    spec: ScoreSpec
    server: Server  # the write path, as the uploads left it
    book: ScoreBook
    tally: Tally
    health: TLMHealth
    logger: RunLogger

    def land(self, chunk: Chunk, result: ScoreResult | None) -> None:
        """A chunk's scores (and its re-sends) go to Langfuse; then, if TLM failed as a whole
        (a refused key, a lost slot lease), the run stops: what it paid for has landed."""
        scored: list[Scored] = []
        down: StageError | None = None
        if result is not None:
            # counted when handed to TLM; a stopped run never sent some of them
            self.tally.report.tlm_requests -= max(chunk.pairs - result.tlm_requests, 0)
            self.tally.add(result.failed)
            scored = result.scored
            try:
                self.health.check(result, chunk.pairs, self.logger)
            except StageError as err:
                down = err
        if chunk.again:
            self.tally.report.resent += len(chunk.again)
            self.logger.info(
                "chunk %d: re-sending %d scores paid for earlier that Langfuse does not show",
                chunk.no, len(chunk.again),
            )  # fmt: skip
        if scored or chunk.again:
            self.upload(chunk.again + scored, chunk.no)
        if down is not None:
            raise down

    def upload(self, items: list[Scored], no: int) -> None:
        with critical():  # a signal meanwhile waits: the chunk lands whole, then the run stops
            self._upload(items, no)

    def _upload(self, items: list[Scored], no: int) -> None:
        try:
            try:
                up = upload_task(bulk(items), self.lf, self.spec, self.server, no)
            except (
                Abort
            ):  # a run being cancelled: Prefect starts no task, the scores go all the same
                up = upload_task.fn(items, self.lf, self.spec, self.server, no)
        except Exception as err:  # never lose track of a scored unit
            why = describe(err)
            bucket, reason = Bucket.FAILED_TO_UPLOAD, Reason.UPLOAD_ERROR
            self.tally.add([outcome_for(s.pair, bucket, reason, why) for s in items])
            self.book.record(items, set())
            raise StageError(f"writing scores failed in chunk {no}: {why}") from err
        self.server = up.server
        report = self.tally.report
        report.labels_failed += up.labels_failed
        report.read_back += up.read_back
        self.tally.add(up.uploaded + up.failed)
        self.book.record(items, up.taken)
        if up.suspended is not None:  # recorded as not taken: the next run re-sends them
            raise StageError(up.suspended)
        if up.failed and not up.uploaded:
            raise StageError(
                f"writing scores failed: {self.server.label} took none of the "
                f"{len(up.failed)} scores of chunk {no}: {up.failed[0].why}"
            )


def queue_for_review(opts: EvalOptions, tally: Tally, config_ids: list[str], lf: Access) -> None:
    """Queue the low-trust units for human review, once."""
    low, report = tally.low, tally.report
    if not opts.review_queue or opts.dry_run or not low:
        return
    ranked = review_order(list(low.values()), opts.review_lowest_n)
    # a run that only scored fresh units cannot have queued them before; anything scored
    # earlier (a re-run, a rescore, a crash after upload) is checked against the queue
    earlier = opts.rescore or any(k in tally.values for k in low)
    with stage("adding traces to the review queue"):
        objects = [(x.object_id, x.object_type) for x in ranked]
        result = review_task(lf, opts.review_queue, config_ids, objects, earlier, opts.score_name,
                             opts.review_score)  # fmt: skip
    report.queued_for_review = result.added
    report.already_in_review = result.already_queued


def confirm(book: ScoreBook, calls: Calls, wait_s: float, report: EvalReport) -> None:
    """The report's ``confirmed`` and ``not_confirmed``, read back (a failure: a warning)."""
    try:
        report.confirmed, report.not_confirmed = read_back(book, calls, wait_s)
    except Exception as err:
        report.warnings.append(f"reading the scores back failed: {describe(err)}")
