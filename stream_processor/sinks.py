"""Sinks: where classified events go. Vocabulary after Quix Streams.

A sink collects records with `add(...)` and writes them with `flush()`. Every
flush is idempotent, so a batch replayed after a crash (at-least-once
delivery) leaves the stores exactly as one delivery would:

- ClickHouse: the validated records of a flush as one Arrow batch
  (`schemas.event_rows`: the rows the ingest tools store too, `raw` = the original
  bytes), inserted with a deduplication token built from its (topic, partition,
  first offset, last offset) ranges, on a table that also deduplicates by event_id —
  so a replay with different fetch boundaries still counts each event once.
- PostgreSQL: exposures become assignments where the first assignment wins (only first-seen
  (experiment, user) pairs are written; exposures relayed from the registry's outbox are not
  written back, see `PostgresSink`); lifecycle transitions already applied are no-ops.
- Chroma: upserts keyed by stable ids.

The bulk of the events reaches the sinks columnar, one part per topic-partition chunk:
`add_chunk(ColumnChunk)` (ClickHouse: the rows as an Arrow table) and
`add_chunk(ExposureChunk)` (PostgreSQL: the exposures as plain rows). The rest (the few
events the fast decoder leaves to pydantic, and those whose sinks read more than the row:
lifecycle transitions, journeys) come one `Record` each through `add(record)`: the
event's row (`schemas.event_rows.event_row`), where it came from, and for those the
parsed model in `record.event`, so nothing is parsed twice. Columns instead of a tuple
per event matter because the processor keeps several batches alive while they are
stored: per-event objects cost a third of its CPU in the garbage collector and in
their construction.

A sink whose store is down raises `SinkUnavailable(retry_after)`: the
processor backs off and retries the same batch without committing.
"""

from __future__ import annotations

import hashlib
import logging
from collections import namedtuple
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import pyarrow as pa

from schemas.errors import BackendUnavailable, Conflict, ServiceError
from schemas.event_rows import EVENT_SCHEMA, event_row, rows_to_arrow
from schemas.events import Event, EventType
from schemas.fast_events import MODEL_EVENT_TYPES, FastColumns, decode_record, timestamp_array
from stream_processor.outbox import SOURCE as OUTBOX_SOURCE  # routing_metadata.source of relayed events

log = logging.getLogger(__name__)


class SinkUnavailable(Exception):
    """The store cannot take the batch now; retry after `retry_after` seconds, do not commit."""

    def __init__(self, sink: str, reason: str, retry_after: float = 1.0) -> None:
        super().__init__(f"{sink} sink unavailable: {reason}")
        self.retry_after = retry_after


# The events whose sinks read more than the row: a lifecycle event's transition and winner
# (PostgreSQL), a journey's steps and outcome (Chroma). Their records keep the parsed model.
MODEL_KEPT_FOR = MODEL_EVENT_TYPES  # the fast decoder leaves exactly these to pydantic


class Record(namedtuple("_Record", (*EVENT_SCHEMA.names, "priority", "origin", "topic", "partition", "offset",
                                     "event"))):
    """One validated event: its row of `schemas.event_rows.EVENT_SCHEMA` (event_id, event_type, …,
    plan, raw = the original bytes), its routing priority and origin (`routing_metadata.priority` and `.source`), where it
    came from, and its model if `MODEL_KEPT_FOR` (else None). `schemas.fast_events.decode_record`
    builds the same tuple from the msgspec decoder.

    `event_type` is the `EventType`; `metric` and `value` carry the event schema's defaults
    (a conversion measures "conversion" = 1, a revenue event "revenue").
    """

    __slots__ = ()

    @classmethod
    def of(cls, event: Event, raw: bytes, topic: str, partition: int, offset: int) -> Record:
        kept = event if event.event_type in MODEL_KEPT_FOR else None
        routing = event.routing_metadata
        priority, origin = (None, None) if routing is None else (routing.priority, routing.source)
        return cls._make((*event_row(event, raw), priority, origin, topic, partition, offset, kept))


