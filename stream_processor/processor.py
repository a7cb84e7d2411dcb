"""The stream processor: one member of a Kafka consumer group.

For every fetched batch:
  1. decode and validate each record against the event schema (msgspec, `schemas.fast_events`;
     pydantic's `Event` decides what the fast path declines, so the verdicts are the model's);
  2. classify it by the shared rules (schemas.routing) and hand it to the sinks of its
     target servers (ClickHouse, PostgreSQL, Chroma);
  3. send what cannot be used to the dead-letter topic with the original bytes,
     its coordinates and the reason (bad JSON, wrong types, unknown experiment,
     oversized) — one bad record never blocks its partition;
  4. flush every sink, then — only then — commit the offsets (checkpoint).

Delivery is at-least-once and every sink is idempotent, so the stores end up
exactly-once. A sink that is down makes the processor retry the same batch
with backoff, without committing. Scale-out is more members in the group.

Fetching, preparing (steps 1-3's CPU) and storing run as three tasks with up to `max_in_flight`
batches between the fetch and the commit, so the broker's round trips, the parsing and the stores'
writes overlap; batches are still stored one at a time in fetch order and committed in order.

Throughput (bench/bench_stream.py): the box's two cores are shared by this loop, chDB's threads, the
PostgreSQL server and the broker, so what counts is the CPU per event. Hence: records are fetched as
values and offsets straight from the record batches (`stream_processor.fetching`, no aiokafka object per
message); a chunk of them is decoded and validated in one call (`schemas.fast_events.decode_batch`) into
columns, and the sinks get those in bulk (an Arrow table for ClickHouse, plain exposure rows for
PostgreSQL), so no object per event outlives its chunk and the garbage collector has almost nothing to
walk; only what pydantic decides becomes a `Record`. The loop still runs between chunks, with the
collector paused inside one and the startup heap frozen while the processor runs (full collections
otherwise re-walk every module and client).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import compress
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError
from pydantic import ValidationError

from schemas.events import MAX_EVENT_BYTES, Event, EventType
from schemas.fast_events import FastColumns, decode_batch, decode_record
from schemas.routing import classify_event
from stream_processor.fetching import Fetched, fetch_values, supports_fast_fetch
from stream_processor.sinks import ColumnChunk, ExposureChunk, Record, Sink, SinkUnavailable

log = logging.getLogger(__name__)


@dataclass
class StreamStats:
    """Figures for router_status and `neonblue stream --stats`."""

    consumed: int = 0
    stored: int = 0
    dead_lettered: int = 0
    batches: int = 0
    retries: int = 0
    started: float = field(default_factory=time.monotonic)
    batch_ms: deque[float] = field(default_factory=lambda: deque(maxlen=512))
    lag: dict[str, int] = field(default_factory=dict)
    recent: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=64))

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        window = [(t, n) for t, n in self.recent if now - t <= 10]
        rate = sum(n for _, n in window) / max(1e-9, now - window[0][0]) if len(window) > 1 else 0.0
        batch = sorted(self.batch_ms)
        return {
            "consumed": self.consumed,
            "stored": self.stored,
            "dead_lettered": self.dead_lettered,
            "batches": self.batches,
            "retries": self.retries,
            "events_per_s_10s": round(rate, 1),
            "batch_ms_p50": round(batch[len(batch) // 2], 2) if batch else None,
            "batch_ms_p99": round(batch[int(len(batch) * 0.99)], 2) if batch else None,
            "lag": dict(self.lag),
        }


@dataclass
class _Batch:
    """One fetched batch, parsed and routed, waiting to be stored and committed.

    Most events are kept as columns (Arrow tables, plain rows), a few as records; not the fetched
    messages nor the pydantic models: the garbage collector walks whatever stays alive while the
    batch is stored, and columns are a handful of objects per chunk instead of one or more per event.
    """

    offsets: dict[TopicPartition, int]  # the next offset per partition: what the commit checkpoints
    size: int
    started: float
    records: list[Record] = field(default_factory=list)  # the events that took the record path (few)
    dead: list[DeadLetter] = field(default_factory=list)
    routed: dict[str, list[Record]] = field(default_factory=dict)  # sink -> its records
    chunks: dict[str, list[Any]] = field(default_factory=dict)  # sink -> its bulk parts (ColumnChunk, ExposureChunk)
    stored: int = 0  # valid events, whichever path they took
    touched: set[tuple[str, str]] = field(default_factory=set)  # (topic, experiment key) of the valid events
    next_acks: list[asyncio.Future] | None = None  # the sinks' acknowledgements of the batch fetched after it


@dataclass(frozen=True)
class DeadLetter:
    raw: bytes
    topic: str
    partition: int
    offset: int
    reason: str


KnownExperiments = Callable[[], Awaitable[set[str]]]
# gen1 collections per full one while the processor runs (CPython's default: 10): full collections walk
# the batches in flight for nothing (flat records, no cycles). A larger young threshold (20,000 instead of
# 700) was tried and cost more in the 1M-event bench (gen0+gen1 3.5 s instead of 2.0 s).
FULL_GC_EVERY = 100


class StreamProcessor:
    def __init__(
        self,
        *,
        bootstrap: str,
        topics: Iterable[str],
        group_id: str,
        sinks: dict[str, Sink],
        dlq_topic: str = "neonblue.dlq",
        known_experiments: KnownExperiments | None = None,
        max_batch: int = 50_000,
        max_in_flight: int = 6,
        flush_wait: float = 0.5,
        prepare_chunk: int = 5_000,
        freeze_startup_heap: bool = True,
        max_event_bytes: int = MAX_EVENT_BYTES,
        stats: StreamStats | None = None,
        on_batch: Callable[[set[tuple[str, str]]], Awaitable[None]] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = list(topics)
        self.group_id = group_id
        self.sinks = sinks
        self.dlq_topic = dlq_topic
        self.known_experiments = known_experiments
        self.max_batch = max_batch
        self.prepare_chunk = prepare_chunk
        self.freeze_startup_heap = freeze_startup_heap
        self.max_event_bytes = max_event_bytes
        self.stats = stats or StreamStats()
        self.on_batch = on_batch
        self.max_in_flight = max_in_flight
        self.flush_wait = flush_wait  # how long a sink with `min_flush_rows` may wait for more batches
        self._stop = asyncio.Event()
        self._idle = asyncio.Event()  # set when no batch is fetched and uncommitted (a rebalance waits for it)
        self._idle.set()
        self._slots = asyncio.Semaphore(max_in_flight)
        self._pending = 0
        self._lanes: dict[str, _SinkLane] = {}
        self._to_commit: dict[TopicPartition, int] = {}  # offsets stored and not committed yet, in order
        self._known: set[str] = set()
        self._known_at = 0.0
        self._routes: dict[tuple[Any, str | None], tuple[str, ...]] = {}  # (event type, priority) -> our sinks
        self._fast_fetch = True
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None

    # ----------------------------------------------------------------- lifecycle
    def stop(self) -> None:
        """Ask the loop to finish the batch in flight, commit and leave the group."""
        self._stop.set()

    async def run(self, *, install_signal_handlers: bool = False) -> None:
        if install_signal_handlers:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
        )
        await self.producer.start()
        await self.consumer.start()
        self.consumer.subscribe(self.topics, listener=_Rebalance(self))
        self._fast_fetch = supports_fast_fetch(self.consumer)
        if not self._fast_fetch:
            log.warning("this aiokafka's fetcher is not the one stream_processor.fetching reads; using getmany")
        frozen = self.freeze_startup_heap and gc.isenabled()
        if frozen:
            # Everything alive now (modules, services, clients) lives as long as the processor: keep it out
            # of full collections, which otherwise walk it every few batches (measured in bench_stream:
            # 0.7-0.9 s of the loop's CPU per 240k events).
            gc.collect()
            gc.freeze()
            # The batches in flight (up to max_in_flight of flat records, no cycles among them) survive
            # the young collections and reach the old generation, whose full collections then walk them
            # again and again for nothing: make full collections rarer while the processor runs.
            thresholds = gc.get_threshold()
            gc.set_threshold(thresholds[0], thresholds[1], max(thresholds[2], FULL_GC_EVERY))
        self._slots = asyncio.Semaphore(self.max_in_flight)
        self._pending = 0
        self._idle.set()
        fetched: asyncio.Queue[dict[TopicPartition, Fetched] | None] = asyncio.Queue()
        prepared: asyncio.Queue[_Batch | None] = asyncio.Queue()
        self._lanes = {name: _SinkLane(self, sink) for name, sink in self.sinks.items()}
        lanes = [asyncio.create_task(lane.run(), name=f"stream-sink-{name}") for name, lane in self._lanes.items()]
        stages = [asyncio.create_task(self._fetch_stage(fetched), name="stream-fetch"),
                  asyncio.create_task(self._prepare_stage(fetched, prepared), name="stream-prepare"),
                  asyncio.create_task(self._store_stage(prepared), name="stream-store")]
        try:
            # The stages end in order once stop() is called: the fetcher first, then each stage after the
            # batches it holds (so every batch fetched is stored and committed); the first failure ends all.
            # A sink's lane only ends by failing (or by giving up when stopped while its store is down).
            running = set(stages) | set(lanes)
            while running & set(stages):
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task.cancelled():  # a sink gave up: stopped while its store was down
                        raise asyncio.CancelledError("stopped while a sink was down; the batch will be replayed")
                    if task.exception() is not None:
                        raise task.exception()
        finally:
            for task in stages + lanes:
                if not task.done():
                    task.cancel()
            await asyncio.gather(*stages, *lanes, return_exceptions=True)
            await self.consumer.stop()  # leaves the group; offsets were committed after the last batch stored
            await self.producer.stop()
            if frozen:
                gc.set_threshold(*thresholds)
                gc.unfreeze()

    # ------------------------------------------------------------------ stages
    # fetch -> prepare -> store (one lane per sink) -> commit, each its own task, so the broker's round
    # trips, the CPU of parsing and the stores' writes (chDB in a worker thread, PostgreSQL on its socket)
    # overlap. At most `max_in_flight` batches are fetched and not yet committed; each sink stores the
    # batches in fetch order (the first assignment wins, lifecycle transitions keep their order), and a
    # batch is committed after every sink acknowledged it and after the batch before it, so offsets are
    # committed in order.

    async def _fetch_stage(self, out: asyncio.Queue) -> None:
        try:
            while not self._stop.is_set():
                await self._slots.acquire()
                try:
                    batch = await fetch_values(self.consumer, timeout_ms=200, max_records=self.max_batch,
                                               fast=self._fast_fetch)
                except BaseException:
                    self._slots.release()
                    raise
                if not batch:
                    self._slots.release()
                    await self._update_lag()
                    continue
                self._pending += 1
                self._idle.clear()
                out.put_nowait(batch)
        finally:
            out.put_nowait(None)

    async def _prepare_stage(self, inbox: asyncio.Queue, out: asyncio.Queue) -> None:
        try:
            while (fetched := await inbox.get()) is not None:
                out.put_nowait(await self._prepare(fetched))
        finally:
            out.put_nowait(None)

    async def _store_stage(self, inbox: asyncio.Queue) -> None:
        """Hand each batch to the sinks' lanes and chain its commit after the previous batch's."""
        previous: asyncio.Task[None] | None = None
        last: _Batch | None = None
        while (batch := await inbox.get()) is not None:
            if previous is not None and previous.done() and previous.exception() is not None:
                raise previous.exception()
            acks = [self._lanes[target].submit(batch.routed.get(target, []), batch.chunks.get(target, []))
                    for target in self._lanes if batch.routed.get(target) or batch.chunks.get(target)]
            if last is not None:
                last.next_acks = acks
            last = batch
            previous = asyncio.create_task(self._store_and_commit(batch, acks, previous))
        if previous is not None:
            await previous

    async def wait_idle(self) -> None:
        """Wait until every batch fetched is stored and committed (a rebalance does, before it gives
        partitions away)."""
        await self._idle.wait()

    # ------------------------------------------------------------------- batch
    async def _prepare(self, fetched: dict[TopicPartition, Fetched]) -> _Batch:
        """Parse, validate and classify a fetched batch (no I/O but the known-experiments refresh).

        Consumes `fetched`: each partition's values are dropped once parsed (only columns stay)."""
        batch = _Batch(offsets={tp: part.offsets[-1] + 1 for tp, part in fetched.items()},
                       size=sum(len(part) for part in fetched.values()), started=time.perf_counter())
        known = await self._known_experiment_keys()
        chunk = self.prepare_chunk
        for tp in list(fetched):
            part = fetched.pop(tp)
            for start in range(0, len(part), chunk):
                with _gc_paused():
                    self._route(tp, part.values[start:start + chunk], part.offsets[start:start + chunk], known, batch)
                # Let the loop run between chunks: the consumer's fetcher sends the next fetch requests and
                # the batch being stored moves on (its awaits resume only when the loop gets a turn).
                await asyncio.sleep(0)
        return batch

    def _route(self, tp: TopicPartition, values: list[bytes | None], offsets: list[int], known: set[str] | None,
               batch: _Batch) -> None:
        """Validate and classify one partition's messages into the batch: columns for the bulk of them
        (`schemas.fast_events.decode_batch`), a `Record` for the few the fast path declines or whose sinks
        read more than the row, dead letters for the invalid ones."""
        topic, partition = tp.topic, tp.partition
        dead: list[DeadLetter] = []
        limit = self.max_event_bytes
        try:
            screened = max(map(len, values), default=0) <= limit
        except TypeError:  # a record without a value
            screened = False
        if not screened:  # empty or oversized records are dead letters before any parsing
            keep = [value is not None and len(value) <= limit for value in values]
            for value, offset, ok in zip(values, offsets, keep, strict=True):
                if not ok:
                    dead.append(DeadLetter(value or b"", topic, partition, offset, self._screen(value)))
            values, offsets = list(compress(values, keep)), list(compress(offsets, keep))
        fast = decode_batch(values)
        for position in fast.declined:  # pydantic decides (and the model is kept for the sinks that read it)
            record, reason = self._parse(values[position], known, topic, partition, offsets[position])
            if record is None:
                dead.append(DeadLetter(values[position], topic, partition, offsets[position], reason))
            else:
                self._add_record(record, batch)
        if known is not None and fast.experiment_id:
            unknown = [e is not None and e not in known for e in fast.experiment_id]
            if any(unknown):
                for index in compress(range(len(unknown)), unknown):
                    dead.append(DeadLetter(fast.raw[index], topic, partition, offsets[fast.position[index]],
                                           f"unknown experiment {fast.experiment_id[index]!r}"))
                fast.keep([not u for u in unknown])
        if dead:
            dead.sort(key=lambda d: d.offset)
            batch.dead.extend(dead)
        if len(fast):
            self._add_columns(topic, partition, offsets, fast, batch)

    def _screen(self, raw: bytes | None) -> str:
        return "empty record (no value)" if raw is None else f"oversized: {len(raw)} bytes > {self.max_event_bytes}"

    def _targets(self, kind: Any, priority: str | None) -> tuple[str, ...]:
        """Our sinks for an event of this type and priority hint (the shared rules of `schemas.routing`)."""
        targets = self._routes.get((kind, priority))
        if targets is None:
            targets = self._routes[(kind, priority)] = tuple(
                t for t in classify_event(_Routed(kind, priority)).targets if t in self.sinks)
        return targets

    def _add_record(self, record: Record, batch: _Batch) -> None:
        batch.records.append(record)
        batch.stored += 1
        if record.experiment_id:
            batch.touched.add((record.topic, record.experiment_id))
        routed = batch.routed
        for target in self._targets(record.event_type, record.priority):
            sink_records = routed.get(target)
            if sink_records is None:
                sink_records = routed[target] = []
            sink_records.append(record)

    def _add_columns(self, topic: str, partition: int, offsets: list[int], fast: FastColumns, batch: _Batch) -> None:
        """Hand a partition's fast-path events to the sinks in bulk: ClickHouse gets them as one Arrow table,
        PostgreSQL the exposures as plain rows; an event some other sink takes (no such rule today) becomes
        a `Record` for that sink."""
        routes = {key: self._targets(*key) for key in set(zip(fast.event_type, fast.priority, strict=False))}
        batch.stored += len(fast)
        batch.touched.update((topic, key) for key in set(fast.experiment_id) if key)
        others = {key: tuple(t for t in targets if t != "clickhouse") for key, targets in routes.items()}
        exposures: list[int] = []
        if any(others.values()):
            for index, key in enumerate(zip(fast.event_type, fast.priority, strict=False)):
                for target in others[key]:
                    if target == "postgres" and key[0] is EventType.EXPOSURE:
                        exposures.append(index)
                    else:
                        record = Record._make((*fast.row(index), topic, partition, offsets[fast.position[index]], None))
                        batch.routed.setdefault(target, []).append(record)
        if exposures:
            batch.chunks.setdefault("postgres", []).append(ExposureChunk.of(fast, exposures, topic, partition, offsets))
        if not all("clickhouse" in targets for targets in routes.values()):
            fast.keep(["clickhouse" in routes[key] for key in zip(fast.event_type, fast.priority, strict=False)])
        if len(fast) and "clickhouse" in self.sinks:
            batch.chunks.setdefault("clickhouse", []).append(ColumnChunk.of(fast, topic, partition, offsets))

    async def _store_and_commit(self, batch: _Batch, acks: list[asyncio.Future],
                                previous: asyncio.Task[None] | None) -> None:
        """Wait until every sink stored the batch and the previous batch committed, then dead-letter what
        the sinks refused and commit the batch's offsets (so offsets are committed in fetch order)."""
        try:
            refused = await asyncio.gather(*acks)
            if previous is not None:
                await previous
            await self._commit(batch, [dead for lane in refused for dead in lane])
        finally:
            self._pending -= 1
            if self._pending == 0:
                self._idle.set()
            self._slots.release()

    async def _commit(self, batch: _Batch, refused: list[DeadLetter]) -> None:
        await self._dead_letter(batch.dead + refused)
        if self.on_batch is not None and batch.touched:
            await self.on_batch(batch.touched)
        # checkpoint: only after every sink and the DLQ acknowledged, and only for partitions still ours
        # (a batch fetched before a rebalance took its partition is stored, and the new owner's replay of
        # it is harmless: every sink is idempotent)
        self._to_commit.update(batch.offsets)
        following = batch.next_acks
        if following is not None and all(ack.done() for ack in following):
            # The next batch is stored already: its commit (a broker round trip) carries these offsets too.
            offsets = {}
        else:
            assigned = self.consumer.assignment()
            offsets = {tp: offset for tp, offset in self._to_commit.items() if tp in assigned}
            self._to_commit.clear()
        if offsets:
            try:
                await self.consumer.commit(offsets)
            except CommitFailedError as exc:
                # A rebalance took the partitions: the new owner replays from the last commit and the
                # idempotent sinks make that replay harmless.
                log.warning("commit refused during a rebalance (%s); the batch will be replayed idempotently", exc)
        n = batch.size
        self.stats.consumed += n
        self.stats.stored += batch.stored
        self.stats.batches += 1
        self.stats.recent.append((time.monotonic(), n))
        self.stats.batch_ms.append((time.perf_counter() - batch.started) * 1000)
        await self._update_lag()

    def _parse(self, raw: bytes | None, known: set[str] | None, topic: str, partition: int,
               offset: int) -> tuple[Record | None, str]:
        """The record of a valid event, or None and why it goes to the dead-letter topic.

        The fast decoder (msgspec, `schemas.fast_events`) takes the common events; whatever it declines
        (an invalid event, one whose sinks read the model, a form it cannot vouch for) is decided by the
        pydantic `Event`, so acceptance and the dead-letter text are the model's."""
        if raw is None or len(raw) > self.max_event_bytes:
            return None, self._screen(raw)
        record = decode_record(raw, Record, topic, partition, offset)
        if record is None:
            try:
                event = Event.model_validate_json(raw)
            except ValidationError as exc:
                err = exc.errors()[0]
                if err["type"] == "json_invalid":
                    return None, f"bad JSON: {err['msg']}"
                where = ".".join(str(p) for p in err["loc"]) or "event"
                return None, f"invalid event: {where}: {err['msg']}"
            record = Record.of(event, raw, topic, partition, offset)
        if known is not None and record.experiment_id is not None and record.experiment_id not in known:
            return None, f"unknown experiment {record.experiment_id!r}"
        return record, ""

    async def _known_experiment_keys(self) -> set[str] | None:
        if self.known_experiments is None:
            return None
        if time.monotonic() - self._known_at > 2.0:  # refresh often enough for new experiments to flow
            self._known = await self.known_experiments()
            self._known_at = time.monotonic()
        return self._known

    async def _flush_one(self, sink: Sink) -> None:
        """Flush one sink; while its store is down, back off and retry (offsets stay uncommitted)."""
        delay = 0.2
        while True:
            try:
                await sink.flush()
                return
            except SinkUnavailable as exc:
                self.stats.retries += 1
                wait = min(30.0, max(delay, exc.retry_after))
                log.warning("%s; retrying in %.1fs (offsets not committed)", exc, wait)
                try:
                    await asyncio.wait_for(self._stop.wait(), timeout=wait)
                except TimeoutError:
                    pass
                if self._stop.is_set():
                    raise asyncio.CancelledError("stopped while a sink was down; the batch will be replayed") from exc
                delay = min(30.0, delay * 2)

    async def _dead_letter(self, dead: list[DeadLetter]) -> None:
        if not dead:
            return
        futures = []
        for d in dead:
            headers = [("reason", d.reason.encode()), ("source_topic", d.topic.encode()),
                       ("source_partition", str(d.partition).encode()), ("source_offset", str(d.offset).encode())]
            futures.append(await self.producer.send(self.dlq_topic, value=d.raw, headers=headers,
                                                    key=f"{d.topic}:{d.partition}:{d.offset}".encode()))
        await asyncio.gather(*futures)  # acknowledged before the offsets are committed
        self.stats.dead_lettered += len(dead)
        log.info("dead-lettered %d records (first: %s)", len(dead), dead[0].reason)

    async def _update_lag(self) -> None:
        consumer = self.consumer
        if consumer is None:
            return
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None:
                continue
            try:
                position = await consumer.position(tp)
            except Exception:  # noqa: BLE001 - partition revoked meanwhile
                continue
            self.stats.lag[f"{tp.topic}[{tp.partition}]"] = max(0, high - position)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a chunk of messages is parsed (CPU-bound, no awaits inside).

    Parsing allocates and frees objects per event (decoded Structs, row values; a pydantic model for the
    few it decides) and keeps columns; nothing parsed forms cycles, so the collector has nothing to find
    there, but left on it runs every 700 allocations and promotes what is alive to older generations
    early. It runs as usual between chunks.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@dataclass(frozen=True)
