"""OTLP/HTTP trace exports: decoding, and the span attributes the Langfuse SDK writes."""

from __future__ import annotations

import base64
import gzip
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from sandbox.langfuse.common import parse_iso

# OTel span attributes written by the Langfuse SDK (langfuse/_client/attributes.py)
A_TRACE_NAME = "langfuse.trace.name"
A_TRACE_TAGS = "langfuse.trace.tags"
A_TRACE_PUBLIC = "langfuse.trace.public"
A_TRACE_METADATA = "langfuse.trace.metadata"
A_USER_ID = "user.id"
A_SESSION_ID = "session.id"
A_TYPE = "langfuse.observation.type"
A_OBS_METADATA = "langfuse.observation.metadata"
A_LEVEL = "langfuse.observation.level"
A_STATUS_MESSAGE = "langfuse.observation.status_message"
A_INPUT = "langfuse.observation.input"
A_OUTPUT = "langfuse.observation.output"
A_COMPLETION_START = "langfuse.observation.completion_start_time"
A_MODEL = "langfuse.observation.model.name"
A_MODEL_PARAMETERS = "langfuse.observation.model.parameters"
A_USAGE = "langfuse.observation.usage_details"
A_COST = "langfuse.observation.cost_details"
A_PROMPT_NAME = "langfuse.observation.prompt.name"
A_PROMPT_VERSION = "langfuse.observation.prompt.version"
A_ENVIRONMENT = "langfuse.environment"
A_RELEASE = "langfuse.release"
A_VERSION = "langfuse.version"
A_IS_APP_ROOT = "langfuse.internal.is_app_root"

# --------------------------------------------------------------------------- OTLP decoding


def _any_value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        return v.double_value
    if kind == "array_value":
        return [_any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return None


def _attributes(kvs: Iterable[KeyValue]) -> dict[str, Any]:
    return {kv.key: _any_value(kv.value) for kv in kvs}


def _opt_str(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _as_str_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return [value]
        if isinstance(parsed, list):
            return [str(v) for v in parsed]
        if "," in value:
            return [part.strip() for part in value.split(",")]
        return [value]
    return [str(value)]


def _decode_metadata_value(value: Any) -> Any:
    """SDK 5 JSON-encodes every metadata value (strings too); the server decodes them."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _prefixed_metadata(attrs: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    whole = attrs.get(prefix)
    if whole is not None:
        decoded = _decode_metadata_value(whole)
        if isinstance(decoded, dict):
            out.update(decoded)
        else:
            out["metadata"] = decoded
    dotted = prefix + "."
    for key, value in attrs.items():
        if key.startswith(dotted):
            out[key[len(dotted) :]] = _decode_metadata_value(value)
    return out


def _json_or_none(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _json_dict(value: Any, cast: Callable[[Any], Any]) -> dict[str, Any] | None:
    parsed = _json_or_none(value)
    if not isinstance(parsed, dict):
        return None
    out: dict[str, Any] = {}
    for k, v in parsed.items():
        if isinstance(v, int | float) and not isinstance(v, bool):
            out[str(k)] = cast(v)
    return out


def _iso_attr_ms(value: Any) -> int | None:
    text = _json_or_none(value)
    if not isinstance(text, str):
        return None
    try:
        return parse_iso(text)
    except ValueError:
        return None


def _hex_ids_to_base64(obj: Any) -> Any:
    """OTLP JSON carries trace/span ids as hex; protobuf's JSON mapping wants base64."""
    if isinstance(obj, list):
        return [_hex_ids_to_base64(x) for x in obj]
    if not isinstance(obj, dict):
        return obj
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if key in ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"):
            if isinstance(value, str) and value and re.fullmatch(r"[0-9a-fA-F]+", value):
                value = base64.b64encode(bytes.fromhex(value)).decode("ascii")
            out[key] = value
        else:
            out[key] = _hex_ids_to_base64(value)
    return out


def decode_otlp(body: bytes, content_type: str, content_encoding: str) -> tuple[Any, bool]:
    """Decode an OTLP/HTTP trace export body. Returns (request, is_json)."""
    if "gzip" in content_encoding.lower():
        body = gzip.decompress(body)
    request = ExportTraceServiceRequest()
    if "json" in content_type.lower():
        json_format.ParseDict(
            _hex_ids_to_base64(json.loads(body)), request, ignore_unknown_fields=True
        )
        return request, True
    request.ParseFromString(body)
    return request, False
