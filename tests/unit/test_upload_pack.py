"""Upload stage without a server: score bodies, size-bounded batches, and the Writer's verdicts
(list POST, 207 read-back, fallback to one score per POST) through a plain fake of ``Calls``.

The fake never runs a request: list POSTs and read-backs go to a hand-made ``api.scores``, and a
single-score POST is answered from a table instead of calling the request function (which
would open a socket)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, TypeVar, cast

import httpx
import pytest
from langfuse.api.core.api_error import ApiError
from langfuse.api.scores.types.create_score_batch_error import CreateScoreBatchError
from langfuse.api.scores.types.create_score_batch_results import CreateScoreBatchResults
from langfuse.api.scores.types.create_score_request import CreateScoreRequest
from pydantic import SecretStr

from tasks.config import LangfuseSettings, Tuning
from tasks.failures import Reason
from tasks.langfuse_api import Calls, Server
from tasks.models import Bucket, Pair, Scored, score_id
from tasks.upload import (
    TRUNCATED,
    LabelSpec,
    ScoreSpec,
    Writer,
    body_bytes,
    comment_text,
    event_verdicts,
    iso_utc,
    pack,
    score_bodies,
    score_event,
    upload_scores,
)

T = TypeVar("T")
T0 = datetime(2026, 11, 28, 12, 0, 0, 250_000, tzinfo=UTC)
META = {"evaluator": "cleanlab-tlm", "quality_preset": "medium"}
LABEL = LabelSpec("trust_label", review_below=0.7, untrustworthy_below=0.3, config_id="cfg-label")
LIST_SERVER = Server("4.60.0", "list")
SINGLE_SERVER = Server("4.16.0", "single")


def pair(
    trace_id: str = "trace-1", observation_id: str | None = None, env: str | None = None
) -> Pair:
    return Pair(trace_id, T0, "trivia", env, "User: why?\nAssistant:", "Because.", "chat",
                observation_id)  # fmt: skip


def scored(
    trace_id: str = "trace-1", score: float = 0.25, explanation: str | None = "why"
) -> Scored:
    return Scored(pair(trace_id), score, explanation)


# --------------------------------------------------------------------------- comments


def test_a_comment_is_cut_to_exactly_max_chars_with_a_marker() -> None:
    assert comment_text(None, 100) is None
    assert comment_text("", 100) is None
    assert comment_text("a" * 100, 100) == "a" * 100  # at the limit: kept whole
    cut = comment_text("ab" * 100, 101)
    assert cut == ("ab" * 100)[: 101 - len(TRUNCATED)] + TRUNCATED
    assert len(cut) == 101
    assert comment_text("x\ud800y", 100) == "x\ufffdy"  # lone surrogate replaced


# --------------------------------------------------------------------------- score bodies


def test_a_trace_score_body_has_exactly_the_sdk_fields() -> None:
    spec = ScoreSpec("trust_score", META)
    assert score_bodies(scored(explanation="The answer is unsupported."), spec) == [
        {
            "id": score_id("trace-1", "trust_score"),
            "trace_id": "trace-1",
            "name": "trust_score",
            "value": 0.25,
            "data_type": "NUMERIC",
            "timestamp": T0,
            "metadata": META,
            "comment": "The answer is unsupported.",
        }
    ]


def test_an_observation_score_and_its_label_carry_ids_config_and_environment() -> None:
    spec = ScoreSpec("trust_score", META, config_id="cfg-score", label=LABEL)
    item = Scored(pair("trace-1", "gen-7", env="production"), 0.5, None)
    main, label = score_bodies(item, spec)
    common = {"trace_id": "trace-1", "observation_id": "gen-7", "environment": "production",
              "timestamp": T0, "metadata": META}  # fmt: skip
    assert main == common | {
        "id": score_id("trace-1", "trust_score", "gen-7"),
        "name": "trust_score",
        "value": 0.5,
        "data_type": "NUMERIC",
        "config_id": "cfg-score",
    }  # no explanation: no comment key
    assert label == common | {
        "id": score_id("trace-1", "trust_label", "gen-7"),
        "name": "trust_label",
        "value": "review",
        "data_type": "CATEGORICAL",
        "config_id": "cfg-label",
    }  # the label never carries the comment


def test_score_ids_are_deterministic_and_distinct_per_unit_and_name() -> None:
    spec = ScoreSpec("trust_score", META, label=LABEL)
    first = [b["id"] for b in score_bodies(scored("t1", 0.1), spec)]
    again = [b["id"] for b in score_bodies(scored("t1", 0.9, "other"), spec)]  # value: no matter
    assert first == again
    # pinned: a new id for the same unit would add a second score instead of upserting
    assert first == ["f12ded36-b42c-5948-bf3c-e56379dcbd4b", "02e9629b-9cbb-5d86-8257-a240f36587a4"]
    other_trace = [b["id"] for b in score_bodies(scored("t2"), spec)]
    other_obs = [b["id"] for b in score_bodies(Scored(pair("t1", "g1"), 0.1, None), spec)]
    assert len({*first, *other_trace, *other_obs}) == 6


@pytest.mark.parametrize(
    ("score", "label"),
    [(0.0, "untrustworthy"), (0.2999, "untrustworthy"), (0.3, "review"), (0.6999, "review"),
     (0.7, "trustworthy"), (1.0, "trustworthy")],
)  # fmt: skip
def test_the_label_follows_the_thresholds(score: float, label: str) -> None:
    _, body = score_bodies(scored(score=score), ScoreSpec("s", {}, label=LABEL))
    assert body["value"] == label


def test_a_long_explanation_is_cut_to_the_specs_comment_limit() -> None:
    spec = ScoreSpec("s", {}, comment_max_chars=500)
    (body,) = score_bodies(scored(explanation="e" * 10_000), spec)
    assert body["comment"] == "e" * (500 - len(TRUNCATED)) + TRUNCATED


def test_score_bodies_are_valid_sdk_requests() -> None:
    spec = ScoreSpec("trust_score", META, config_id="cfg", label=LABEL)
    item = Scored(pair("t1", "g1", env="prod"), 0.1, "why")
    main, label = (CreateScoreRequest(**b) for b in score_bodies(item, spec))
    assert (main.trace_id, main.observation_id, main.environment) == ("t1", "g1", "prod")
    assert (main.data_type, main.config_id, main.value, main.comment) == ("NUMERIC", "cfg", 0.1,
                                                                          "why")  # fmt: skip
    assert (label.data_type, label.config_id, label.value) == ("CATEGORICAL", "cfg-label",
                                                               "untrustworthy")  # fmt: skip
    assert main.timestamp == T0 and main.metadata == META


# --------------------------------------------------------------------------- packing


def sized(tag: str, n_bytes: int) -> dict[str, Any]:
    """A body whose ``body_bytes`` is exactly ``n_bytes``."""
    body = {"id": tag, "pad": ""}
    body["pad"] = "x" * (n_bytes - body_bytes(body))
    assert body_bytes(body) == n_bytes
    return body


def ids(batches: list[list[dict[str, Any]]]) -> list[list[str]]:
    return [[b["id"] for b in batch] for batch in batches]


def test_body_bytes_is_the_utf8_json_size_plus_a_separator() -> None:
    assert body_bytes({"a": "é"}) == len('{"a": "é"}'.encode()) + 1 == 12
    assert body_bytes({"t": T0}) == len(f'{{"t": "{T0}"}}') + 1


def test_nothing_to_pack_is_no_batch() -> None:
    assert pack([], 1000) == []
    assert pack([[], []], 1000) == []


def test_batches_fill_up_to_the_limit_exactly_and_keep_the_order() -> None:
    groups = [[sized(f"b{i}", 100)] for i in range(7)]
    # a list of n bodies counts 2 bytes of brackets and body_bytes per body
    assert ids(pack(groups, 2 + 3 * 100)) == [["b0", "b1", "b2"], ["b3", "b4", "b5"], ["b6"]]
    assert ids(pack(groups, 2 + 3 * 100 - 1)) == [["b0", "b1"], ["b2", "b3"], ["b4", "b5"], ["b6"]]
    assert ids(pack(groups, 10_000)) == [[f"b{i}" for i in range(7)]]


def test_an_oversized_group_goes_alone() -> None:
    groups = [[sized("s1", 50)], [sized("huge", 5000)], [sized("s2", 50)], [sized("s3", 50)]]
    assert ids(pack(groups, 1000)) == [["s1"], ["huge"], ["s2", "s3"]]
    assert ids(pack(groups[1:2], 1000)) == [["huge"]]


def test_a_score_and_its_label_stay_in_one_batch() -> None:
    groups = [[sized(f"s{i}", 100), sized(f"l{i}", 60)] for i in range(4)]
    # room for three bodies, but never for half a group
    assert ids(pack(groups, 2 + 100 + 60 + 100)) == [["s0", "l0"], ["s1", "l1"], ["s2", "l2"],
                                                     ["s3", "l3"]]  # fmt: skip
    assert ids(pack(groups, 2 + 2 * 160)) == [["s0", "l0", "s1", "l1"], ["s2", "l2", "s3", "l3"]]


def test_each_batch_as_sent_stays_under_the_byte_limit() -> None:
    spec = ScoreSpec("trust_score", META, config_id="cfg", label=LABEL, comment_max_chars=20_000)
    explanations = ["信" * 20_000, "plain " * 3000, "é" * 5000, None] * 10
    items = [Scored(pair(f"t{i}", f"g{i}", env="prod"), 0.5, e) for i, e in enumerate(explanations)]
    groups = [score_bodies(s, spec) for s in items]
    limit = 100_000
    batches = pack(groups, limit)
    assert [b for batch in batches for b in batch] == [b for g in groups for b in g]  # order
    assert len(batches) == 10  # the four kinds of unit (~90 kB together) per batch
    for batch in batches:
        as_json = json.dumps(batch, ensure_ascii=False, default=str).encode()
        assert len(as_json) < limit
        # as the SDK sends it: camelCase aliases, ISO timestamps, compact UTF-8 JSON
        wire = [CreateScoreRequest(**b).model_dump(mode="json", by_alias=True, exclude_unset=True)
                for b in batch]  # fmt: skip
        assert len(httpx.Request("POST", "http://lf.invalid", json=wire).content) < limit


# --------------------------------------------------------------------------- the Writer

LANGFUSE = LangfuseSettings(
    public_key="pk-test", secret_key=SecretStr("sk-test"), base_url="http://lf.invalid"
)
TUNING = Tuning(upload_batch_bytes=10_000, single_post_concurrency=2)


class FakeScores:
    """Stands in for Langfuse's scores: answers list POSTs (sent through ``FakeCalls.http``),
    shows some ids on read-back."""

    def __init__(
        self,
        answer: object = None,
        *,
        shown: Collection[str] = (),
        read_error: Exception | None = None,
    ) -> None:
        self.answer = answer  # returned, or raised when an exception
        self.shown = set(shown)
        self.read_error = read_error
        self.posted: list[list[str]] = []
        self.lookups: list[list[str]] = []

    def create(self, *, request: list[dict[str, Any]], request_options: object) -> object:
        # what the SDK takes and sends: JSON-ready dicts in the wire's names
        assert all(isinstance(r, dict) and "traceId" in r for r in request)
        assert all(CreateScoreRequest.model_validate(dict(r)) for r in request)
        self.posted.append([str(r["id"]) for r in request])
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    def get_many(self, *, id: str, fields: str, limit: int, request_options: object) -> object:
        wanted = id.split(",")
        self.lookups.append(wanted)
        if self.read_error is not None:
            raise self.read_error
        return SimpleNamespace(data=[SimpleNamespace(id=i) for i in wanted if i in self.shown])


class FakeCalls:
    """A plain stand-in for ``Calls``: counts requests and never retries. A single-score POST
    (recognised by its description) is answered from ``single`` by score id, not sent."""

    def __init__(
        self, scores: FakeScores, single: Mapping[str, httpx.Response | Exception] | None = None
    ) -> None:
        self.scores = scores
        self.cfg = LANGFUSE
        self.logger = logging.getLogger("tests.unit.upload")
        self.single = dict(single or {})
        self.requests = 0
        self.single_posts: list[str] = []
        self._lock = threading.Lock()

    @property
    def http(self) -> httpx.Client:
        """The list POST's HTTP client: its request is answered by ``scores.create``."""

        def answer(request: httpx.Request) -> httpx.Response:
            assert request.url.path == "/api/public/scores" and request.method == "POST"
            try:
                got = self.scores.create(request=json.loads(request.content), request_options=None)
            except ApiError as err:
                return httpx.Response(err.status_code or 500, text=str(err.body))
            if isinstance(got, CreateScoreBatchResults):
                status = 207 if got.rejected else 200
                return httpx.Response(status, json=got.model_dump(mode="json", by_alias=True))
            if isinstance(got, SimpleNamespace):
                return httpx.Response(200, json=vars(got))
            return httpx.Response(202)

        return httpx.Client(transport=httpx.MockTransport(answer))

    def __call__(self, what: str, fn: Callable[[], T]) -> T:
        with self._lock:
            self.requests += 1
        if what.startswith("writing score "):
            sid = what.split()[2]
            with self._lock:
                self.single_posts.append(sid)
            answer = self.single[sid]
            if isinstance(answer, Exception):
                raise answer
            return cast(T, answer)
        return fn()


