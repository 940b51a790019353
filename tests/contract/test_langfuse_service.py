"""The Langfuse sandbox's other calls (health, projects, auth, OTLP ingestion) and its fault
knobs, through the real Langfuse SDK (5.0.4) over HTTP.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable
from datetime import timedelta

import httpx
import pytest
from langfuse import Langfuse
from langfuse.api import UnauthorizedError
from langfuse.api.core import ApiError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from sandbox.faults import Fault, FixedWindowRateLimit
from sandbox.langfuse import LangfuseSandbox, to_ms
from tests.support.langfuse_api import NO_RETRY, T0, fetch_all, raw, score_body

# --------------------------------------------------------------------------- health, auth, OTLP


def test_health_projects_and_auth_check(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    health = langfuse_client.api.health.health()
    assert health.status == "OK" and health.version
    assert httpx.get(f"{langfuse_sandbox.url}/api/public/health").status_code == 200  # no auth
    (project,) = langfuse_client.api.projects.get().data
    assert project.id == langfuse_sandbox.store.project_id
    assert project.organization.id and project.metadata == {}
    assert langfuse_client.auth_check() is True


def test_bad_key_is_401(
    langfuse_sandbox: LangfuseSandbox, make_langfuse_client: Callable[..., Langfuse]
) -> None:
    bad = make_langfuse_client(public_key=f"{langfuse_sandbox.public_key}-x", secret_key="nope")
    with pytest.raises(UnauthorizedError):
        bad.auth_check()
    with pytest.raises(UnauthorizedError):
        bad.api.observations.get_many()
    with pytest.raises(UnauthorizedError):
        bad.api.scores.create(request=[score_body("t1", 1)])
    with pytest.raises(UnauthorizedError):
        bad.api.scores.get_many()
    otel = httpx.post(
        f"{langfuse_sandbox.url}/api/public/otel/v1/traces",
        content=b"",
        headers={"content-type": "application/x-protobuf"},
    )
    assert otel.status_code == 401
    assert "message" in otel.json()
    assert langfuse_sandbox.faults.count(status=401) == 5


def test_otlp_json_and_gzip_protobuf_ingestion(langfuse_sandbox: LangfuseSandbox) -> None:
    url = f"{langfuse_sandbox.url}/api/public/otel/v1/traces"
    auth = (langfuse_sandbox.public_key, langfuse_sandbox.secret_key)
    start_ns = to_ms(T0) * 1_000_000
    span = {
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        "spanId": "b7ad6b7169203331",
        "name": "json-root",
        "startTimeUnixNano": str(start_ns),
        "endTimeUnixNano": str(start_ns + 1_000_000),
        "attributes": [
            {
                "key": "langfuse.trace.tags",
                "value": {"arrayValue": {"values": [{"stringValue": "j"}]}},
            },
            {"key": "langfuse.observation.input", "value": {"stringValue": '{"q": 1}'}},
        ],
    }
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    answer = httpx.post(url, json=body, auth=auth)
    assert answer.status_code == 200 and answer.json() == {}

    request = ExportTraceServiceRequest()
    pb_span = request.resource_spans.add().scope_spans.add().spans.add()
    pb_span.trace_id = bytes.fromhex("1af7651916cd43dd8448eb211c80319c")
    pb_span.span_id = bytes.fromhex("c7ad6b7169203331")
    pb_span.name = "pb-root"
    pb_span.start_time_unix_nano = start_ns + 5_000_000
    answer = httpx.post(
        url,
        content=gzip.compress(request.SerializeToString()),
        headers={"content-type": "application/x-protobuf", "content-encoding": "gzip"},
        auth=auth,
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/x-protobuf"

    garbage = httpx.post(
        url,
        content=b"\xff\x00garbage",
        headers={"content-type": "application/x-protobuf"},
        auth=auth,
    )
    assert garbage.status_code == 400
    listing = httpx.get(
        f"{langfuse_sandbox.url}/api/public/v2/observations",
        params={"fields": "core,basic,io,trace_context"},
        auth=auth,
    ).json()["data"]
    assert [(o["name"], o["traceName"]) for o in listing] == [
        ("pb-root", "pb-root"),
        ("json-root", "json-root"),
    ]
    assert listing[1]["tags"] == ["j"] and listing[1]["input"] == '{"q": 1}'
    assert listing[1]["traceId"] == span["traceId"] and listing[1]["id"] == span["spanId"]


# --------------------------------------------------------------------------- fault knobs


def test_429_with_retry_after_is_retried_by_the_generated_client(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    faults = langfuse_sandbox.faults
    faults.set("observations", Fault(status=429, retry_after=1, first=1))
    started = time.monotonic()
    assert langfuse_client.api.observations.get_many().data == []
    assert time.monotonic() - started >= 0.9  # Retry-After: 1 honoured
    assert faults.count("observations", status=429) == 1
    assert faults.count("observations", status=200) == 1

    faults.set("observations", Fault(status=429, retry_after=1))
    with pytest.raises(ApiError) as err:
        langfuse_client.api.observations.get_many(request_options=NO_RETRY)
    assert err.value.status_code == 429
    assert err.value.headers is not None and err.value.headers["retry-after"] == "1"


def test_rate_limit_covers_the_general_api_group(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    langfuse_sandbox.set_rate_limit(per_minute=3, window_s=60.0)  # 3 points: 2 served
    api = langfuse_client.api
    api.observations.get_many(request_options=NO_RETRY)
    api.scores.get_many(request_options=NO_RETRY)
    with pytest.raises(ApiError) as err:
        api.scores.create(request=[score_body("t1", 1)], request_options=NO_RETRY)
    assert err.value.status_code == 429
    headers = err.value.headers or {}
    assert int(headers["retry-after"]) >= 1
    assert headers["x-ratelimit-limit"] == "3" and headers["x-ratelimit-remaining"] == "0"
    assert api.health.health().status == "OK"  # health is not in the group
    assert langfuse_sandbox.store.all_scores() == []


def test_rate_limit_is_a_fixed_window_whose_last_point_is_refused(
    langfuse_sandbox: LangfuseSandbox,
) -> None:
    """RateLimitService.ts (v4.16.0): Hobby's 30 points a minute serve 29 requests; refused
    requests spend points too, and the window does not slide."""
    limit = langfuse_sandbox.set_rate_limit(per_minute=30)
    statuses = [
        raw(langfuse_sandbox, "GET", "/api/public/v3/scores").status_code for _ in range(31)
    ]
    assert statuses == [200] * 29 + [429, 429]
    assert limit.remaining == 0
    refused = raw(langfuse_sandbox, "GET", "/api/public/v2/observations")
    assert refused.status_code == 429
    body = refused.json()
    assert body["message"] == "Rate limit exceeded" and body["code"] == "rate_limited"
    details = body["details"]
    assert (details["limit"], details["remaining"]) == (30, 0)
    assert details["retryAfterSeconds"] == int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-reset"].endswith("(Coordinated Universal Time)")
    assert langfuse_sandbox.faults.count(status=429) == 3

    # the window's clock, driven by hand: it opens with the first request and does not slide
    window = FixedWindowRateLimit(limit=3, window_s=60.0)
    assert [window.check(t) for t in (0.0, 1.0)] == [None, None]
    assert window.check(2.0) == pytest.approx(58.0)  # the third point: refused
    assert window.check(59.0) == pytest.approx(1.0)  # still the first window
    assert window.check(60.0) is None  # a new window
    assert window.remaining == 2


def test_5xx_every_nth_call(langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse) -> None:
    langfuse_sandbox.faults.set("scores.list", Fault(status=503, every=3))
    outcomes: list[int | None] = []
    for _ in range(6):
        try:
            langfuse_client.api.scores.get_many(request_options=NO_RETRY)
            outcomes.append(200)
        except ApiError as e:
            outcomes.append(e.status_code)
    assert outcomes == [200, 200, 503, 200, 200, 503]
    # with its default retries the client gets through a transient 5xx
    langfuse_sandbox.faults.set("scores.list", Fault(status=500, first=1, retry_after=1))
    assert langfuse_client.api.scores.get_many().data == []


def test_hang_is_bounded_by_the_client_timeout(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    faults = langfuse_sandbox.faults
    faults.set("observations", Fault(hang=True))
    with pytest.raises(httpx.TimeoutException):
        langfuse_client.api.observations.get_many(
            request_options={"timeout_in_seconds": 1, "max_retries": 0}
        )
    # the client gave up while the server still held its one request: it reached the server
    # (one call seen), was not retried, and has no answer yet (a request is logged once answered)
    assert faults.faults["observations"].calls == 1
    assert faults.count("observations") == 0
    faults.clear()  # releases the held request
    assert langfuse_client.api.observations.get_many().data == []


def test_lost_response_still_stores_the_scores(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    langfuse_sandbox.faults.set("scores.create", Fault(lose_response=1))
    with pytest.raises(ApiError) as err:
        langfuse_client.api.scores.create(request=[score_body("t1", 1)], request_options=NO_RETRY)
    assert err.value.status_code == 502
    assert [s.id for s in langfuse_sandbox.store.all_scores()] == ["score-1"]
    # the caller resends: same id and timestamp, so no duplicate
    langfuse_client.api.scores.create(request=[score_body("t1", 1)], request_options=NO_RETRY)
    assert len(langfuse_sandbox.store.all_scores()) == 1


def test_repeated_rows_across_pages(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse
) -> None:
    store = langfuse_sandbox.store
    seeded = {store.add_trace(start_time=T0 + timedelta(seconds=i)) for i in range(7)}
    langfuse_sandbox.faults.set("observations", Fault(repeat_rows=1))
    pages = list(fetch_all(langfuse_client, is_root_observation=True, limit=3))
    trace_ids = [o.trace_id for page in pages for o in page]
    assert len(trace_ids) > len(set(trace_ids))  # rows repeat across pages ...
    assert set(trace_ids) == seeded  # ... but none is lost
    assert pages[1][0].id == pages[0][-1].id


def test_request_log_counts(langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse) -> None:
    faults = langfuse_sandbox.faults
    faults.reset_log()
    langfuse_client.api.health.health()
    for _ in range(3):
        langfuse_client.api.observations.get_many(limit=10)
    langfuse_client.api.scores.create(request=[score_body("t1", 1)])
    assert faults.count() == 5
    assert faults.count("observations") == 3
    assert faults.count("scores.create", status=202) == 1
    assert faults.count("health") == 1
    record = next(r for r in faults.requests if r.endpoint == "observations")
    assert record.method == "GET" and "limit=10" in record.query
