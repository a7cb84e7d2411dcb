"""How events become rows of `events`: the canonical Arrow batch and the JSON mapping.

Two input shapes, one row format:
- Arrow (columnar): `normalize_event_table` checks and completes a caller's
  table into `EVENT_SCHEMA`; `events_to_arrow` builds one from `Event` models.
- Raw JSONEachRow bytes (one Kafka event JSON per line): `JSON_SELECT` maps each
  line to the same columns inside ClickHouse, keeping the line in `raw`.

Both apply the defaults of `schemas.events.Event`: a conversion measures metric
"conversion" with value 1, a revenue event metric "revenue"; timestamps are
stored in UTC (naive Arrow timestamps are taken as UTC). `segment.device/country/source/plan` become columns.
"""

from __future__ import annotations

import io
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from schemas.errors import InvalidInput
from schemas.events import Event, EventType

EVENT_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("event_type", pa.string()),
        ("experiment_id", pa.string()),
        ("variant", pa.string()),
        ("user_id", pa.string()),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("timestamp", pa.timestamp("ms", tz="UTC")),
        ("session_id", pa.string()),
        ("device", pa.string()),
        ("country", pa.string()),
        ("source", pa.string()),
        ("plan", pa.string()),
        ("raw", pa.string()),
    ]
)
REQUIRED_COLUMNS = ("event_id", "event_type", "user_id", "timestamp")
EVENT_TYPES = tuple(t.value for t in EventType)
DEFAULT_METRIC = {"conversion": "conversion", "revenue": "revenue"}
MAX_ID_CHARS = 128


def events_to_arrow(events: Iterable[Event]) -> pa.Table:
    """`Event` models -> a canonical batch (raw = the event's JSON without nulls)."""
    columns: dict[str, list] = {name: [] for name in EVENT_SCHEMA.names}
    for event in events:
        segment = event.segment
        columns["event_id"].append(event.event_id)
        columns["event_type"].append(event.event_type.value)
        columns["experiment_id"].append(event.experiment_id or "")
        columns["variant"].append(event.variant or "")
        columns["user_id"].append(event.user_id)
        columns["metric"].append(event.metric_name or "")
        columns["value"].append(event.metric_value)
        columns["timestamp"].append(event.timestamp)
        columns["session_id"].append(event.session_id or "")
        for name in ("device", "country", "source", "plan"):
            columns[name].append((getattr(segment, name) if segment else None) or "")
        columns["raw"].append(event.model_dump_json(exclude_none=True))
    return pa.table(columns, schema=EVENT_SCHEMA)


