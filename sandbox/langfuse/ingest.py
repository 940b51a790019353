"""POST /api/public/otel/v1/traces: OTLP protobuf (gzip or not) or OTLP JSON, from the SDK."""

from __future__ import annotations

from fastapi import APIRouter
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.langfuse.common import (
    INGESTION_SUSPENDED,
    Forbidden,
    _error,
)
from sandbox.langfuse.deps import StoreDep
from sandbox.langfuse.otlp import (
    decode_otlp,
)

router = APIRouter()


@router.post("/api/public/otel/v1/traces", name="otel")
async def otel_traces(request: Request, store: StoreDep) -> Response:
    """Each span becomes an observation (LangfuseStore.ingest_otlp)."""
    if store.ingestion_suspended:  # first thing in the handler (otel/v1/traces/index.ts)
        raise Forbidden(INGESTION_SUSPENDED)
    body = await request.body()
    try:
        decoded, is_json = decode_otlp(
            body,
            request.headers.get("content-type", ""),
            request.headers.get("content-encoding", ""),
        )
    except (OSError, EOFError, ValueError, DecodeError, json_format.ParseError) as e:
        return _error(400, f"Invalid OTLP request: {e}")
    store.ingest_otlp(decoded)
    if is_json:
        return JSONResponse({})
    return Response(
        ExportTraceServiceResponse().SerializeToString(), media_type="application/x-protobuf"
    )