def writer(
    scores: FakeScores,
    server: Server = LIST_SERVER,
    *,
    single: Mapping[str, httpx.Response | Exception] | None = None,
) -> Writer:
    return Writer(cast(Calls, FakeCalls(scores, single)), server, TUNING)


def bodies(*tags: str) -> list[dict[str, Any]]:
    spec = ScoreSpec("trust_score", META)
    return [b for t in tags for b in score_bodies(scored(t), spec)]


def sid(tag: str) -> str:
    return score_id(tag, "trust_score")


def results(accepted: int, rejected: int, *messages: str) -> CreateScoreBatchResults:
    errors = [CreateScoreBatchError(message=m) for m in messages]
    return CreateScoreBatchResults(accepted=accepted, rejected=rejected, errors=errors)


@pytest.mark.parametrize("answer", [None, results(3, 0), SimpleNamespace(id="one score")])
def test_a_list_post_without_rejections_accepts_the_whole_batch(answer: object) -> None:
    scores = FakeScores(answer)
    w = writer(scores)
    assert w.send(bodies("a", "b", "c")) == {sid("a"): None, sid("b"): None, sid("c"): None}
    assert scores.posted == [[sid("a"), sid("b"), sid("c")]]
    assert (scores.lookups, w.read_back, w.server) == ([], 0, LIST_SERVER)


