"""The outbox relay: the registry's facts (exposures get_variant served, results record_result stored)
carried from PostgreSQL's `event_outbox` to Kafka, where the stream processor stores them in the
event store like any SDK event (issue 18: one event truth).

The loop, per batch:
  1. claim up to `batch_size` unsent rows, oldest first (`FOR UPDATE SKIP LOCKED` under a lease, so
     several relays share the work and no transaction stays open while Kafka is slow);
  2. produce each as event-schema JSON (`schemas/event.schema.json`): exposures to
     `experiments_events`, metric events to `experiment_metrics`, keyed by user id;
  3. wait for the broker's acknowledgements (acks=all);
  4. mark the acknowledged rows sent; give back the others at once.

Delivery is at-least-once with deterministic event ids: a relay that dies between producing and
marking sent leaves its rows leased until the lease ends, then any relay sends them again, and the
event store (ReplacingMergeTree on event_id, read with FINAL) counts each event once. Nothing is ever
deleted unsent: while Kafka (or PostgreSQL) is down the rows wait and the relay retries with
exponential backoff; the stream processor holds its offsets while ClickHouse is down. Sent rows
are pruned after `retention_seconds`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from mcp_servers.postgres.store import outbox_backlog

log = logging.getLogger(__name__)

# The event type of an outbox row -> the Kafka topic it goes to (before any prefix of a deployment).
DEFAULT_TOPICS = {"exposure": "experiments_events", "metric": "experiment_metrics"}
SOURCE = "neonblue.outbox"  # routing_metadata.source of every relayed event: where the event store got it


def outbox_event(row: Mapping[str, Any]) -> dict[str, Any]:
    """An outbox row as the event schema's JSON object (`schemas.events.Event`)."""
    event: dict[str, Any] = {
        "event_id": row["event_id"],
        "event_type": row["event_type"],
        "timestamp": row["occurred_at"],
        "user_id": row["user_id"],
        "experiment_id": row["experiment_key"],
        "variant": row["variant_key"],
        "routing_metadata": {"source": SOURCE},
    }
    if row["metric"] is not None:
        event["metric"] = row["metric"]
        event["value"] = row["value"]
    return event


def encode_event(row: Mapping[str, Any]) -> bytes:
    return orjson.dumps(outbox_event(row), option=orjson.OPT_UTC_Z)


async def read_backlog(db: Any) -> dict[str, Any]:
    """What waits in the outbox: `unsent` rows, `oldest_age_s` of the oldest (None when empty) and
    the last error a relay gave back with it. `db`: the PostgreSQL store, or any asyncpg connection or
    pool to the registry's database (`neonblue status` reads it without opening a store)."""
    row = await (db.outbox_backlog() if hasattr(db, "outbox_backlog") else outbox_backlog(db))
    oldest = row["oldest"]
    age = None if oldest is None else round(max(0.0, (datetime.now(UTC) - oldest).total_seconds()), 3)
    return {"unsent": int(row["unsent"]), "oldest_age_s": age, "last_error": row["last_error"]}


class RelayUnavailable(Exception):
    """Kafka (or PostgreSQL) refused a batch; the rows were given back and wait for the next try."""


@dataclass
class RelayStats:
    relayed: int = 0
    batches: int = 0
    retries: int = 0
    pruned: int = 0
    last_error: str | None = None
    last_sent: float | None = None  # time.time() of the last acknowledged batch

    def snapshot(self) -> dict[str, Any]:
        return {"relayed": self.relayed, "batches": self.batches, "retries": self.retries, "pruned": self.pruned,
                "last_error": self.last_error,
                "last_sent_s_ago": None if self.last_sent is None else round(time.time() - self.last_sent, 3)}


