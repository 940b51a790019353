"""Contract tests: the server profiles of the Langfuse sandbox, through the real SDK 5.

``current`` models Langfuse Cloud / self-hosted v4.59+ (the SDK 5 contract); ``v4.16`` models
self-hosted v4.16.0 as its source shows. Some behaviours hold on both servers (config checks
after the answer, each observation's own tags, ...): those tests run on both profiles.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from langfuse import Langfuse, propagate_attributes
from langfuse.api import (
    CreateScoreBatchResponse,
    CreateScoreBatchResults,
    Error,
    NotFoundError,
)
from langfuse.api.core import ApiError

from sandbox.langfuse import OBSERVATIONS_V2_DISABLED, LangfuseSandbox, LangfuseStore
from tests.support.langfuse_api import raw

NO_RETRY: dict[str, Any] = {"max_retries": 0}
DAY_S = 86_400.0
BOTH = pytest.mark.parametrize("profile", ["current", "v4.16"])


def _post_score(sandbox: LangfuseSandbox, **score: Any) -> httpx.Response:
    """One score the way the profile takes it: v4.16 one object, current a list."""
    body: Any = score if sandbox.profile == "v4.16" else [score]
    return raw(sandbox, "POST", "/api/public/scores", body)


# --------------------------------------------------------------------------- profiles, health


def test_profiles_and_health_versions(langfuse_client: Langfuse) -> None:
    assert langfuse_client.api.health.health().version == "4.59.0"  # "current" by default
    with LangfuseSandbox(profile="v4.16", preview_opt_in=False) as old:
        assert (old.profile, old.preview_opt_in, old.version) == ("v4.16", False, "4.16.0")
        assert old.store.profile == "v4.16"
        health = httpx.get(f"{old.url}/api/public/health").json()
        assert health == {"status": "OK", "version": "4.16.0"}
        old.profile = "current"
        assert httpx.get(f"{old.url}/api/public/health").json()["version"] == "4.59.0"
    with LangfuseSandbox(version="4.20.1") as pinned:
        assert httpx.get(f"{pinned.url}/api/public/health").json()["version"] == "4.20.1"
    with pytest.raises(ValueError):
        LangfuseSandbox(profile="v3")


# --------------------------------------------------------------------------- v4.16: score POST


def test_v416_score_post_takes_one_object_and_refuses_a_list(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    langfuse_sandbox.profile = "v4.16"
    # SDK 5 sends a list: zod refuses it before anything is stored
    with pytest.raises(Error) as caught:  # the SDK's type for this endpoint's 400
        langfuse_client.api.scores.create(
            request=[{"traceId": "t1", "name": "trust", "value": 0.5}], request_options=NO_RETRY
        )
    issue = {
        "code": "invalid_type",
        "expected": "object",
        "path": [],
        "message": "Invalid input: expected object, received array",
    }
    assert caught.value.status_code == 400
    assert caught.value.body == {"message": "Invalid request data", "error": [issue, issue]}
    assert langfuse_sandbox.store.all_scores() == []

    # one object: 200 {"id"}; a body timestamp is ignored, the score is stamped on arrival
    langfuse_sandbox.advance_clock(3 * DAY_S)
    before = langfuse_sandbox.store.now()
    answer = _post_score(
        langfuse_sandbox,
        id="s1",
        traceId="t1",
        name="trust",
        value=0.5,
        timestamp="2025-01-01T00:00:00.000Z",
    )
    assert answer.status_code == 200 and answer.json() == {"id": "s1"}
    (row,) = langfuse_client.api.scores.get_many(id="s1").data
    assert before <= row.timestamp <= langfuse_sandbox.store.now()
    assert row.timestamp.year != 2025
    generated = _post_score(langfuse_sandbox, traceId="t1", name="n", value=1)
    assert generated.status_code == 200 and generated.json()["id"]  # body.id || randomUUID()

    bad = _post_score(langfuse_sandbox, traceId="t1", name="trust")  # no value
    assert bad.status_code == 400 and bad.json()["message"] == "Invalid request data"


def test_v416_a_resent_id_keeps_one_row_with_the_first_timestamp(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    """The worker merges every event of a score id into one row; timestamp, traceId and
    environment are immutable (worker/src/services/IngestionService/index.ts, v4.16.0)."""
    langfuse_sandbox.profile = "v4.16"
    store, api = langfuse_sandbox.store, langfuse_client.api.scores
    first = _post_score(
        langfuse_sandbox, id="s", traceId="t", name="trust", value=0.1, metadata={"a": 1}
    )
    assert first.is_success
    (row,) = store.all_scores()
    day1 = row.timestamp

    langfuse_sandbox.advance_clock(DAY_S)  # the next day: no second row under a new day key
    again = _post_score(
        langfuse_sandbox,
        id="s",
        traceId="t-other",
        name="trust",
        value=0.3,
        comment="rescored",
        metadata={"b": 2},
    )
    assert again.is_success
    (merged,) = store.all_scores()
    assert merged.timestamp == day1  # the first timestamp
    assert merged.trace_id == "t"  # immutable
    assert merged.value == pytest.approx(0.3) and merged.comment == "rescored"  # the newest
    assert merged.metadata == {"a": 1, "b": 2}

    (listed,) = api.get_many(id="s", fields="details,subject").data
    assert listed.timestamp == day1 and listed.value == pytest.approx(0.3)
    assert listed.subject is not None and listed.subject.id == "t"
    assert len(api.get_many(id="s", to_timestamp=day1 + timedelta(hours=1)).data) == 1
    assert api.get_many(id="s", from_timestamp=day1 + timedelta(hours=1)).data == []

    # "current" (the SDK 5 list POST) upserts by id + timestamp + name: another timestamp is a
    # second row (tests/contract/test_langfuse_scores.py)
    langfuse_sandbox.profile = "current"
    later = langfuse_sandbox.store.now().isoformat()
    api.create(
        request=[{"id": "s", "traceId": "t", "name": "trust", "value": 1, "timestamp": later}]
    )
    assert len(api.get_many(id="s").data) == 2


# --------------------------------------------------------------------------- v4.16: v2 observations


def test_v416_serves_v2_observations_by_default() -> None:
    """LANGFUSE_MIGRATION_V4_ALLOW_PREVIEW_OPT_IN defaults to "true" on v4.16.0
    (web/src/env.mjs); only a server started with it set false answers 404."""
    with LangfuseSandbox(profile="v4.16") as lf:
        assert lf.preview_opt_in is True and lf.store.preview_opt_in is True
        assert lf.write_mode == "events_only"  # v4.16.0's default write mode
        lf.store.add_trace(name="t", start_time=lf.store.now())
        answer = raw(lf, "GET", "/api/public/v2/observations")
        assert answer.status_code == 200 and len(answer.json()["data"]) == 1
    assert LangfuseStore(profile="v4.16").preview_opt_in is True


def test_v416_observations_need_the_preview_opt_in(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    langfuse_sandbox.store.add_trace(name="t", start_time=langfuse_sandbox.store.now())
    api = langfuse_client.api.observations
    langfuse_sandbox.preview_opt_in = False
    assert len(api.get_many().data) == 1  # "current" has no such switch

    langfuse_sandbox.profile = "v4.16"
    with pytest.raises(NotFoundError) as caught:
        api.get_many(request_options=NO_RETRY)
    assert caught.value.body == {
        "message": OBSERVATIONS_V2_DISABLED,
        "error": "LangfuseNotFoundError",
    }
    assert "only available in a Langfuse v4 write mode" in OBSERVATIONS_V2_DISABLED
    # the query schema is checked first (the 404 comes from inside the handler)
    with pytest.raises(ApiError) as bad:
        api.get_many(limit=1001, request_options=NO_RETRY)
    assert bad.value.status_code == 400

    langfuse_sandbox.preview_opt_in = True
    assert len(api.get_many().data) == 1


@BOTH
def test_model_name_on_the_wire_and_in_the_sdk(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse, profile: str
) -> None:
    langfuse_sandbox.profile = profile
    store = langfuse_sandbox.store
    trace_id = store.add_trace(start_time=store.now())
    store.add_observation(trace_id=trace_id, model="gpt-4o-mini", start_time=store.now())
    query = {"fields": "core,model", "type": "GENERATION"}
    (wire,) = raw(langfuse_sandbox, "GET", "/api/public/v2/observations", **query).json()["data"]
    (obs,) = langfuse_client.api.observations.get_many(**query).data
    assert wire["model"] == "gpt-4o-mini" and obs.model == "gpt-4o-mini"
    if profile == "v4.16":
        # v4.16.0's converter writes ``model``; providedModelName is only in its types/spec
        assert "providedModelName" not in wire
        assert not obs.model_extra
    else:
        # the spec's name as an extra key: the SDK keeps it raw, camelCase, beside ``model``
        assert wire["providedModelName"] == "gpt-4o-mini"
        assert obs.model_extra == {"providedModelName": "gpt-4o-mini"}


# --------------------------------------------------------------------------- both: configs


@BOTH
def test_config_problems_are_accepted_then_dropped(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse, profile: str
) -> None:
    langfuse_sandbox.profile = profile
    store = langfuse_sandbox.store
    trust = store.add_score_config(name="trust", min_value=0, max_value=1)
    verdict = store.add_score_config(
        name="verdict",
        data_type="CATEGORICAL",
        categories=[{"label": "correct", "value": 1}, {"label": "wrong", "value": 0}],
    )
    archived = store.add_score_config(name="old")
    store.update_score_config(archived.id, {"isArchived": True})
    bad: dict[str, dict[str, Any]] = {
        "unknown": {"configId": "no-such-config", "value": 0.5},
        "range": {"configId": trust.id, "value": 1.5},
        "type": {"configId": trust.id, "value": "x", "dataType": "CATEGORICAL"},
        "label": {"configId": verdict.id, "value": "maybe"},
        "archived": {"configId": archived.id, "value": 0.5},
    }
    for score_id, extra in bad.items():
        answer = _post_score(langfuse_sandbox, id=score_id, traceId="t", name="n", **extra)
        assert answer.status_code == (200 if profile == "v4.16" else 202), score_id
    good = _post_score(
        langfuse_sandbox, id="good", traceId="t", name="any", configId=trust.id, value=1
    )
    assert good.is_success

    dropped = langfuse_sandbox.dropped_scores
    assert [d.score.id for d in dropped] == list(bad)
    reasons = dict(zip(bad, (d.reason for d in dropped), strict=True))
    assert "does not match a valid config" in reasons["unknown"]
    assert "Value exceeds maximum value of 1 defined in config" in reasons["range"]
    assert (
        "Data type mismatch based on config: expected NUMERIC, got CATEGORICAL" in reasons["type"]
    )
    assert "does not map to a valid category" in reasons["label"]
    assert "archived" in reasons["archived"]
    (row,) = langfuse_client.api.scores.get_many(fields="details").data
    assert (row.id, row.name, row.config_id) == ("good", "trust", trust.id)  # the config's name


def test_schema_invalid_items_are_still_207_on_current(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    answer = langfuse_client.api.scores.create(
        request=[
            {"traceId": "t", "name": "ok", "value": 1},
            {"traceId": "t", "name": "bad", "value": "x", "dataType": "NUMERIC"},
            {"traceId": "t", "name": "cfg", "value": 1, "configId": "no-such-config"},
        ],
        request_options=NO_RETRY,
    )
    assert isinstance(answer, CreateScoreBatchResults)
    assert (answer.accepted, answer.rejected) == (2, 1)  # the configId one is dropped later
    assert [d.score.name for d in langfuse_sandbox.dropped_scores] == ["cfg"]
    ok = langfuse_client.api.scores.create(
        request=[{"traceId": "t", "name": "ok2", "value": 1}], request_options=NO_RETRY
    )
    assert isinstance(ok, CreateScoreBatchResponse)


# --------------------------------------------------------------------------- both: own tags


def _tag_query(tag: str, **extra: Any) -> dict[str, Any]:
    condition = {"type": "arrayOptions", "column": "tags", "operator": "any of", "value": [tag]}
    return {"filter": json.dumps([condition]), "fields": "core,basic,trace_context", **extra}


@BOTH
def test_tags_are_each_observations_own(
    langfuse_sandbox: LangfuseSandbox,
    make_langfuse_client: Callable[..., Langfuse],
    profile: str,
) -> None:
    langfuse_sandbox.profile = profile
    client = make_langfuse_client()
    # propagate_attributes: every span created inside carries langfuse.trace.tags
    with (
        propagate_attributes(tags=["everywhere"]),
        client.start_as_current_observation(name="root-a"),
        client.start_as_current_observation(name="child-a", as_type="generation"),
    ):
        pass
    # tags set on the root only (the context is left before the child starts)
    with client.start_as_current_observation(name="root-b"):
        with propagate_attributes(tags=["root-only"]):
            pass
        with client.start_as_current_observation(name="child-b", as_type="generation"):
            pass
    client.flush()

    own = {o.name: o.tags for o in langfuse_sandbox.store.all_observations()}
    assert own == {
        "root-a": ("everywhere",),
        "child-a": ("everywhere",),
        "root-b": ("root-only",),
        "child-b": (),
    }
    api = client.api.observations
    everywhere = api.get_many(**_tag_query("everywhere")).data
    assert sorted(o.name or "" for o in everywhere) == ["child-a", "root-a"]
    root_only = api.get_many(**_tag_query("root-only")).data
    assert [o.name for o in root_only] == ["root-b"]
    assert api.get_many(**_tag_query("root-only", is_root_observation=False)).data == []
    # trace_context tags are the row's own too
    (child_b,) = api.get_many(name="child-b", fields="core,trace_context").data
    assert child_b.tags == []
    trace = langfuse_sandbox.store.trace(child_b.trace_id)
    assert trace is not None and trace.tags == ("root-only",)


def test_seeded_children_inherit_the_trace_tags_unless_told(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    store = langfuse_sandbox.store
    trace_id = store.add_trace(tags=["t"], start_time=store.now())
    store.add_observation(trace_id=trace_id, name="propagated", start_time=store.now())
    store.add_observation(trace_id=trace_id, name="untagged", start_time=store.now(), tags=())
    store.add_observation(trace_id=trace_id, name="own", start_time=store.now(), tags=["o"])
    api = langfuse_client.api.observations
    tagged = {o.name for o in api.get_many(**_tag_query("t")).data}
    assert tagged == {None, "propagated"}  # the root (named after the trace: None) and one child
    assert [o.name for o in api.get_many(**_tag_query("o")).data] == ["own"]


# --------------------------------------------------------------------------- both: clock, lag


@BOTH
def test_score_read_lag_on_the_sandbox_clock(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse, profile: str
) -> None:
    langfuse_sandbox.profile = profile
    api = langfuse_client.api.scores
    langfuse_sandbox.set_score_read_lag(600)
    assert _post_score(langfuse_sandbox, id="late", traceId="t", name="trust", value=1).is_success
    assert len(langfuse_sandbox.store.all_scores()) == 1  # stored, not yet readable
    assert api.get_many(id="late").data == []
    langfuse_sandbox.advance_clock(599)
    assert api.get_many(id="late").data == []
    langfuse_sandbox.advance_clock(1)
    (row,) = api.get_many(id="late").data
    langfuse_sandbox.set_score_read_lag(0)
    assert [r.id for r in api.get_many().data] == ["late"]
    assert row.created_at <= langfuse_sandbox.store.now() - timedelta(seconds=600)


def test_advance_clock_moves_arrival_timestamps(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    store = langfuse_sandbox.store
    start = store.now()
    langfuse_sandbox.advance_clock(DAY_S)
    assert store.now() - start >= timedelta(days=1)
    langfuse_client.api.scores.create(
        request=[{"id": "x", "traceId": "t", "name": "n", "value": 1}], request_options=NO_RETRY
    )
    (row,) = langfuse_client.api.scores.get_many(id="x").data
    assert row.timestamp - start >= timedelta(days=1)  # no timestamp sent: the sandbox's now


# --------------------------------------------------------------------------- both: queues


@BOTH
def test_duplicate_queue_name_is_400(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse, profile: str
) -> None:
    langfuse_sandbox.profile = profile
    config = langfuse_sandbox.store.add_score_config(name="trust", min_value=0, max_value=1)
    api = langfuse_client.api.annotation_queues
    api.create_queue(name="review", score_config_ids=[config.id])
    with pytest.raises(Error) as caught:  # the SDK's type for this endpoint's 400
        api.create_queue(name="review", score_config_ids=[config.id], request_options=NO_RETRY)
    assert caught.value.status_code == 400
    assert caught.value.body == {
        "message": "A queue with this name already exists.",
        "error": "InvalidRequestError",
    }


def test_annotation_queues_have_their_own_rate_limit_bucket(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    # the point that would leave none is refused: 3 points serve 2 calls, 4 serve 3
    general = langfuse_sandbox.set_rate_limit(per_minute=3)
    queues = langfuse_sandbox.set_rate_limit(per_minute=4, bucket="annotation-queues")
    assert general.endpoints is not None and queues.endpoints is not None
    assert not general.endpoints & queues.endpoints
    configs, aq = langfuse_client.api.score_configs, langfuse_client.api.annotation_queues
    configs.get(request_options=NO_RETRY)
    configs.get(request_options=NO_RETRY)
    with pytest.raises(ApiError) as caught:
        configs.get(request_options=NO_RETRY)
    assert caught.value.status_code == 429
    for _ in range(3):  # the general bucket is spent; this one is not
        aq.list_queues(request_options=NO_RETRY)
    with pytest.raises(ApiError) as caught:
        aq.list_queues(request_options=NO_RETRY)
    assert caught.value.status_code == 429
    assert caught.value.headers is not None and int(caught.value.headers["retry-after"]) >= 1
    with pytest.raises(ValueError):
        langfuse_sandbox.set_rate_limit(per_minute=1, bucket="datasets")  # needs endpoints


# --------------------------------------------------------------------------- both: field groups


@BOTH
def test_unknown_field_groups_are_dropped(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse, profile: str
) -> None:
    langfuse_sandbox.profile = profile
    langfuse_sandbox.store.add_trace(name="t", start_time=langfuse_sandbox.store.now())
    path = "/api/public/v2/observations"
    (basic,) = raw(langfuse_sandbox, "GET", path, fields="basic,bogus").json()["data"]
    assert basic["name"] == "t"
    (core,) = raw(langfuse_sandbox, "GET", path, fields="bogus").json()["data"]
    assert "name" not in core and core["type"] == "SPAN"  # nothing left: core only
    (obs,) = langfuse_client.api.observations.get_many(fields="io,nonsense").data
    assert obs.name is None and obs.input is None
    # v3 scores are strict about their groups ("core" is one of them)
    scores = "/api/public/v3/scores"
    assert raw(langfuse_sandbox, "GET", scores, fields="core,details").status_code == 200
    assert raw(langfuse_sandbox, "GET", scores, fields="bogus").status_code == 400