@dataclass(frozen=True)
class ColumnChunk:
    """Validated events of one topic-partition as an Arrow table in `EVENT_SCHEMA` (for ClickHouse), with
    the first and last offsets among them (for the insert's deduplication token)."""

    topic: str
    partition: int
    table: pa.Table
    first_offset: int
    last_offset: int

    def __len__(self) -> int:
        return self.table.num_rows

    @classmethod
    def of(cls, fast: FastColumns, topic: str, partition: int, offsets: list[int]) -> ColumnChunk:
        columns = []
        for name, column in zip(EVENT_SCHEMA.names, EVENT_SCHEMA, strict=True):
            if name == "timestamp":
                columns.append(timestamp_array(fast.timestamp))
            else:  # raw: the bytes as received, checked to be UTF-8 here (JSON that decoded is)
                columns.append(pa.array(getattr(fast, name), column.type))
        table = pa.Table.from_arrays(columns, schema=EVENT_SCHEMA)
        return cls(topic, partition, table, offsets[fast.position[0]], offsets[fast.position[-1]])


@dataclass(frozen=True)
class ExposureChunk:
    """Validated exposure events of one topic-partition, in offset order, as plain rows for the registry:
    (experiment key, user id, variant key, timestamp), each event's routing source (`origin`), and the
    raw bytes and offset each came from (a refused one becomes a dead letter)."""

    topic: str
    partition: int
    rows: list[tuple[str, str, str | None, datetime]]
    origins: list[str | None]
    sources: list[tuple[bytes, int]]

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def of(cls, fast: FastColumns, indexes: list[int], topic: str, partition: int, offsets: list[int]) -> ExposureChunk:
        experiment, user, variant, origin, raw, position = (fast.experiment_id, fast.user_id, fast.variant,
                                                            fast.origin, fast.raw, fast.position)
        return cls(topic, partition, [(experiment[i], user[i], variant[i], fast.when(i)) for i in indexes],
                   [origin[i] for i in indexes], [(raw[i], offsets[position[i]]) for i in indexes])

    def record(self, index: int) -> Record:
        """The full record of the index-th exposure (to report a refusal; the fast decoder took it)."""
        raw, offset = self.sources[index]
        return decode_record(raw, Record, self.topic, self.partition, offset)


class Sink(Protocol):
    name: str

    def add(self, record: Record) -> None: ...

    def add_chunk(self, chunk: Any) -> None:
        """Take a bulk part of a batch (`ColumnChunk` or `ExposureChunk`: the processor sends a sink only
        the kind it reads)."""
        ...

    async def flush(self) -> int:
        """Write everything added since the last flush; return how many records were written."""
        ...


def _unavailable(name: str, exc: Exception) -> SinkUnavailable:
    return SinkUnavailable(name, f"{type(exc).__name__}: {exc}")


MAX_TOKEN_CHARS = 512  # the ClickHouse service's limit for an idempotency token


@dataclass
class ClickHouseSink:
    """Validated events into ClickHouse as Arrow, one idempotent insert per flush (its ranges are the token)."""

    service: Any  # mcp_servers.clickhouse service (ingest_arrow)
    name: str = "clickhouse"
    # The processor gathers batches for up to its flush_wait until a flush has this many rows: each insert
    # is a part per weekly partition, and fewer, larger parts cost chDB about half the CPU per row.
    min_flush_rows: int = 100_000
    pending: list[Record] = field(default_factory=list)
    chunks: list[pa.Table] = field(default_factory=list)
    ranges: dict[tuple[str, int], list[int]] = field(default_factory=dict)  # (topic, partition) -> [first, last]

    def _extend(self, topic: str, partition: int, first: int, last: int) -> None:
        span = self.ranges.get((topic, partition))
        if span is None:
            self.ranges[(topic, partition)] = [first, last]
        else:
            span[0], span[1] = min(span[0], first), max(span[1], last)

    def add(self, record: Record) -> None:
        self.pending.append(record)
        self._extend(record.topic, record.partition, record.offset, record.offset)

    def add_chunk(self, chunk: ColumnChunk) -> None:
        self.chunks.append(chunk.table)
        self._extend(chunk.topic, chunk.partition, chunk.first_offset, chunk.last_offset)

    async def flush(self) -> int:
        if not self.ranges:
            return 0
        # One insert (one part) for everything pending: its token names every topic-partition range.
        token = ";".join(f"{topic}:{partition}:{first}-{last}"
                         for (topic, partition), (first, last) in sorted(self.ranges.items()))
        if len(token) > MAX_TOKEN_CHARS:  # many partitions: their ranges' digest (still one token per range set)
            token = "ranges-sha256:" + hashlib.sha256(token.encode()).hexdigest()
        tables = list(self.chunks)
        if self.pending:
            tables.append(rows_to_arrow(self.pending))
        table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
        try:
            await self.service.ingest_arrow(table, token=token)
        except BackendUnavailable as exc:
            raise _unavailable(self.name, exc) from exc
        except ServiceError:
            raise
        except Exception as exc:  # noqa: BLE001 - engine/connection failures are retried, not fatal
            raise _unavailable(self.name, exc) from exc
        self.pending.clear()
        self.chunks.clear()
        self.ranges.clear()
        return table.num_rows


