"""Sinks: where classified events go. Vocabulary after Quix Streams.

A sink collects records with `add(...)` and writes them with `flush()`. Every
flush is idempotent, so a batch replayed after a crash (at-least-once
delivery) leaves the stores exactly as one delivery would:

- ClickHouse: the validated records as one Arrow batch per topic-partition range
  (the columns of `ingest.EVENT_SCHEMA`, `raw` = the original bytes), inserted
  with a deduplication token built from the (topic, partition, first offset,
  last offset) range, on a table that also deduplicates by event_id — so a
  replay with different fetch boundaries still counts each event once.
- PostgreSQL: exposures become assignments where the first assignment wins;
  lifecycle transitions already applied are no-ops.
- Chroma: upserts keyed by stable ids.

A `Record` is flat: the validated event's columns, not the pydantic model. The
processor keeps up to two batches of records alive (one being stored, the next
being prepared); flat records are one object each for the garbage collector
instead of eight, which measured as a third of the processor's CPU time.
`record.event` re-reads the full model from the raw bytes for the few sinks that
need more (lifecycle transitions, journeys).

A sink whose store is down raises `SinkUnavailable(retry_after)`: the
processor backs off and retries the same batch without committing.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, Protocol

import pyarrow as pa

from schemas.errors import BackendUnavailable, Conflict, ServiceError
from schemas.events import Event, EventType

log = logging.getLogger(__name__)


class SinkUnavailable(Exception):
    """The store cannot take the batch now; retry after `retry_after` seconds, do not commit."""

    def __init__(self, sink: str, reason: str, retry_after: float = 1.0) -> None:
        super().__init__(f"{sink} sink unavailable: {reason}")
        self.retry_after = retry_after


class Record(NamedTuple):
    """One validated event: where it came from, its original bytes and the columns the sinks store.

    `metric` and `value` carry the defaults of `Event.metric_name` / `Event.metric_value`
    (a conversion measures "conversion" = 1, a revenue event "revenue").
    """

    raw: bytes
    topic: str
    partition: int
    offset: int
    event_type: EventType
    event_id: str
    user_id: str
    timestamp: datetime
    experiment_id: str | None
    variant: str | None
    metric: str | None
    value: float | None
    session_id: str | None
    device: str | None
    country: str | None
    source: str | None
    plan: str | None

    @classmethod
    def of(cls, event: Event, raw: bytes, topic: str, partition: int, offset: int) -> Record:
        segment = event.segment
        if segment is None:
            device = country = source = plan = None
        else:
            device, country, source, plan = segment.device, segment.country, segment.source, segment.plan
        return cls(raw, topic, partition, offset, event.event_type, event.event_id, event.user_id, event.timestamp,
                   event.experiment_id, event.variant, event.metric_name, event.metric_value, event.session_id,
                   device, country, source, plan)

    @property
    def event(self) -> Event:
        """The full validated model, re-read from the raw bytes (they passed this validation already)."""
        return Event.model_validate_json(self.raw)


class Sink(Protocol):
    name: str

    def add(self, record: Record) -> None: ...

    async def flush(self) -> int:
        """Write everything added since the last flush; return how many records were written."""
        ...


def _unavailable(name: str, exc: Exception) -> SinkUnavailable:
    return SinkUnavailable(name, f"{type(exc).__name__}: {exc}")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)
_STRING_COLUMNS = ("event_id", "event_type", "experiment_id", "variant", "user_id", "metric", "session_id",
                   "device", "country", "source", "plan")


def records_to_arrow(records: list[Record]) -> pa.Table:
    """Validated records -> a batch in the columns of `mcp_servers.clickhouse.ingest.EVENT_SCHEMA`.

    Missing optional values are nulls (the service stores them as '' / NULL, as the JSON path does);
    timestamps are UTC milliseconds, like ClickHouse's DateTime64(3); `raw` is the original bytes.
    """
    columns: dict[str, Any] = {}
    for name in _STRING_COLUMNS:
        index = Record._fields.index(name)
        columns[name] = pa.array([r[index] for r in records], pa.string())
    columns["value"] = pa.array([r.value for r in records], pa.float64())
    columns["timestamp"] = pa.array([(r.timestamp - _EPOCH) // _MILLISECOND for r in records],
                                    pa.timestamp("ms", tz="UTC"))
    columns["raw"] = pa.array([r.raw for r in records], pa.binary()).cast(pa.string())
    return pa.table(columns)


@dataclass
class ClickHouseSink:
    """Validated events into ClickHouse as Arrow, one idempotent insert per topic-partition range."""

    service: Any  # mcp_servers.clickhouse service (ingest_arrow)
    name: str = "clickhouse"
    pending: dict[tuple[str, int], list[Record]] = field(default_factory=lambda: defaultdict(list))

    def add(self, record: Record) -> None:
        self.pending[(record.topic, record.partition)].append(record)

    async def flush(self) -> int:
        written = 0
        for (topic, partition), records in list(self.pending.items()):
            token = f"{topic}:{partition}:{records[0].offset}-{records[-1].offset}"
            try:
                await self.service.ingest_arrow(records_to_arrow(records), token=token)
            except BackendUnavailable as exc:
                raise _unavailable(self.name, exc) from exc
            except ServiceError:
                raise
            except Exception as exc:  # noqa: BLE001 - engine/connection failures are retried, not fatal
                raise _unavailable(self.name, exc) from exc
            written += len(records)
            del self.pending[(topic, partition)]
        return written


@dataclass
class PostgresSink:
    """Registry-relevant events: exposures → assignments; lifecycle events → status transitions."""

    service: Any  # mcp_servers.postgres ExperimentService
    name: str = "postgres"
    exposures: list[Record] = field(default_factory=list)
    lifecycle: list[Record] = field(default_factory=list)
    rejected: list[tuple[Record, str]] = field(default_factory=list)

    def add(self, record: Record) -> None:
        if record.event_type is EventType.EXPOSURE:
            self.exposures.append(record)
        else:
            self.lifecycle.append(record)

    async def flush(self) -> int:
        written = 0
        try:
            if self.exposures:
                batch = [r for r in self.exposures if r.variant]
                # The events were validated against the event schema already: plain rows, no models.
                outcome = await self.service.record_exposure_rows(
                    [(r.experiment_id, r.user_id, r.variant, r.timestamp) for r in batch])
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
        "device": event.segment.device if event.segment else None,
        "session_minutes": props.get("session_minutes"),
        "outcome": props.get("outcome"),
        "experiment_id": event.experiment_id,
        "variant": event.variant,
    }
