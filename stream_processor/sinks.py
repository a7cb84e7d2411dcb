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

A `Record` is flat: the event's row (`schemas.event_rows.event_row`) and where it
came from, not the pydantic model. The processor keeps up to two batches of
records alive (one being stored, the next being prepared); flat records are one
object each for the garbage collector instead of eight, which measured as a third
of the processor's CPU time. The few events whose sinks read more than the row
(lifecycle transitions, journeys) keep their parsed model in `record.event`, so
nothing is parsed twice.

A sink whose store is down raises `SinkUnavailable(retry_after)`: the
processor backs off and retries the same batch without committing.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict, namedtuple
from dataclasses import dataclass, field
from typing import Any, Protocol

from schemas.errors import BackendUnavailable, Conflict, ServiceError
from schemas.event_rows import EVENT_SCHEMA, event_row, rows_to_arrow
from schemas.events import Event, EventType
from schemas.fast_events import MODEL_EVENT_TYPES
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


class Sink(Protocol):
    name: str

    def add(self, record: Record) -> None: ...

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
    pending: dict[tuple[str, int], list[Record]] = field(default_factory=lambda: defaultdict(list))

    def add(self, record: Record) -> None:
        self.pending[(record.topic, record.partition)].append(record)

    async def flush(self) -> int:
        if not self.pending:
            return 0
        # One insert (one part) for everything pending: its token names every topic-partition range.
        ranges = sorted(self.pending.items())
        token = ";".join(f"{topic}:{partition}:{records[0].offset}-{records[-1].offset}"
                         for (topic, partition), records in ranges)
        if len(token) > MAX_TOKEN_CHARS:  # many partitions: their ranges' digest (still one token per range set)
            token = "ranges-sha256:" + hashlib.sha256(token.encode()).hexdigest()
        rows = [record for _, records in ranges for record in records]
        try:
            await self.service.ingest_arrow(rows_to_arrow(rows), token=token)
        except BackendUnavailable as exc:
            raise _unavailable(self.name, exc) from exc
        except ServiceError:
            raise
        except Exception as exc:  # noqa: BLE001 - engine/connection failures are retried, not fatal
            raise _unavailable(self.name, exc) from exc
        self.pending.clear()
        return len(rows)


@dataclass
class PostgresSink:
    """Registry-relevant events: exposures → assignments; lifecycle events → status transitions.

    The registry keeps at most one fact per (experiment, user): the assignment, first one wins. The
    analyses read exposures from ClickHouse's events, so a streamed exposure costs a PostgreSQL write
    only when it may be that first fact. The writes that remain:

    - per batch with exposures to record: one read of the batch's experiments (status and variants:
      the per-record refusals below), then one transaction that COPYs the batch's first-seen
      (experiment, user) pairs — deduplicated within the batch, and minus the pairs this sink stored
      or found stored before (`remembered`, bounded) — and inserts them ON CONFLICT DO NOTHING;
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

    async def flush(self) -> int:
        written = 0
        try:
            if self.exposures:
                batch = [r for r in self.exposures if r.variant]
                if len(self.remembered) >= self.remember:
                    self.remembered.clear()
                # The events were validated against the event schema already: plain rows, no models.
                outcome = await self.service.record_exposure_rows(
                    [(r.experiment_id, r.user_id, r.variant, r.timestamp) for r in batch], self.remembered)
                for index, reason in outcome.rejected:
                    self.rejected.append((batch[index], reason))
                written += outcome.recorded
                self.exposures.clear()
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