@dataclass
class OutboxRelay:
    """Relays `event_outbox` rows to Kafka. `store`: the PostgreSQL store (`mcp_servers.postgres.PostgresStore`:
    claim_outbox, mark_outbox_sent, release_outbox, outbox_backlog, prune_outbox)."""

    store: Any
    bootstrap: str
    topics: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_TOPICS))
    batch_size: int = 1000
    lease_seconds: float = 30.0  # longer than a batch takes to produce; a dead relay's rows wait this long
    poll_interval: float = 0.2  # an idle relay looks for new rows this often
    min_backoff: float = 0.2
    max_backoff: float = 30.0
    send_timeout: float = 20.0  # a batch not acknowledged by then is given back and retried
    retention_seconds: float = 86_400.0
    prune_interval: float = 300.0
    stats: RelayStats = field(default_factory=RelayStats)

    def __post_init__(self) -> None:
        self._stop = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._pruned_at = 0.0

    # ----------------------------------------------------------------- lifecycle
    def stop(self) -> None:
        """Finish the batch in flight (its rows are marked sent or given back), then return from run()."""
        self._stop.set()

    async def run(self) -> None:
        """Relay until stop(): a full batch is followed at once by the next, an empty one by a short wait,
        a failure by exponential backoff (the rows stay in the outbox)."""
        delay = self.min_backoff
        try:
            while not self._stop.is_set():
                try:
                    sent = await self.relay_once()
                    await self._prune_now_and_then()
                except Exception as exc:  # noqa: BLE001 - every failure is retried; the rows wait in the outbox
                    self.stats.retries += 1
                    self.stats.last_error = f"{type(exc).__name__}: {exc}"
                    log.warning("outbox relay: %s; retrying in %.1fs (nothing is lost: the rows wait in the outbox)",
                                self.stats.last_error, delay)
                    await self._close_producer()  # a fresh connection for the next try
                    await self._sleep(delay)
                    delay = min(self.max_backoff, delay * 2)
                    continue
                delay = self.min_backoff
                if sent < self.batch_size:
                    await self._sleep(self.poll_interval)
        finally:
            await self._close_producer()

    async def drain(self) -> int:
        """Relay until no unsent row is left (rows another relay holds count as left: this waits for their
        lease); returns how many this call sent. Bound it with `asyncio.timeout` (tests, tools)."""
        sent = 0
        while True:
            sent += await self.relay_once()
            if (await read_backlog(self.store))["unsent"] == 0:
                return sent
            await asyncio.sleep(self.poll_interval)

    async def backlog(self) -> dict[str, Any]:
        """The outbox's backlog (unsent, oldest_age_s, last_error) and this relay's figures."""
        return {**await read_backlog(self.store), "relay": self.stats.snapshot()}

    # ------------------------------------------------------------------- a batch
    async def relay_once(self) -> int:
        """Claim, produce, wait for the acks, mark sent. Returns the rows sent; raises RelayUnavailable
        (after giving the rows back) when the broker did not acknowledge all of them."""
        producer = await self._ensure_producer()  # before claiming: a broker that is down leases nothing
        rows = await self.store.claim_outbox(self.batch_size, self.lease_seconds)
        if not rows:
            return 0
        acked, failed, error = await self._produce(producer, rows)
        if acked:
            await self.store.mark_outbox_sent(acked)
            self.stats.relayed += len(acked)
            self.stats.batches += 1
            self.stats.last_sent = time.time()
        if failed:
            await self.store.release_outbox(failed, error or "not acknowledged")
            raise RelayUnavailable(f"{len(failed)} of {len(rows)} outbox events not acknowledged by Kafka: {error}")
        return len(acked)

    async def _produce(self, producer: AIOKafkaProducer, rows: Sequence[Mapping[str, Any]]
                       ) -> tuple[list[int], list[int], str | None]:
        """(acknowledged ids, failed ids, first error). Sends every row, then waits for every ack."""
        pending: list[tuple[int, Any]] = []
        error: str | None = None

        async def send_all() -> None:
            for row in rows:
                topic = self.topics.get(row["event_type"], DEFAULT_TOPICS[row["event_type"]])
                future = await producer.send(topic, value=encode_event(row), key=row["user_id"].encode())
                pending.append((row["id"], future))

        try:
            await asyncio.wait_for(send_all(), self.send_timeout)
        except Exception as exc:  # noqa: BLE001 - the rows not yet handed to the producer are retried
            error = f"{type(exc).__name__}: {exc}"
        acked: list[int] = []
        handed = {row_id for row_id, _ in pending}
        failed = [row["id"] for row in rows if row["id"] not in handed]
        if pending:
            try:
                outcomes = await asyncio.wait_for(
                    asyncio.gather(*(f for _, f in pending), return_exceptions=True), self.send_timeout)
            except TimeoutError:
                outcomes = [TimeoutError(f"no acknowledgement within {self.send_timeout:g}s")] * len(pending)
            for (row_id, _), outcome in zip(pending, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    failed.append(row_id)
                    error = error or f"{type(outcome).__name__}: {outcome}"
                else:
                    acked.append(row_id)
        return acked, failed, error

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5,
                                        request_timeout_ms=int(self.send_timeout * 1000))
            try:
                await asyncio.wait_for(producer.start(), self.send_timeout)
            except BaseException:
                await _stop_quietly(producer)
                raise
            self._producer = producer
        return self._producer

    async def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await _stop_quietly(producer)

    async def _prune_now_and_then(self) -> None:
        if time.monotonic() - self._pruned_at < self.prune_interval:
            return
        self._pruned_at = time.monotonic()
        self.stats.pruned += await self.store.prune_outbox(self.retention_seconds)

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        except TimeoutError:
            pass


async def _stop_quietly(producer: AIOKafkaProducer) -> None:
    try:
        await asyncio.wait_for(producer.stop(), 10)
    except Exception as exc:  # noqa: BLE001 - a producer that cannot reach its broker may fail to stop cleanly
        log.debug("outbox relay: producer stop failed: %s", exc)