def test_a_207_is_not_resent_its_batch_is_read_back_by_id() -> None:
    scores = FakeScores(results(2, 1, "invalid value"), shown={sid("a"), sid("c")})
    w = writer(scores)
    verdicts = w.send(bodies("a", "b", "c"))
    assert [k for k, v in verdicts.items() if v is None] == [sid("a"), sid("c")]
    assert [k for k, v in verdicts.items() if v is not None] == [sid("b")]
    assert scores.posted == [[sid("a"), sid("b"), sid("c")]]  # one POST, no re-send
    assert scores.lookups == [[sid("a"), sid("b"), sid("c")]]
    assert w.read_back == 3 and cast(FakeCalls, w.calls).requests == 2


def test_a_207_read_back_asks_for_at_most_100_ids_per_get() -> None:
    tags = [f"t{i}" for i in range(150)]
    scores = FakeScores(results(149, 1), shown={sid(t) for t in tags[1:]})
    w = writer(scores)
    verdicts = w.send(bodies(*tags))
    assert [len(x) for x in scores.lookups] == [100, 50]
    assert [k for k, v in verdicts.items() if v is not None] == [sid("t0")]
    assert w.read_back == 150


def test_a_failed_read_back_after_a_207_confirms_nothing() -> None:
    scores = FakeScores(results(2, 1), shown={sid("a")}, read_error=httpx.ReadTimeout("slow"))
    verdicts = writer(scores).send(bodies("a", "b"))
    assert set(verdicts) == {sid("a"), sid("b")} and None not in verdicts.values()