def normalize_event_table(table: pa.Table) -> pa.Table:
    """Check a caller's Arrow batch and complete it to `EVENT_SCHEMA`.

    Required: event_id, event_type, user_id (non-empty strings) and timestamp
    (an Arrow timestamp; naive = UTC). Optional columns may be absent or null.
    Raises InvalidInput naming the first problem; nothing is written then.
    """
    unknown = sorted(set(table.column_names) - set(EVENT_SCHEMA.names))
    if unknown:
        raise InvalidInput(f"unknown event columns {unknown}; allowed: {EVENT_SCHEMA.names}")
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise InvalidInput(f"event batch lacks required columns {missing}")
    n = table.num_rows
    out: dict[str, pa.ChunkedArray | pa.Array] = {}
    for field in EVENT_SCHEMA:
        name = field.name
        if name not in table.column_names:
            out[name] = pa.nulls(n, field.type) if name == "value" else pa.array([""] * n, pa.string())
            continue
        column = table.column(name)
        if name == "timestamp":
            if not pa.types.is_timestamp(column.type):
                raise InvalidInput(f"timestamp must be an Arrow timestamp column, got {column.type}")
            if column.null_count:
                raise InvalidInput("timestamp has null values")
            if column.type.tz is None:
                column = pc.assume_timezone(column, "UTC")
            out[name] = column.cast(field.type, safe=False)
            continue
        try:
            column = column.cast(field.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise InvalidInput(f"column {name} cannot be read as {field.type}: {exc}") from exc
        if name == "value":
            finite = pc.is_finite(column)
            if column.null_count < n and not pc.all(pc.or_kleene(finite, pc.is_null(column))).as_py():
                raise InvalidInput("value has non-finite numbers (NaN or infinity)")
            out[name] = column
            continue
        if name in REQUIRED_COLUMNS:
            empty = pc.or_(pc.is_null(column), pc.equal(pc.fill_null(column, ""), ""))
            if pc.any(empty).as_py():
                raise InvalidInput(f"{name} is empty in row {int(np.flatnonzero(empty.to_numpy(zero_copy_only=False))[0])}")
        out[name] = pc.fill_null(column, "")
    for name in ("event_id", "user_id", "experiment_id", "variant", "metric", "session_id"):
        if n and pc.max(pc.utf8_length(out[name])).as_py() > MAX_ID_CHARS:
            raise InvalidInput(f"{name} longer than {MAX_ID_CHARS} characters")
    known = pc.is_in(out["event_type"], value_set=pa.array(EVENT_TYPES))
    if not pc.all(known).as_py():
        bad = pc.filter(out["event_type"], pc.invert(known))[0].as_py()
        raise InvalidInput(f"unknown event_type {bad!r}; known: {list(EVENT_TYPES)}")
    # Event's defaults: conversions measure "conversion" = 1, revenue events "revenue".
    metric = out["metric"]
    for event_type, default in DEFAULT_METRIC.items():
        metric = pc.if_else(pc.and_(pc.equal(metric, ""), pc.equal(out["event_type"], event_type)), default, metric)
    out["metric"] = metric
    is_conversion = pc.equal(out["event_type"], "conversion")
    out["value"] = pc.if_else(pc.and_(pc.is_null(out["value"]), is_conversion), 1.0, out["value"])
    return pa.table(out, schema=EVENT_SCHEMA)


# The JSON path: each line parsed once into a named tuple, mapped like `Event`.
# A line without event_id/user_id/event_type or with an unknown event_type fails
# the whole batch (nothing is written); the stream processor validates upstream.
_JSON_TUPLE = (
    "Tuple(event_id String, event_type String, user_id String, experiment_id String, variant String, "
    "metric String, value Nullable(Float64), session_id String, "
    "segment Tuple(device Nullable(String), country Nullable(String), source Nullable(String), plan Nullable(String)))"
)
_EVENT_TYPE_LIST = ", ".join(f"'{t}'" for t in EVENT_TYPES)
JSON_COLUMNS = EVENT_SCHEMA.names
JSON_SELECT = f"""
WITH JSONExtract(raw, '{_JSON_TUPLE}') AS j,
     JSONExtractRaw(raw, 'timestamp') AS ts_raw,
     toFloat64OrNull(ts_raw) AS ts_number,
     if(startsWith(ts_raw, '"'),
        parseDateTime64BestEffortOrNull(JSONExtractString(raw, 'timestamp'), 3, 'UTC'),
        -- numbers are Unix time as pydantic reads them: seconds, or milliseconds beyond 2e10
        fromUnixTimestamp64Milli(toInt64(if(abs(ts_number) > 2e10, ts_number, ts_number * 1000)), 'UTC')) AS ts,
     throwIf(j.event_id = '' OR j.user_id = '' OR j.event_type = '',
             'an event lacks event_id, user_id or event_type')
     + throwIf(j.event_type NOT IN ({_EVENT_TYPE_LIST}), 'an event has an unknown event_type')
     + throwIf(ts IS NULL, 'an event lacks a readable timestamp') AS failed
SELECT
    if(failed = 0, j.event_id, '') AS event_id,
    j.event_type AS event_type,
    j.experiment_id AS experiment_id,
    j.variant AS variant,
    j.user_id AS user_id,
    if(j.metric != '', j.metric, multiIf(j.event_type = 'conversion', 'conversion',
                                         j.event_type = 'revenue', 'revenue', '')) AS metric,
    if(j.value IS NULL AND j.event_type = 'conversion', 1.0, j.value) AS value,
    assumeNotNull(ts) AS timestamp,
    j.session_id AS session_id,
    ifNull(j.segment.device, '') AS device,
    ifNull(j.segment.country, '') AS country,
    ifNull(j.segment.source, '') AS source,
    ifNull(j.segment.plan, '') AS plan,
    raw
FROM {{source}}
WHERE raw != ''
"""


_USER_ID_ONLY = pa_json.ParseOptions(explicit_schema=pa.schema([("user_id", pa.string())]),
                                     unexpected_field_behavior="ignore")


def json_user_ids(data: bytes) -> pa.Array | None:
    """The user ids of JSONEachRow bytes that ClickHouse accepted (None if Arrow cannot read them)."""
    try:
        table = pa_json.read_json(io.BytesIO(data), parse_options=_USER_ID_ONLY)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return table.column("user_id").combine_chunks()
