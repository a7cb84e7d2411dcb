"""Wire the stream processor to the stores' services, however they were opened: the
stack's owner process shares its own, and `neonblue stream` opens them on its own.

`build_stream` is what an entry point runs: the processor (Kafka -> stores) and the outbox
relay (the registry's exposures and results -> Kafka), started and stopped together.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Any

from schemas.errors import ConfigError
from schemas.settings import Settings
from stream_processor.optimization import OptimizationLoop, autopilot_via
from stream_processor.outbox import DEFAULT_TOPICS, OutboxRelay
from stream_processor.processor import StreamProcessor, StreamStats
from stream_processor.sinks import ChromaSink, ClickHouseSink, PostgresSink

log = logging.getLogger(__name__)


def experiment_keys_loader(postgres: Any):
    """Known experiment keys from the registry (events for other keys go to the DLQ)."""

    async def load() -> set[str]:
        keys: set[str] = set()
        offset: int | None = 0
        while offset is not None:
            page = await postgres.list_experiments(limit=200, offset=offset)
            keys.update(item.key for item in page.items)
            offset = page.next_offset
        return keys

    return load


def experiment_context_loader(postgres: Any):
    """A concluded experiment's registry record, for the Chroma memory."""

    async def load(key: str) -> dict[str, Any] | None:
        experiment = await postgres.get_experiment(key)
        return experiment.model_dump(mode="json")

    return load


def build_processor(settings: Settings, services: dict[str, Any], stats: StreamStats | None = None,
                    intelligence: Any = None, **overrides: Any) -> StreamProcessor:
    """A processor writing to `services`; with an `intelligence` backend, also the optimization loop."""
    sinks: dict[str, Any] = {}
    if "clickhouse" in services:
        sinks["clickhouse"] = ClickHouseSink(services["clickhouse"])
    if "postgres" in services:
        sinks["postgres"] = PostgresSink(services["postgres"])
    if "chromadb" in services:
        describe = experiment_context_loader(services["postgres"]) if "postgres" in services else None
        sinks["chromadb"] = ChromaSink(services["chromadb"], describe)
    if "clickhouse" not in sinks:
        raise ConfigError("CLICKHOUSE_URL: the stream processor needs the ClickHouse server for events")
    known = experiment_keys_loader(services["postgres"]) if "postgres" in services else None
    options: dict[str, Any] = {
        "bootstrap": settings.effective_kafka_bootstrap,
        "topics": settings.kafka_topics,
        "group_id": settings.kafka_group_id,
        "dlq_topic": settings.kafka_dlq_topic,
        "sinks": sinks,
        "known_experiments": known,
        "stats": stats,
    }
    if intelligence is not None:
        standing = (f"unattended optimization loop (NEONBLUE_AUTOPILOT_UNATTENDED) under the {settings.environment} "
                    "policy" if settings.autopilot_unattended else None)
        loop = OptimizationLoop(autopilot_via(intelligence, standing), min_interval=settings.autopilot_interval)
        options["on_batch"] = loop.on_batch
    options.update(overrides)
    return StreamProcessor(**options)


def outbox_topics(settings: Settings) -> dict[str, str]:
    """The configured topic for each outbox event type: `experiments_events` and `experiment_metrics`,
    or the consumed topics ending in `.experiments_events` / `.experiment_metrics` (a prefixed deployment)."""
    out = {}
    for event_type, name in DEFAULT_TOPICS.items():
        found = [t for t in settings.kafka_topics if t == name or t.endswith("." + name)]
        if not found:
            log.warning("KAFKA_TOPICS has no %r topic: relayed %s events are produced to %r, which this "
                        "stream processor does not consume", name, event_type, name)
        out[event_type] = found[0] if found else name
    return out


def build_outbox_relay(settings: Settings, services: dict[str, Any], **overrides: Any) -> OutboxRelay | None:
    """The relay of the registry's event outbox, when the PostgreSQL service is in this process (None otherwise)."""
    store = getattr(services.get("postgres"), "store", None)
    if store is None or not hasattr(store, "claim_outbox"):
        return None
    options: dict[str, Any] = {"store": store, "bootstrap": settings.effective_kafka_bootstrap,
                               "topics": outbox_topics(settings)}
    options.update(overrides)
    return OutboxRelay(**options)


class StreamWorker:
    """The stream processor and the outbox relay, run and stopped together.

    The relay retries its own failures forever (the rows wait in the outbox). On stop the relay
    stops first (its batch in flight is marked sent or given back), then the processor gets a few
    seconds to consume what the relay produced last before it stops too: with the embedded broker,
    whose log lives in memory, events left unconsumed at shutdown would be gone. If the processor
    stops or fails, the relay is stopped and the processor's outcome is returned or raised.
    """

    def __init__(self, processor: StreamProcessor, relay: OutboxRelay | None, catch_up_seconds: float = 10.0) -> None:
        self.processor = processor
        self.relay = relay
        self.catch_up_seconds = catch_up_seconds
        self._stopping = asyncio.Event()

    @property
    def stats(self) -> StreamStats:
        return self.processor.stats

    def snapshot(self) -> dict[str, Any]:
        """The processor's figures, and the relay's under `outbox_relay` (router_status shows them)."""
        figures = self.processor.stats.snapshot()
        if self.relay is not None:
            figures["outbox_relay"] = self.relay.stats.snapshot()
        return figures

    def stop(self) -> None:
        self._stopping.set()

    async def run(self, *, install_signal_handlers: bool = False) -> None:
        if install_signal_handlers:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        processing = asyncio.create_task(self.processor.run(), name="stream-processor")
        relaying = asyncio.create_task(self.relay.run(), name="outbox-relay") if self.relay is not None else None
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait([t for t in (processing, relaying, stopping) if t is not None],
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if relaying is not None:
                self.relay.stop()
                await asyncio.gather(relaying, return_exceptions=True)
                if not processing.done():
                    await self._catch_up(processing)
            self.processor.stop()
            await asyncio.gather(processing, return_exceptions=True)
        for task in (processing, relaying):  # the processor's failure first, then the relay's
            if task is not None and not task.cancelled() and task.exception() is not None:
                raise task.exception()

    async def _catch_up(self, processing: asyncio.Task) -> None:
        """Let the processor consume what the relay produced last: until its lag is 0 (measured after
        the relay stopped), the processor ends, or `catch_up_seconds` pass."""
        stats = self.processor.stats
        deadline = time.monotonic() + self.catch_up_seconds
        await asyncio.sleep(0.5)  # a fetch or two: the lag then counts the relay's last events
        while time.monotonic() < deadline and not processing.done() and sum(stats.lag.values()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(0.1)  # the lag is a figure the processor updates, not an event to wait on


def build_stream(settings: Settings, services: dict[str, Any], stats: StreamStats | None = None,
                 intelligence: Any = None, relay: bool = True, **overrides: Any) -> StreamWorker:
    """`build_processor` plus, with `relay` and the PostgreSQL service in-process, the outbox relay."""
    processor = build_processor(settings, services, stats, intelligence=intelligence, **overrides)
    return StreamWorker(processor, build_outbox_relay(settings, services) if relay else None)