@dataclass
class PostgresSink:
    """Registry-relevant events: exposures → assignments; lifecycle events → status transitions.

    The registry keeps at most one fact per (experiment, user): the assignment, first one wins. The
    analyses read exposures from ClickHouse's events, so a streamed exposure costs a PostgreSQL write
    only when it may be that first fact. The writes that remain:

    - per batch with exposures to record: one read of the batch's experiments (status, variants and
      hashing: the per-record refusals below), then for its first-seen (experiment, user) pairs —
      deduplicated within the batch, and minus the pairs this sink stored or found stored before
      (`remembered`, bounded):
      - those whose variant is what get_variant would answer anyway (the hash, or the QA-forced
        variant; running experiments without targeting, not hash_divergent): no assignment row, one
        `streamed_exposures` row per experiment holding them all as arrays (migration 0007), written
        while the experiment row is locked at the revision they were hashed with. They become
        assignment rows, in the transaction that makes the hash stop being the truth;
      - the others: one transaction that COPYs them and inserts them ON CONFLICT DO NOTHING (and
        marks their experiment hash_divergent);
    - none for exposures relayed by the registry's own outbox (`routing_metadata.source ==
      "neonblue.outbox"`): get_variant wrote that assignment in the transaction that queued the event;
    - none for a repeat exposure of a pair remembered (after a restart, or once the memory was full
      and cleared, a repeat costs one no-op row of the COPY again);
    - per lifecycle event, its transition (no write when already applied).

    Integrity kept: every exposure is still checked and refused per record (unknown experiment or
    variant, draft or archived experiment, a user id PostgreSQL cannot store), the first assignment
    still wins (ON CONFLICT DO NOTHING, durable commit before the offsets), and a replayed batch
    writes nothing new.
    """

    service: Any  # mcp_servers.postgres ExperimentService
    name: str = "postgres"
    remember: int = 500_000  # (experiment, user) pairs known stored; the memory is cleared when full
    exposures: list[Record] = field(default_factory=list)
    chunks: list[ExposureChunk] = field(default_factory=list)
    lifecycle: list[Record] = field(default_factory=list)
    rejected: list[tuple[Record, str]] = field(default_factory=list)
    remembered: set[tuple[int, str]] = field(default_factory=set)
    skipped_relayed: int = 0

    def add(self, record: Record) -> None:
        if record.event_type is EventType.EXPOSURE:
            if record.origin == OUTBOX_SOURCE:
                self.skipped_relayed += 1  # the registry's own fact, relayed: nothing to write back
            else:
                self.exposures.append(record)
        else:
            self.lifecycle.append(record)

    def add_chunk(self, chunk: ExposureChunk) -> None:
        self.chunks.append(chunk)
        self.skipped_relayed += chunk.origins.count(OUTBOX_SOURCE)

    def _pending_exposures(self) -> tuple[list[tuple[str, str, str, datetime | None]], list[Any]]:
        """The exposures to record, in offset order per partition (the first assignment wins), and where
        each came from (a Record, or (chunk, index)): those relayed by the outbox and those without a
        variant are left out."""
        rows: list[tuple[str, str, str, datetime | None]] = []
        where: list[Any] = []
        for chunk in self.chunks:
            if OUTBOX_SOURCE not in chunk.origins and all(row[2] for row in chunk.rows):
                rows.extend(chunk.rows)
                where.extend((chunk, index) for index in range(len(chunk.rows)))
                continue
            for index, (row, origin) in enumerate(zip(chunk.rows, chunk.origins, strict=True)):
                if origin != OUTBOX_SOURCE and row[2]:
                    rows.append(row)
                    where.append((chunk, index))
        if self.exposures:
            for r in self.exposures:
                if r.variant:
                    rows.append((r.experiment_id, r.user_id, r.variant, r.timestamp))
                    where.append(r)
            if self.chunks:  # both paths: back to offset order within each partition
                order = sorted(range(len(rows)), key=lambda i: _coordinates(where[i]))
                rows, where = [rows[i] for i in order], [where[i] for i in order]
        return rows, where

    async def flush(self) -> int:
        written = 0
        try:
            if self.exposures or self.chunks:
                rows, where = self._pending_exposures()
                if len(self.remembered) >= self.remember:
                    self.remembered.clear()
                # The events were validated against the event schema already: plain rows, no models.
                outcome = await self.service.record_exposure_rows(rows, self.remembered, keep_agreeing=True)
                for index, reason in outcome.rejected:
                    origin = where[index]
                    self.rejected.append((origin if isinstance(origin, Record) else origin[0].record(origin[1]), reason))
                written += outcome.recorded
                self.exposures.clear()
                self.chunks.clear()
            for record in self.lifecycle:
                await self._apply_lifecycle(record.event)
                written += 1
            self.lifecycle.clear()
        except (ServiceError, Conflict) as exc:
            if isinstance(exc, BackendUnavailable):
                raise _unavailable(self.name, exc) from exc
            raise
        except Exception as exc:  # noqa: BLE001 - connection failures are retried
            raise _unavailable(self.name, exc) from exc
        return written

    async def _apply_lifecycle(self, event: Event) -> None:
        key = event.experiment_id
        current = await self.service.get_experiment(key)
        target = {
            EventType.EXPERIMENT_STARTED: "running",
            EventType.EXPERIMENT_STOPPED: "stopped",
            EventType.EXPERIMENT_CONCLUDED: "stopped",
        }.get(event.event_type)
        if target is None or current.status == target or current.status in ("concluded", "archived"):
            return  # created events are informational; replays of applied transitions are no-ops
        if target == "running" and current.status == "draft":
            await self.service.start_experiment(key, actor="stream", reason=f"event {event.event_id}")
        elif target == "stopped" and current.status == "running":
            winner = event.properties.get("winner") if event.properties else None
            await self.service.stop_experiment(key, winner=winner if isinstance(winner, str) else None,
                                               actor="stream", reason=f"event {event.event_id}")