@pytest.mark.parametrize("error", [ApiError(status_code=500, body="busy"), httpx.ConnectError("x")])
def test_a_failed_list_post_fails_its_whole_batch_and_keeps_the_list_path(error: Exception) -> None:
    scores = FakeScores(error)
    w = writer(scores)
    verdicts = w.send(bodies("a", "b"))
    assert set(verdicts) == {sid("a"), sid("b")} and None not in verdicts.values()
    assert w.server == LIST_SERVER and cast(FakeCalls, w.calls).single_posts == []


def test_single_posts_give_each_score_its_own_verdict() -> None:
    single: dict[str, httpx.Response | Exception] = {
        sid("a"): httpx.Response(200),
        sid("b"): httpx.Response(422, text="bad value"),
        sid("c"): ApiError(status_code=503, body="busy"),  # after the retries
        sid("d"): httpx.Response(299),
    }
    scores = FakeScores()
    w = writer(scores, SINGLE_SERVER, single=single)
    verdicts = w.send(bodies("a", "b", "c", "d"))
    assert list(verdicts) == [sid("a"), sid("b"), sid("c"), sid("d")]
    assert [v is None for v in verdicts.values()] == [True, False, False, True]
    assert scores.posted == [] and cast(FakeCalls, w.calls).requests == 4


