"""The event schema at parsing speed: msgspec Structs mirroring `schemas.events.Event`, used by the
stream processor to decode and validate records in compiled code, with pydantic kept for the rest.

`decode_record(raw, make, topic, partition, offset)` returns `make(...)` of the event's row, or None.
None means "ask the pydantic model": the record is invalid, or it is an event whose sinks read the
model (`MODEL_EVENT_TYPES`), or the fast path cannot vouch for it. The processor then runs
`Event.model_validate_json(raw)`, which either accepts the event or gives the dead-letter reason,
so the error text is pydantic's and the decoder as a whole accepts exactly what `Event` accepts.

The fast path is deliberately a *subset* of the model: it accepts an event only when pydantic would
accept it with the same values (tests/stream/test_stream_fast_events.py checks this as a
differential property over arbitrary bytes, and that these Structs mirror `Event`'s fields and
constraints, so they cannot drift). What msgspec cannot say the same way is checked here in Python:

- `timestamp`: decoded as a string, accepted only in the common RFC 3339 form
  (`YYYY-MM-DDTHH:MM:SS[.ffffff](Z|±HH:MM)`) and converted with `datetime.fromisoformat`; any other
  form pydantic takes (Unix numbers, a space separator, more fraction digits, …) goes to pydantic;
- `value` (strict float, no inf/nan): msgspec refuses bools and strings as pydantic strict does;
  a non-finite value is sent to pydantic;
- the model's `_metric_events_have_values` rule (the event types that need experiment_id, value,
  metric) is checked after decoding, from the same constants;
- `routing_metadata.priority`: a `Literal`, not pydantic's `^(high|medium|low)$` regex, whose `$`
  would match before a trailing newline in Python's `re` (not in pydantic's Rust regex);
- lax floats of the nested contexts (`behavioral_score`, `sentiment_score`): pydantic also takes
  numeric strings and NaN/Infinity tokens there; msgspec refuses them, and pydantic decides.

The row has `event_row`'s values (`schemas.event_rows.EVENT_SCHEMA` order), then the routing priority
and source (origin), then `topic, partition, offset` and `None` (no model kept).

`decode_batch(values)` is the same verdict for a whole batch, columnar (what the stream processor
runs): one list per field instead of one tuple per event, and the timestamps checked and converted
for the whole batch in Arrow (RE2 runs the same pattern; Arrow's ISO 8601 cast gives the same
instant as `fromisoformat`, and a batch Arrow cannot read is redone event by event in Python). It
accepts and declines exactly what `decode_record` does, with the same values (tested as a property
over batches of arbitrary inputs), so it is equally the model's verdict. Per event it saves the
record tuple, the regex and the datetime, and leaves no object per event for the garbage collector.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from itertools import compress
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from msgspec import Meta, Struct

from schemas.events import (
    DEFAULT_METRICS,
    DEFAULT_VALUES,
    LIFECYCLE_EVENT_TYPES,
    MAX_ID_CHARS,
    VALUE_EVENT_TYPES,
    EventType,
)

Identifier = Annotated[str, Meta(min_length=1, max_length=MAX_ID_CHARS)]
Short = Annotated[str, Meta(max_length=64)]
Scalar = str | float | int | bool | None


class FastSegment(Struct, forbid_unknown_fields=True, gc=False):
    device: Short | None = None
    country: Short | None = None
    source: Short | None = None
    plan: Short | None = None


class FastAIContext(Struct, forbid_unknown_fields=True, gc=False):
    user_journey_stage: str | None = None
    behavioral_score: Annotated[float, Meta(ge=0, le=1)] | None = None
    intent_prediction: str | None = None
    segment: str | None = None


class FastSemanticContext(Struct, forbid_unknown_fields=True, gc=False):
    text: Annotated[str, Meta(max_length=8192)] | None = None
    context_keywords: Annotated[list[str], Meta(max_length=64)] = []
    sentiment_score: Annotated[float, Meta(ge=-1, le=1)] | None = None


class FastRoutingMetadata(Struct, forbid_unknown_fields=True, gc=False):
    priority: Literal["high", "medium", "low"] | None = None
    source: str | None = None
    trace_id: str | None = None


class FastEvent(Struct, forbid_unknown_fields=True, gc=False):
    event_id: Identifier
    event_type: EventType
    timestamp: str
    user_id: Identifier
    experiment_id: Identifier | None = None
    variant: Identifier | None = None
    metric: Identifier | None = None
    value: float | None = None
    session_id: Identifier | None = None
    segment: FastSegment | None = None
    properties: Annotated[dict[str, Scalar], Meta(max_length=64)] = {}
    ai_context: FastAIContext | None = None
    semantic_context: FastSemanticContext | None = None
    routing_metadata: FastRoutingMetadata | None = None


# The Struct mirroring each pydantic model (checked field by field by the tests).
MIRRORS = {"Event": FastEvent, "Segment": FastSegment, "AIContext": FastAIContext,
           "SemanticContext": FastSemanticContext, "RoutingMetadata": FastRoutingMetadata}

# Events whose sinks read the pydantic model (lifecycle transitions, journeys): always decoded by pydantic.
MODEL_EVENT_TYPES = LIFECYCLE_EVENT_TYPES | {EventType.JOURNEY_COMPLETED}
# `Event._metric_events_have_values`, as sets of event types.
NEEDS_EXPERIMENT = VALUE_EVENT_TYPES | LIFECYCLE_EVENT_TYPES | {EventType.EXPOSURE}
NEEDS_VALUE = VALUE_EVENT_TYPES - {EventType.CONVERSION}
NEEDS_METRIC = NEEDS_VALUE - {EventType.REVENUE}

_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{1,6})?(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)",
                        re.ASCII)
_decode = msgspec.json.Decoder(FastEvent).decode
_fromisoformat = datetime.fromisoformat
_isfinite = math.isfinite
_DecodeError = msgspec.DecodeError


def decode_event(raw: bytes) -> tuple[FastEvent, datetime] | None:
    """The decoded event and its timestamp when the fast path vouches for it (pydantic would accept
    it with these values), else None."""
    try:
        event = _decode(raw)
    except (_DecodeError, ValueError):  # ValueError: invalid UTF-8 in a string
        return None
    kind = event.event_type
    if event.experiment_id is None and kind in NEEDS_EXPERIMENT:
        return None
    value = event.value
    if value is None:
        if kind in NEEDS_VALUE:
            return None
    elif not _isfinite(value):
        return None
    if event.metric is None and kind in NEEDS_METRIC:
        return None
    stamp = event.timestamp
    if _TIMESTAMP.fullmatch(stamp) is None:
        return None
    try:
        when = _fromisoformat(stamp)
    except ValueError:
        return None
    return event, when


def decode_record(raw: bytes, make: Any, topic: str, partition: int, offset: int) -> Any:
    """`make(*row, priority, source, topic, partition, offset, None)` for an event the fast path
    vouches for and whose sinks need no model; None otherwise (then ask pydantic).

    `decode_event`'s checks, inlined (this runs once per event on the stream's hot path)."""
    try:
        event = _decode(raw)
    except (_DecodeError, ValueError):
        return None
    kind = event.event_type
    if kind in MODEL_EVENT_TYPES:
        return None
    if event.experiment_id is None and kind in NEEDS_EXPERIMENT:
        return None
    value = event.value
    if value is None:
        if kind in NEEDS_VALUE:
            return None
        value = DEFAULT_VALUES.get(kind)
    elif not _isfinite(value):
        return None
    metric = event.metric
    if metric is None:
        if kind in NEEDS_METRIC:
            return None
        metric = DEFAULT_METRICS.get(kind)
    stamp = event.timestamp
    if _TIMESTAMP.fullmatch(stamp) is None:
        return None
    try:
        when = _fromisoformat(stamp)
    except ValueError:
        return None
    segment = event.segment
    if segment is None:
        device = country = source = plan = None
    else:
        device, country, source, plan = segment.device, segment.country, segment.source, segment.plan
    routing = event.routing_metadata
    if routing is None:
        priority = origin = None
    else:
        priority, origin = routing.priority, routing.source
    return make(event.event_id, kind, event.experiment_id, event.variant, event.user_id, metric, value, when,
                event.session_id, device, country, source, plan, raw, priority, origin, topic, partition, offset,
                None)


# ----------------------------------------------------------------------------- batches, columnar

_TIMESTAMP_RE2 = f"^(?:{_TIMESTAMP.pattern})$"  # the same pattern for Arrow (RE2: \\d is ASCII there too)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)
_UTC_MICROS = pa.timestamp("us", tz="UTC")
_UTC_MILLIS = pa.timestamp("ms", tz="UTC")
_PLACEHOLDER = "1970-01-01T00:00:00Z"
# The columns of FastColumns, in `schemas.event_rows.EVENT_SCHEMA` order (timestamp is its own array).
ROW_FIELDS = ("event_id", "event_type", "experiment_id", "variant", "user_id", "metric", "value", "timestamp",
              "session_id", "device", "country", "source", "plan", "raw")
_LIST_FIELDS = (*(f for f in ROW_FIELDS if f != "timestamp"), "priority", "origin", "stamp", "position")


class FastColumns:
    """The events of a batch the fast path vouches for (and whose sinks need no model), as columns.

    One list per field of the record (`event_type` holds the `EventType`; `stamp` the timestamp as
    sent, for the few sinks that want a datetime), `position` = each event's index in the batch,
    and `timestamp` = UTC milliseconds (int64 numpy array, what `EVENT_SCHEMA`'s column holds).
    `declined` lists the positions to ask pydantic about, in order.
    """

    __slots__ = (*_LIST_FIELDS, "timestamp", "declined")

    def __init__(self) -> None:
        for name in _LIST_FIELDS:
            setattr(self, name, [])
        self.timestamp: np.ndarray = np.empty(0, np.int64)
        self.declined: list[int] = []

    def __len__(self) -> int:
        return len(self.position)

    def keep(self, mask: Sequence[bool]) -> None:
        """Keep only the events where `mask` holds."""
        for name in _LIST_FIELDS:
            setattr(self, name, list(compress(getattr(self, name), mask)))
        self.timestamp = self.timestamp[np.asarray(mask, dtype=bool)]

    def when(self, index: int) -> datetime:
        """The timestamp of the index-th event as a datetime (the value `decode_record` gives)."""
        return _fromisoformat(self.stamp[index])

    def row(self, index: int) -> tuple[Any, ...]:
        """The index-th event as `decode_record`'s row (without topic, partition, offset and model)."""
        return (self.event_id[index], self.event_type[index], self.experiment_id[index], self.variant[index],
                self.user_id[index], self.metric[index], self.value[index], self.when(index),
                self.session_id[index], self.device[index], self.country[index], self.source[index],
                self.plan[index], self.raw[index], self.priority[index], self.origin[index])


def decode_batch(values: Sequence[bytes]) -> FastColumns:
    """`decode_record`'s verdict for each of `values`, columnar: the events it would accept, and the
    positions of those it would decline (ask pydantic about them)."""
    out = FastColumns()
    declined = out.declined
    event_id, event_type, experiment_id, variant = (out.event_id.append, out.event_type.append,
                                                    out.experiment_id.append, out.variant.append)
    user_id, metric_of, value_of, session_id = (out.user_id.append, out.metric.append, out.value.append,
                                                out.session_id.append)
    device_of, country_of, source_of, plan_of = (out.device.append, out.country.append, out.source.append,
                                                 out.plan.append)
    raw_of, priority_of, origin_of, stamp_of, position_of = (out.raw.append, out.priority.append,
                                                             out.origin.append, out.stamp.append,
                                                             out.position.append)
    decode, model_types, needs_experiment, needs_value, needs_metric = (_decode, MODEL_EVENT_TYPES, NEEDS_EXPERIMENT,
                                                                        NEEDS_VALUE, NEEDS_METRIC)
    default_value, default_metric, isfinite = DEFAULT_VALUES.get, DEFAULT_METRICS.get, _isfinite
    for position, raw in enumerate(values):
        try:
            event = decode(raw)
        except (_DecodeError, ValueError):
            declined.append(position)
            continue
        kind = event.event_type
        if kind in model_types or (event.experiment_id is None and kind in needs_experiment):
            declined.append(position)
            continue
        value = event.value
        if value is None:
            if kind in needs_value:
                declined.append(position)
                continue
            value = default_value(kind)
        elif not isfinite(value):
            declined.append(position)
            continue
        metric = event.metric
        if metric is None:
            if kind in needs_metric:
                declined.append(position)
                continue
            metric = default_metric(kind)
        event_id(event.event_id)
        event_type(kind)
        experiment_id(event.experiment_id)
        variant(event.variant)
        user_id(event.user_id)
        metric_of(metric)
        value_of(value)
        session_id(event.session_id)
        segment = event.segment
        if segment is None:
            device_of(None)
            country_of(None)
            source_of(None)
            plan_of(None)
        else:
            device_of(segment.device)
            country_of(segment.country)
            source_of(segment.source)
            plan_of(segment.plan)
        routing = event.routing_metadata
        if routing is None:
            priority_of(None)
            origin_of(None)
        else:
            priority_of(routing.priority)
            origin_of(routing.source)
        raw_of(raw)
        stamp_of(event.timestamp)
        position_of(position)
    if out.stamp:
        millis, readable = _timestamps_ms(out.stamp)
        out.timestamp = millis
        if readable is not None:  # some timestamps are not in the form the fast path vouches for
            unreadable = [p for p, ok in zip(out.position, readable, strict=True) if not ok]
            out.keep(readable)
            declined.extend(unreadable)
            declined.sort()
    return out


def _timestamps_ms(stamps: list[str]) -> tuple[np.ndarray, list[bool] | None]:
    """UTC milliseconds of each timestamp (floored, as `(t - epoch) // 1 ms`), and which ones `decode_record`
    would take (None: all). In Arrow; a batch Arrow cannot read is redone in Python, event by event."""
    column = pa.array(stamps, pa.string())
    # fromisoformat refuses the year 0 that Arrow reads; everything else the pattern admits, both read alike
    formed = pc.and_(pc.match_substring_regex(column, _TIMESTAMP_RE2), pc.invert(pc.starts_with(column, "0000")))
    readable = None
    if not pc.all(formed).as_py():
        column = pc.if_else(formed, column, _PLACEHOLDER)
        readable = formed.to_pylist()
    try:
        micros = column.cast(_UTC_MICROS).cast(pa.int64()).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # e.g. a day the month lacks: fromisoformat decides
        return _timestamps_ms_python(stamps)
    return np.floor_divide(micros, 1000), readable


def _timestamps_ms_python(stamps: list[str]) -> tuple[np.ndarray, list[bool] | None]:
    millis, readable = [], []
    for stamp in stamps:
        when = None
        if _TIMESTAMP.fullmatch(stamp) is not None:
            try:
                when = _fromisoformat(stamp)
            except ValueError:
                pass
        readable.append(when is not None)
        millis.append(0 if when is None else (when - _EPOCH) // _MILLISECOND)
    return np.array(millis, dtype=np.int64), (None if all(readable) else readable)


def timestamp_array(millis: np.ndarray) -> pa.Array:
    """UTC milliseconds -> the `timestamp` column of `schemas.event_rows.EVENT_SCHEMA`."""
    return pa.array(millis, _UTC_MILLIS)
