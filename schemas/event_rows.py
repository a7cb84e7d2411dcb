"""How an event becomes a row of ClickHouse's `events` table: the columns, their types and the defaults.

One place for that mapping, shared by the ClickHouse server (the `ingest_events` tool, the
checks of `ingest_arrow`, the SQL of the JSON path) and the stream processor's ClickHouse sink:

- `EVENT_SCHEMA`: the columns of an events batch and their Arrow types, in table order;
- `event_row(event, raw)`: one validated `Event` as a tuple of those columns' values;
- `rows_to_arrow(rows)`: such tuples as one batch (a tuple may carry more after the row, like
  the stream's records do);
- the defaults are the event schema's (`schemas.events.DEFAULT_METRICS` / `DEFAULT_VALUES`:
  a conversion measures "conversion" = 1, a revenue event "revenue"); segment device/country/
  source/plan become columns; `raw` is the event's JSON; timestamps are UTC milliseconds, like
  the table's DateTime64(3).

In a batch an optional value the event lacks is null; the store keeps '' for strings and NULL
for `value` (`normalize_event_table` fills them, as the JSON path does).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from schemas.events import DEFAULT_METRICS, DEFAULT_VALUES, Event, EventType

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
ROW_WIDTH = len(EVENT_SCHEMA)
REQUIRED_COLUMNS = ("event_id", "event_type", "user_id", "timestamp")
SEGMENT_COLUMNS = ("device", "country", "source", "plan")  # Event.segment's fields, each a column
ID_COLUMNS = ("event_id", "user_id", "experiment_id", "variant", "metric", "session_id")  # schemas.events.Identifier
EVENT_TYPES = tuple(t.value for t in EventType)
# The defaults keyed by the event_type column's strings (the Arrow and SQL paths compare strings).
DEFAULT_METRIC_BY_TYPE = {t.value: metric for t, metric in DEFAULT_METRICS.items()}
DEFAULT_VALUE_BY_TYPE = {t.value: value for t, value in DEFAULT_VALUES.items()}


def event_row(event: Event, raw: bytes | str) -> tuple[Any, ...]:
    """The row of a validated event, in `EVENT_SCHEMA` order (`event_type` stays the `EventType`, a str)."""
    segment = event.segment
    if segment is None:
        device = country = source = plan = None
    else:
        device, country, source, plan = segment.device, segment.country, segment.source, segment.plan
    return (event.event_id, event.event_type, event.experiment_id, event.variant, event.user_id,
            event.metric_name, event.metric_value, event.timestamp, event.session_id,
            device, country, source, plan, raw)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)
_TIMESTAMP = EVENT_SCHEMA.names.index("timestamp")
_RAW = EVENT_SCHEMA.names.index("raw")


def rows_to_arrow(rows: Sequence[Sequence[Any]]) -> pa.Table:
    """Rows (tuples whose first `ROW_WIDTH` items are `event_row`'s) -> one batch in `EVENT_SCHEMA`."""
    columns: list[pa.Array] = []
    values = list(zip(*rows, strict=False))  # transposed in C: one sequence per field of the rows
    for index, column in enumerate(EVENT_SCHEMA):
        if not rows:
            columns.append(pa.array([], column.type))
        elif index == _TIMESTAMP:
            # whole milliseconds since the epoch: what DateTime64(3) keeps, and faster than datetimes
            columns.append(pa.array([(t - _EPOCH) // _MILLISECOND for t in values[index]], column.type))
        elif index == _RAW:
            # bytes (the Kafka record as received) or str; checked to be UTF-8 by the cast
            columns.append(pa.array(values[index], pa.binary()).cast(pa.string()))
        else:
            columns.append(pa.array(values[index], column.type))
    return pa.Table.from_arrays(columns, schema=EVENT_SCHEMA)


def events_to_arrow(events: Iterable[Event]) -> pa.Table:
    """`Event` models -> a batch (raw = each event's JSON without nulls)."""
    return rows_to_arrow([event_row(event, event.model_dump_json(exclude_none=True)) for event in events])