def test_writer_verdict_texts() -> None:
    # the refusal texts in one place (they become the failed units' reasons)
    w207 = writer(FakeScores(results(0, 2, "bad a", "bad b", "bad c", "bad d"), shown=()))
    assert set(w207.send(bodies("a", "b")).values()) == {
        (Reason.NOT_CONFIRMED, "bad a; bad b; bad c")
    }
    no_msg = writer(FakeScores(results(0, 1), shown=()))
    assert set(no_msg.send(bodies("a")).values()) == {(Reason.NOT_CONFIRMED, "refused")}
    lost = writer(FakeScores(results(0, 1), read_error=httpx.ReadTimeout("slow")))
    assert set(lost.send(bodies("a")).values()) == {
        (Reason.NOT_CONFIRMED, "refused; reading back failed: ReadTimeout: slow")
    }
    down = writer(FakeScores(ApiError(status_code=500, body="busy")))
    assert set(down.send(bodies("a")).values()) == {(Reason.UPLOAD_ERROR, "HTTP 500: busy")}
    single: dict[str, httpx.Response | Exception] = {
        sid("a"): httpx.Response(422, text="v" * 500),
        sid("b"): httpx.ConnectError("no"),
    }
    one = writer(FakeScores(), SINGLE_SERVER, single=single)
    assert one.send(bodies("a", "b")) == {
        sid("a"): (Reason.REFUSED, "HTTP 422: " + "v" * 300),
        sid("b"): (Reason.UPLOAD_ERROR, "ConnectError: no"),
    }


# --------------------------------------------------------------------------- upload_scores


