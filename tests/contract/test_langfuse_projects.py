"""Several Langfuse projects on one sandbox server, each with its own key pair and data, through
the real Langfuse SDK (5.0.4) over HTTP: what one project writes, the other never sees.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from langfuse import Langfuse
from langfuse.api import UnauthorizedError

from sandbox.langfuse import LangfuseSandbox
from tests.support.langfuse_api import NO_RETRY, T0, score_body


def test_two_projects_each_see_only_their_own_data(
    langfuse_sandbox: LangfuseSandbox, make_langfuse_client: Callable[..., Langfuse]
) -> None:
    other = langfuse_sandbox.add_project("second")
    assert other.public_key != langfuse_sandbox.public_key
    assert other.url == langfuse_sandbox.url
    assert other.env()["LANGFUSE_PUBLIC_KEY"] == other.public_key
    first_client = make_langfuse_client()  # the one-project API, unchanged
    second_client = make_langfuse_client(**other.client_kwargs())

    # GET /api/public/projects answers the project of the key pair
    (first,) = first_client.api.projects.get().data
    (second,) = second_client.api.projects.get().data
    assert (first.id, first.name) == (langfuse_sandbox.store.project_id, "sandbox")
    assert (second.id, second.name) == (other.project_id, "second")
    assert first.id != second.id
    assert first_client.auth_check() and second_client.auth_check()

    # traces: OTLP through the SDK into the second project only
    with second_client.start_as_current_observation(name="only-in-second"):
        pass
    second_client.flush()
    assert [o.name for o in second_client.api.observations.get_many().data] == ["only-in-second"]
    assert first_client.api.observations.get_many().data == []
    assert langfuse_sandbox.store.trace_count() == 0 and other.store.trace_count() == 1

    # scores, score configs and queues
    trace_id = langfuse_sandbox.store.add_trace(start_time=T0)
    first_client.api.scores.create(request=[score_body(trace_id, 1)])
    assert [s.id for s in first_client.api.scores.get_many().data] == ["score-1"]
    assert second_client.api.scores.get_many().data == []
    config = second_client.api.score_configs.create(name="trust", data_type="NUMERIC")
    second_client.api.annotation_queues.create_queue(name="review", score_config_ids=[config.id])
    assert first_client.api.score_configs.get().data == []
    assert first_client.api.annotation_queues.list_queues().data == []
    # the same queue name in the other project is no duplicate
    own = first_client.api.score_configs.create(name="trust", data_type="NUMERIC")
    first_client.api.annotation_queues.create_queue(name="review", score_config_ids=[own.id])
    assert [q.name for q in other.store.annotation_queues()] == ["review"]
    assert [p.name for p in langfuse_sandbox.projects()] == ["sandbox", "second"]


def test_a_mixed_key_pair_opens_no_project(
    langfuse_sandbox: LangfuseSandbox, make_langfuse_client: Callable[..., Langfuse]
) -> None:
    other = langfuse_sandbox.add_project("second")
    mixed = make_langfuse_client(
        public_key=langfuse_sandbox.public_key, secret_key=other.secret_key
    )
    with pytest.raises(UnauthorizedError):
        mixed.api.projects.get(request_options=NO_RETRY)
    answer = httpx.get(
        f"{langfuse_sandbox.url}/api/public/v3/scores",
        auth=(other.public_key, langfuse_sandbox.secret_key),
    )
    assert answer.status_code == 401
    with pytest.raises(ValueError):
        langfuse_sandbox.add_project("again", public_key=other.public_key)


def test_server_settings_and_faults_are_shared(langfuse_sandbox: LangfuseSandbox) -> None:
    other = langfuse_sandbox.add_project("second")
    langfuse_sandbox.profile = "v4.16"
    assert other.store.profile == "v4.16"
    before = other.store.now()
    langfuse_sandbox.advance_clock(3600)
    assert (other.store.now() - before).total_seconds() >= 3600
    langfuse_sandbox.faults.reset_log()
    pairs = [(langfuse_sandbox.public_key, langfuse_sandbox.secret_key)]
    pairs.append((other.public_key, other.secret_key))
    for keys in pairs:
        answer = httpx.get(f"{langfuse_sandbox.url}/api/public/projects", auth=keys)
        assert answer.status_code == 200
    assert langfuse_sandbox.faults.count("projects") == 2  # one request log for the server