class _Priority:
    priority: str | None


class _Routed:
    """What `classify_event` reads of an event (its type and priority hint), for a record's route."""

    __slots__ = ("event_type", "routing_metadata")

    def __init__(self, event_type: Any, priority: str | None) -> None:
        self.event_type = event_type
        self.routing_metadata = _Priority(priority)


class _SinkLane:
    """One sink's own queue and task: it stores the batches handed to it in order, each flush taking
    everything queued meanwhile (fewer, larger writes), and acknowledges each batch with the dead letters
    of the records the sink refused. The sinks work on different batches at once (ClickHouse may store
    the next batch while PostgreSQL finishes this one); a batch commits once every lane acknowledged it."""

    def __init__(self, processor: StreamProcessor, sink: Sink) -> None:
        self.processor = processor
        self.sink = sink
        self.queue: asyncio.Queue[tuple[list[Record], list[Any], asyncio.Future]] = asyncio.Queue()

    def submit(self, records: list[Record], chunks: list[Any]) -> asyncio.Future:
        ack: asyncio.Future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((records, chunks, ack))
        return ack

    async def _gather(self) -> list[tuple[list[Record], list[Any], asyncio.Future]]:
        """The batches of the next flush: everything queued, and for a sink that writes better in large
        blocks (`min_flush_rows`: chDB spends about twice the CPU per row on 20k-row inserts as on 100k-row
        ones, merges included) the batches that arrive within `flush_wait` seconds until it has that many
        rows. It never waits while the processor stops, nor once every in-flight slot is taken (no batch
        can come before one commits)."""
        items = [await self.queue.get()]
        while not self.queue.empty():
            items.append(self.queue.get_nowait())
        target = getattr(self.sink, "min_flush_rows", 0)
        if not target:
            return items
        processor = self.processor
        rows = sum(len(records) + sum(map(len, chunks)) for records, chunks, _ in items)
        deadline = asyncio.get_running_loop().time() + processor.flush_wait
        while rows < target and not processor._stop.is_set() and not processor._slots.locked():
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(min(remaining, 0.05)):  # re-check the slots and the stop now and then
                    item = await self.queue.get()
            except TimeoutError:
                continue
            items.append(item)
            rows += len(item[0]) + sum(map(len, item[1]))
        while not self.queue.empty():
            items.append(self.queue.get_nowait())
        return items

    async def run(self) -> None:
        sink = self.sink
        while True:
            items = await self._gather()
            try:
                for records, chunks, _ in items:
                    for record in records:
                        sink.add(record)
                    for chunk in chunks:
                        sink.add_chunk(chunk)
                await self.processor._flush_one(sink)
            except BaseException as exc:
                for _, _, ack in items:
                    if not ack.done():
                        ack.cancel() if isinstance(exc, asyncio.CancelledError) else ack.set_exception(exc)
                raise
            rejected = getattr(sink, "rejected", None)
            refused = [DeadLetter(r.raw, r.topic, r.partition, r.offset, f"{sink.name}: {why}") for r, why in rejected or ()]
            if rejected:
                rejected.clear()
            # The refusals go with the first batch of this flush: it commits first, after dead-lettering them.
            items[0][2].set_result(refused)
            for _, _, ack in items[1:]:
                ack.set_result([])


REVOKE_WAIT_S = 60.0


class _Rebalance(ConsumerRebalanceListener):
    """Partitions move only between batches: a revoke waits for the batches in flight (which commit)."""

    def __init__(self, processor: StreamProcessor) -> None:
        self.processor = processor

    async def on_partitions_revoked(self, revoked: Any) -> None:
        # Every batch fetched (up to max_in_flight) is stored and committed before the partitions go.
        try:
            async with asyncio.timeout(REVOKE_WAIT_S):
                await self.processor.wait_idle()
        except TimeoutError:
            log.warning("partitions revoked while batches were still being stored; the new owner replays "
                        "them (idempotent sinks)")
        for tp in revoked:
            self.processor.stats.lag.pop(f"{tp.topic}[{tp.partition}]", None)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("assigned partitions: %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))


def dlq_reason(headers: Iterable[tuple[str, bytes]]) -> dict[str, str]:
    """Decode a dead letter's headers (for tests and tooling)."""
    return {k: v.decode() for k, v in headers}


def encode(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event)
