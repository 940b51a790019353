"""The store's traces and observations: seeding, OTLP ingestion, the v2 query."""

from __future__ import annotations

import bisect
import secrets
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from sandbox.langfuse.common import (
    LEVELS,
    OBSERVATION_TYPES,
    _io_text,
    to_ms,
)
from sandbox.langfuse.otlp import (
    A_COMPLETION_START,
    A_COST,
    A_ENVIRONMENT,
    A_INPUT,
    A_IS_APP_ROOT,
    A_LEVEL,
    A_MODEL,
    A_MODEL_PARAMETERS,
    A_OBS_METADATA,
    A_OUTPUT,
    A_PROMPT_NAME,
    A_PROMPT_VERSION,
    A_RELEASE,
    A_SESSION_ID,
    A_STATUS_MESSAGE,
    A_TRACE_METADATA,
    A_TRACE_NAME,
    A_TRACE_PUBLIC,
    A_TRACE_TAGS,
    A_TYPE,
    A_USAGE,
    A_USER_ID,
    A_VERSION,
    _as_str_list,
    _attributes,
    _iso_attr_ms,
    _json_dict,
    _json_or_none,
    _opt_str,
    _prefixed_metadata,
)
from sandbox.langfuse.records import (
    ObservationRecord,
    TraceRecord,
)
from sandbox.langfuse.store_base import (
    StoreBase,
)


