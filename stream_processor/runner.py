"""Wire the stream processor to the stores' services, however they were opened: the
stack's owner process shares its own, and `neonblue stream` opens them on its own."""

from __future__ import annotations

from typing import Any

from schemas.errors import ConfigError
from schemas.settings import Settings
from stream_processor.optimization import OptimizationLoop, autopilot_via
from stream_processor.processor import StreamProcessor, StreamStats
from stream_processor.sinks import ChromaSink, ClickHouseSink, PostgresSink


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
        loop = OptimizationLoop(autopilot_via(intelligence), min_interval=settings.autopilot_interval)
        options["on_batch"] = loop.on_batch
    options.update(overrides)
    return StreamProcessor(**options)