def _coordinates(origin: Any) -> tuple[str, int, int]:
    """(topic, partition, offset) of a pending exposure's origin (a Record, or (ExposureChunk, index))."""
    if isinstance(origin, Record):
        return origin.topic, origin.partition, origin.offset
    chunk, index = origin
    return chunk.topic, chunk.partition, chunk.sources[index][1]


@dataclass
class ChromaSink:
    """Journeys and concluded experiments become searchable memory (upserts, stable ids)."""

    service: Any  # mcp_servers.chroma service
    describe_experiment: Any = None  # async (key) -> experiment record for store_experiment_context
    name: str = "chromadb"
    pending: list[Record] = field(default_factory=list)

    def add(self, record: Record) -> None:
        self.pending.append(record)

    async def flush(self) -> int:
        written = 0
        try:
            for record in self.pending:
                if record.event_type is EventType.JOURNEY_COMPLETED:
                    await self.service.store_user_journey(journey_from_event(record.event))
                    written += 1
                elif record.event_type is EventType.EXPERIMENT_CONCLUDED and self.describe_experiment is not None:
                    context = await self.describe_experiment(record.experiment_id)
                    if context is not None:
                        await self.service.store_experiment_context(context)
                        written += 1
        except ServiceError as exc:
            if isinstance(exc, BackendUnavailable):
                raise _unavailable(self.name, exc) from exc
            raise
        except Exception as exc:  # noqa: BLE001
            raise _unavailable(self.name, exc) from exc
        self.pending.clear()
        return written


def journey_from_event(event: Event) -> dict[str, Any]:
    """A journey_completed event → the chroma server's journey record."""
    props = event.properties or {}
    steps = [s for s in str(props.get("steps", "")).split(">") if s.strip()]
    return {
        "journey_id": event.event_id,
        "user_id": event.user_id,
        "steps": [s.strip() for s in steps],
        "device_type": event.segment.device if event.segment else None,
        "session_minutes": props.get("session_minutes"),
        "conversion_outcome": props.get("outcome"),
        "experiment_key": event.experiment_id,
        "variant": event.variant,
    }