class ObservationStore(StoreBase):
    """Traces and observations of the project."""

    # ----------------------------------------------------------- seeding: traces

    def add_trace(
        self,
        *,
        trace_id: str | None = None,
        name: str | None = None,
        tags: Iterable[str] = (),
        metadata: Mapping[str, Any] | None = None,
        input: Any = None,
        output: Any = None,
        start_time: datetime,
        end_time: datetime | None = None,
        environment: str = "default",
        user_id: str | None = None,
        session_id: str | None = None,
        release: str | None = None,
        root_observation_id: str | None = None,
    ) -> str:
        """Create a trace and its root observation (type SPAN, ``isRootObservation`` true).

        ``tags`` land on the trace and its root observation; children seeded later inherit them
        unless ``add_observation(tags=())`` says otherwise (see there).

        ``input``/``output`` are stored the way the SDK exports them: a ``str`` as it is,
        anything else as its JSON text. ``metadata`` lands on the trace and its root span.
        Returns the trace id.
        """
        trace_id = trace_id or secrets.token_hex(16)
        start_ms = to_ms(start_time)
        meta = dict(metadata or {})
        in_legacy, in_events = self._written_tables()
        with self._lock:
            self._traces[trace_id] = TraceRecord(
                id=trace_id,
                start_ms=start_ms,
                name=name,
                tags=tuple(dict.fromkeys(tags)),
                metadata=meta,
                release=release,
                user_id=user_id,
                session_id=session_id,
                environment=environment,
                in_legacy=in_legacy,
            )
            self._put_observation(
                ObservationRecord(
                    id=root_observation_id or secrets.token_hex(8),
                    trace_id=trace_id,
                    type="SPAN",
                    name=name,
                    start_ms=start_ms,
                    end_ms=to_ms(end_time) if end_time is not None else None,
                    is_root=True,
                    environment=environment,
                    user_id=user_id,
                    session_id=session_id,
                    input=_io_text(input),
                    output=_io_text(output),
                    metadata=dict(meta) if meta else None,
                    tags=tuple(dict.fromkeys(tags)),
                    created_ms=start_ms,
                    updated_ms=start_ms,
                    in_events=in_events,
                )
            )
        return trace_id

    def add_observation(
        self,
        *,
        trace_id: str,
        type: str = "GENERATION",
        name: str | None = None,
        input: Any = None,
        output: Any = None,
        parent_observation_id: str | None = None,
        start_time: datetime,
        end_time: datetime | None = None,
        model: str | None = None,
        model_parameters: Any = None,
        metadata: Mapping[str, Any] | None = None,
        level: str = "DEFAULT",
        status_message: str | None = None,
        usage_details: Mapping[str, int] | None = None,
        cost_details: Mapping[str, float] | None = None,
        observation_id: str | None = None,
        environment: str | None = None,
        tags: Iterable[str] | None = None,
        is_root: bool = False,
    ) -> str:
        """Add an observation to an existing trace. Returns the observation id.

        ``tags`` are the observation's own (what the v2 tag filter looks at). None: the trace's
        tags, the shape SDK 5's ``propagate_attributes(tags=...)`` gives every span; ``()``:
        none, as when only the root span carries ``langfuse.trace.tags``. ``is_root``: a second
        root (no parent), as OTLP ingestion makes when two services start spans of one trace."""
        kind = type.upper()
        if kind not in OBSERVATION_TYPES:
            raise ValueError(f"unknown observation type {type!r}")
        start_ms = to_ms(start_time)
        with self._lock:
            trace = self._traces.get(trace_id)
            if trace is None:
                raise KeyError(f"no trace {trace_id!r}")
            obs = ObservationRecord(
                id=observation_id or secrets.token_hex(8),
                trace_id=trace_id,
                type=kind,
                name=name,
                start_ms=start_ms,
                end_ms=to_ms(end_time) if end_time is not None else None,
                parent_observation_id=parent_observation_id,
                is_root=is_root and parent_observation_id is None,
                level=level,
                status_message=status_message,
                environment=environment or trace.environment,
                user_id=trace.user_id,
                session_id=trace.session_id,
                input=_io_text(input),
                output=_io_text(output),
                metadata=dict(metadata) if metadata else None,
                model=model,
                model_parameters=model_parameters,
                usage_details=dict(usage_details) if usage_details else None,
                cost_details=dict(cost_details) if cost_details else None,
                tags=trace.tags if tags is None else tuple(dict.fromkeys(tags)),
                created_ms=start_ms,
                updated_ms=start_ms,
                in_events=self._written_tables()[1],
            )
            self._put_observation(obs)
        return obs.id

    def _put_observation(self, obs: ObservationRecord) -> None:
        """Insert or replace (same id) an observation; the caller holds the lock."""
        old = self._observations.get(obs.id)
        if old is not None and old.start_ms != obs.start_ms:
            self._obs_order.remove((old.start_ms, old.id))
            old = None
        self._observations[obs.id] = obs
        if old is None:
            key = (obs.start_ms, obs.id)
            if self._obs_order and key < self._obs_order[-1]:
                self._obs_sorted = False
            self._obs_order.append(key)

    def _written_tables(self) -> tuple[bool, bool]:
        """(legacy tables, events tables) the server's write mode writes a trace into
        (worker/src/env.ts at v4.16.0: v4WritesToLegacyTables, v4WritesToEventsTable)."""
        mode = self.write_mode
        return mode != "events_only", mode != "legacy"

    # ----------------------------------------------------------- accessors

    def trace(self, trace_id: str) -> TraceRecord | None:
        with self._lock:
            return self._traces.get(trace_id)

    def trace_count(self) -> int:
        with self._lock:
            return len(self._traces)

    def all_traces(self) -> list[TraceRecord]:
        """Every trace (the stored records: read, do not change)."""
        with self._lock:
            return list(self._traces.values())

    def all_observations(self) -> list[ObservationRecord]:
        with self._lock:
            return list(self._observations.values())

    def observations_for(self, trace_id: str) -> list[ObservationRecord]:
        with self._lock:
            rows = [o for o in self._observations.values() if o.trace_id == trace_id]
        return sorted(rows, key=lambda o: (o.start_ms, o.id))

    # ----------------------------------------------------------- OTel ingestion

    def ingest_otlp(self, request: ExportTraceServiceRequest) -> int:
        """Turn the spans of an OTLP export into traces and observations. Returns span count."""
        count = 0
        now = self.now_ms()
        tables = self._written_tables()
        with self._lock:
            for resource_spans in request.resource_spans:
                resource = _attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self._ingest_span(span, resource, now, tables)
                        count += 1
        return count

    def _ingest_span(
        self, span: Span, resource: dict[str, Any], now: int, tables: tuple[bool, bool]
    ) -> None:
        attrs = _attributes(span.attributes)
        trace_id = span.trace_id.hex()
        span_id = span.span_id.hex()
        parent_id = span.parent_span_id.hex() if span.parent_span_id else None
        start_ms = span.start_time_unix_nano // 1_000_000
        end_ms = span.end_time_unix_nano // 1_000_000 if span.end_time_unix_nano else None

        environment = str(attrs.get(A_ENVIRONMENT) or resource.get(A_ENVIRONMENT) or "default")
        release = attrs.get(A_RELEASE) or resource.get(A_RELEASE)
        user_id = _opt_str(attrs.get(A_USER_ID))
        session_id = _opt_str(attrs.get(A_SESSION_ID))
        trace_meta = _prefixed_metadata(attrs, A_TRACE_METADATA)
        obs_meta = _prefixed_metadata(attrs, A_OBS_METADATA)
        # OtelIngestionProcessor.extractTags (packages/shared/src/server/otel/): each span's
        # event row takes the tags of its OWN attributes
        tags = _as_str_list(
            attrs.get(A_TRACE_TAGS)
            or attrs.get("langfuse.tags")
            or attrs.get(f"{A_OBS_METADATA}.langfuse_tags")
            or attrs.get(f"{A_TRACE_METADATA}.langfuse_tags")
        )
        is_root = parent_id is None or attrs.get(A_IS_APP_ROOT) is True

        # the trace: created by its first span, enriched by every later one
        in_legacy, in_events = tables
        trace = self._traces.get(trace_id)
        if trace is None:
            trace = TraceRecord(
                id=trace_id, start_ms=start_ms, environment=environment, in_legacy=in_legacy
            )
            self._traces[trace_id] = trace
        trace.in_legacy = trace.in_legacy or in_legacy
        trace.start_ms = min(trace.start_ms, start_ms)
        if attrs.get(A_TRACE_NAME):
            trace.name = str(attrs[A_TRACE_NAME])
        elif trace.name is None and parent_id is None:
            trace.name = span.name
        if tags:
            trace.tags = tuple(dict.fromkeys((*trace.tags, *tags)))
        trace.metadata.update(trace_meta)
        trace.release = _opt_str(release) or trace.release
        trace.user_id = user_id or trace.user_id
        trace.session_id = session_id or trace.session_id
        if attrs.get(A_TRACE_PUBLIC) is True:
            trace.public = True
        if parent_id is None:
            trace.environment = environment

        kind = str(attrs.get(A_TYPE) or "").upper()
        if kind not in OBSERVATION_TYPES:
            kind = "GENERATION" if attrs.get("gen_ai.request.model") else "SPAN"
        level = str(attrs.get(A_LEVEL) or "DEFAULT").upper()
        status_message = _opt_str(attrs.get(A_STATUS_MESSAGE))
        if span.status.code == Status.STATUS_CODE_ERROR:
            level = "ERROR"
            status_message = status_message or span.status.message or None
        if level not in LEVELS:
            level = "DEFAULT"
        metadata = {**trace_meta, **obs_meta}
        prompt_version = attrs.get(A_PROMPT_VERSION)
        old = self._observations.get(span_id)
        self._put_observation(
            ObservationRecord(
                id=span_id,
                trace_id=trace_id,
                type=kind,
                name=span.name,
                start_ms=start_ms,
                end_ms=end_ms,
                parent_observation_id=parent_id,
                is_root=is_root,
                level=level,
                status_message=status_message,
                version=_opt_str(attrs.get(A_VERSION)),
                environment=environment,
                user_id=user_id,
                session_id=session_id,
                input=_opt_str(attrs.get(A_INPUT)),
                output=_opt_str(attrs.get(A_OUTPUT)),
                metadata=metadata or None,
                model=_opt_str(
                    attrs.get(A_MODEL)
                    or attrs.get("gen_ai.response.model")
                    or attrs.get("gen_ai.request.model")
                ),
                model_parameters=_json_or_none(attrs.get(A_MODEL_PARAMETERS)),
                usage_details=_json_dict(attrs.get(A_USAGE), int),
                cost_details=_json_dict(attrs.get(A_COST), float),
                completion_start_ms=_iso_attr_ms(attrs.get(A_COMPLETION_START)),
                prompt_name=_opt_str(attrs.get(A_PROMPT_NAME)),
                prompt_version=int(prompt_version) if isinstance(prompt_version, int) else None,
                tags=tuple(dict.fromkeys(tags)),
                created_ms=old.created_ms if old is not None else now,
                updated_ms=now,
                in_events=in_events or (old is not None and old.in_events),
            )
        )

    # ----------------------------------------------------------- observations query

    def query_observations(
        self,
        *,
        predicate: Callable[[ObservationRecord, TraceRecord | None], bool],
        from_ms: int | None,
        to_ms: int | None,
        before: tuple[int, str] | None,
        limit: int,
    ) -> tuple[list[tuple[ObservationRecord, TraceRecord | None]], bool]:
        """Newest first (start time, then id, descending), at most ``limit`` rows.

        ``from_ms`` inclusive, ``to_ms`` exclusive, ``before`` an exclusive keyset cursor.
        Returns the rows (with their traces) and whether more rows follow.
        """
        rows: list[tuple[ObservationRecord, TraceRecord | None]] = []
        with self._lock:
            if not self._obs_sorted:
                self._obs_order.sort()
                self._obs_sorted = True
            order = self._obs_order
            hi = len(order)
            if to_ms is not None:
                hi = bisect.bisect_left(order, (to_ms, ""))
            if before is not None:
                hi = min(hi, bisect.bisect_left(order, before))
            lo = bisect.bisect_left(order, (from_ms, "")) if from_ms is not None else 0
            observations, traces = self._observations, self._traces
            for i in range(hi - 1, lo - 1, -1):
                obs = observations[order[i][1]]
                trace = traces.get(obs.trace_id)
                if predicate(obs, trace):
                    rows.append((obs, trace))
                    if len(rows) > limit:
                        return rows[:limit], True
        return rows, False
