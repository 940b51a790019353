"""A heavy GET v2/observations page answered 422 "Request timed out", as Langfuse's middleware
answers a ClickHouse timeout or memory limit (withMiddlewares.ts, v4.16.0); a smaller page passes.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from langfuse import Langfuse
from langfuse.api.core import ApiError

from sandbox.langfuse import LangfuseSandbox
from tests.support.langfuse_api import NO_RETRY, T0, raw

BOTH = pytest.mark.parametrize("profile", ["current", "v4.16"])
PATH = "/api/public/v2/observations"
RESOURCE_MESSAGE = (
    "Your query could not be completed. Please narrow your request by adding more specific "
    "filters (e.g., a shorter date range).\n"
    "See https://langfuse.com/docs/api-and-data-platform/features/public-api for more details."
)


@BOTH
def test_a_large_page_with_io_or_metadata_times_out_and_a_smaller_one_passes(
    langfuse_sandbox: LangfuseSandbox, langfuse_client: Langfuse, profile: str
) -> None:
    langfuse_sandbox.profile = profile
    for i in range(3):
        langfuse_sandbox.store.add_trace(start_time=T0 + timedelta(seconds=i), input={"q": i})
    langfuse_sandbox.heavy_read_rows = 100
    for fields in ("core,io", "core,basic,metadata", "io,metadata,trace_context"):
        answer = raw(langfuse_sandbox, "GET", PATH, fields=fields, limit=101)
        assert answer.status_code == 422, fields
        assert answer.json() == {"message": RESOURCE_MESSAGE, "error": "Request timed out"}
        smaller = raw(langfuse_sandbox, "GET", PATH, fields=fields, limit=100)
        assert smaller.status_code == 200 and len(smaller.json()["data"]) == 3
    # without the heavy groups a page of 1000 passes
    assert raw(langfuse_sandbox, "GET", PATH, limit=1000).status_code == 200
    assert raw(langfuse_sandbox, "GET", PATH, fields="core,basic,time", limit=1000).is_success

    with pytest.raises(ApiError) as caught:  # the SDK does not retry a 422
        langfuse_client.api.observations.get_many(
            fields="core,io", limit=500, request_options=NO_RETRY
        )
    assert caught.value.status_code == 422
    assert langfuse_sandbox.faults.count("observations", status=422) == 4

    langfuse_sandbox.heavy_read_rows = None  # the default: no such limit
    assert raw(langfuse_sandbox, "GET", PATH, fields="core,io", limit=1000).status_code == 200


def test_the_404_of_a_server_without_the_opt_in_comes_first(
    langfuse_sandbox: LangfuseSandbox,
) -> None:
    langfuse_sandbox.profile = "v4.16"
    langfuse_sandbox.preview_opt_in = False
    langfuse_sandbox.heavy_read_rows = 10
    assert raw(langfuse_sandbox, "GET", PATH, fields="io", limit=50).status_code == 404
    with pytest.raises(ValueError):
        langfuse_sandbox.heavy_read_rows = 0
