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
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
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