def test_every_unit_ends_uploaded_or_failed_and_refused_labels_are_counted() -> None:
    spec = ScoreSpec("trust_score", META, label=LABEL, comment_max_chars=4000)
    items = [scored(t, score, "e" * 3000) for t, score in (("a", 0.1), ("b", 0.5), ("c", 0.9))]
    groups = [score_bodies(s, spec) for s in items]
    shown = {groups[0][0]["id"], groups[0][1]["id"], groups[1][0]["id"], groups[2][1]["id"]}
    scores = FakeScores(results(4, 2, "refused"), shown=shown)
    w = writer(scores)
    result = upload_scores(items, spec, w)
    assert scores.posted == ids(pack(groups, TUNING.upload_batch_bytes))
    assert len(scores.posted) == 2  # two units per 10 kB batch
    assert [o.trace_id for o in result.uploaded] == ["a", "b"]
    assert [o.trace_id for o in result.failed] == ["c"]
    assert result.labels_failed == 1  # b's label; c's label landed but its score did not
    requests = cast(FakeCalls, w.calls).requests
    assert (requests, result.read_back, result.server) == (4, 6, LIST_SERVER)
    a = result.uploaded[0]
    assert (a.bucket, a.reason, a.score, a.explanation) == (Bucket.UPLOADED, None, 0.1, "e" * 3000)
    assert (a.name, a.start_time, a.observation_id) == ("trivia", T0, None)
    assert (a.question, a.answer) == ("why?", "Because.")  # the user's turn, not the prompt
    c = result.failed[0]
    assert (c.bucket, c.score) == (Bucket.FAILED_TO_UPLOAD, 0.9)
    assert c.why == "not confirmed after a 207: refused"


def test_nothing_to_upload_sends_nothing() -> None:
    scores = FakeScores()
    w = writer(scores)
    result = upload_scores([], ScoreSpec("s", {}), w)
    assert (result.uploaded, result.failed, scores.posted) == ([], [], [])
    assert cast(FakeCalls, w.calls).requests == 0


# --------------------------------------------------------------------------- ingestion events


def test_a_score_event_carries_its_score_id_and_the_units_start_as_its_timestamp() -> None:
    spec = ScoreSpec("trust_score", META, config_id="cfg", label=LABEL)
    item = Scored(pair("t1", "g1", env="prod"), 0.1, "why")
    main, label = (score_event(b) for b in score_bodies(item, spec))
    assert main["type"] == label["type"] == "score-create"
    assert main["timestamp"] == label["timestamp"] == "2026-11-28T12:00:00.250000Z"
    assert main["body"] == {
        "id": score_id("t1", "trust_score", "g1"), "traceId": "t1", "observationId": "g1",
        "name": "trust_score", "value": 0.1, "dataType": "NUMERIC", "configId": "cfg",
        "environment": "prod", "metadata": META, "comment": "why",
    }  # fmt: skip
    # its own id: the 207 names events, not scores; a fresh one per event
    assert len({main["id"], label["id"], main["body"]["id"], label["body"]["id"]}) == 4
    assert iso_utc(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05Z"  # naive: UTC


def test_the_207_of_ingestion_is_mapped_back_from_event_ids_to_scores() -> None:
    spec = ScoreSpec("trust_score", META)
    events = [score_event(b) for t in ("a", "b", "c", "d") for b in score_bodies(scored(t), spec)]
    answer = {
        "successes": [{"id": events[i]["id"], "status": 201} for i in (0, 3)],
        "errors": [
            {"id": events[1]["id"], "status": 400, "message": "Invalid request data",
             "error": "bad\n value"},
            {"id": "unknown", "status": 400, "message": "Invalid request data"},
        ],
    }  # fmt: skip
    assert event_verdicts(events, answer) == {
        sid("a"): None,
        sid("b"): (Reason.REFUSED, "HTTP 400: Invalid request data: bad value"),
        sid("c"): (Reason.UPLOAD_ERROR, "Langfuse's 207 has no result for its event"),
        sid("d"): None,
    }
    nothing = event_verdicts(events, "not json")
    assert set(nothing.values()) == {
        (Reason.UPLOAD_ERROR, "Langfuse's 207 has no result for its event")
    }
