"""The ClickHouse server's two input shapes onto one row: `schemas.event_rows`.

- Arrow (columnar): `normalize_event_table` checks a caller's table and completes
  it to `EVENT_SCHEMA` (`ingest_arrow`; the stream sink's batches come this way,
  and `ingest_events` builds its batch with `schemas.event_rows.events_to_arrow`).
- Raw JSONEachRow bytes (one Kafka event JSON per line): `JSON_SELECT` maps each
  line to the same columns inside ClickHouse, keeping the line in `raw`.

Both apply the row's defaults and column rules from `schemas.event_rows` (naive
Arrow timestamps are taken as UTC).
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from schemas.errors import InvalidInput
from schemas.event_rows import (
    DEFAULT_METRIC_BY_TYPE,
    DEFAULT_VALUE_BY_TYPE,
    EVENT_SCHEMA,
    EVENT_TYPES,
    ID_COLUMNS,
    REQUIRED_COLUMNS,
    SEGMENT_COLUMNS,
)
from schemas.events import MAX_ID_CHARS


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
    for name in ID_COLUMNS:
        if n and pc.max(pc.utf8_length(out[name])).as_py() > MAX_ID_CHARS:
            raise InvalidInput(f"{name} longer than {MAX_ID_CHARS} characters")
    known = pc.is_in(out["event_type"], value_set=pa.array(EVENT_TYPES))
    if not pc.all(known).as_py():
        bad = pc.filter(out["event_type"], pc.invert(known))[0].as_py()
        raise InvalidInput(f"unknown event_type {bad!r}; known: {list(EVENT_TYPES)}")
    # The event schema's defaults: conversions measure "conversion" = 1, revenue events "revenue".
    metric, value = out["metric"], out["value"]
    for event_type, default in DEFAULT_METRIC_BY_TYPE.items():
        metric = pc.if_else(pc.and_(pc.equal(metric, ""), pc.equal(out["event_type"], event_type)), default, metric)
    for event_type, default in DEFAULT_VALUE_BY_TYPE.items():
        value = pc.if_else(pc.and_(pc.is_null(value), pc.equal(out["event_type"], event_type)), default, value)
    out["metric"], out["value"] = metric, value
    return pa.table(out, schema=EVENT_SCHEMA)


# The JSON path: each line parsed once into a named tuple, mapped like `event_row`.
# A line without event_id/user_id/event_type or with an unknown event_type fails
# the whole batch (nothing is written); the stream processor validates upstream.
_JSON_FIELD_TYPES = {pa.string(): "String", pa.float64(): "Nullable(Float64)"}
_JSON_TUPLE = "Tuple({}, segment Tuple({}))".format(
    ", ".join(f"{f.name} {_JSON_FIELD_TYPES[f.type]}" for f in EVENT_SCHEMA
              if f.name not in ("timestamp", "raw", *SEGMENT_COLUMNS)),
    ", ".join(f"{name} Nullable(String)" for name in SEGMENT_COLUMNS),
)
_EVENT_TYPE_LIST = ", ".join(f"'{t}'" for t in EVENT_TYPES)


def _sql_defaults(column: str, missing: str, defaults: dict[str, object]) -> str:
    """`column`, or where `missing` holds, the default of the event's type (as `normalize_event_table`)."""
    for event_type, default in defaults.items():
        column = f"if({missing} AND j.event_type = '{event_type}', {default!r}, {column})"
    return column


_SEGMENT = ",\n    ".join(f"ifNull(j.segment.{name}, '') AS {name}" for name in SEGMENT_COLUMNS)
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
    {_sql_defaults('j.metric', "j.metric = ''", DEFAULT_METRIC_BY_TYPE)} AS metric,
    {_sql_defaults('j.value', 'j.value IS NULL', DEFAULT_VALUE_BY_TYPE)} AS value,
    assumeNotNull(ts) AS timestamp,
    j.session_id AS session_id,
    {_SEGMENT},
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
