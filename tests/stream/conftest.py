from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from mcp_router.runtime.embedded import EmbeddedKafka
from mcp_servers.postgres.service import assignment_spec
from schemas.settings import Settings
from stream_processor.generator import ArmTruth, TrafficPlan


@dataclass
class StreamWorld:
    settings: Settings
    services: dict[str, Any]

    @property
    def clickhouse(self):
        return self.services["clickhouse"]

    async def count_events(self) -> int:
        table = await self.clickhouse.store.query(f"SELECT count() AS n FROM {self.clickhouse.db}.events FINAL", {})
        return int(table.column("n")[0].as_py())


@pytest.fixture
def stream_settings(neonblue_home: Path, pg_dsn: str, ch_database: str, kafka_broker: EmbeddedKafka,
                    kafka_topic: str) -> Settings:
    topics = [f"{kafka_topic}.{name}" for name in ("experiments_events", "user_events", "analytics_events",
                                                     "experiment_metrics")]
    return Settings(_env_file=None, neonblue_home=neonblue_home, database_url=pg_dsn, clickhouse_database=ch_database,
                    kafka_bootstrap_servers=kafka_broker.bootstrap, kafka_topics=topics,
                    kafka_group_id=f"{kafka_topic}-group", kafka_dlq_topic=f"{kafka_topic}.dlq")


@asynccontextmanager
async def open_world(settings: Settings, chroma: bool = False) -> AsyncIterator[StreamWorld]:
    """The real services the processor writes to (opened inside the test's task)."""
    from mcp_servers.registry import SERVERS

    async with AsyncExitStack() as stack:
        services = {name: await stack.enter_async_context(SERVERS[name].open_service(settings))
                    for name in ("postgres", "clickhouse")}
        yield StreamWorld(settings, services)


async def make_experiment(postgres: Any, key: str, weights: tuple[float, float] = (0.5, 0.5)) -> Any:
    experiment = await postgres.create_experiment({
        "key": key, "name": f"Stream test {key}", "type": "ui",
        "primary_metric": {"name": "conversion", "direction": "higher"},
        "secondary_metrics": [{"name": "revenue", "direction": "higher"}],
        "variants": [{"key": "control", "name": "Control", "is_control": True, "weight": weights[0]},
                     {"key": "treatment", "name": "Treatment", "weight": weights[1]}],
    })
    return await postgres.start_experiment(experiment.key)


def plan_for(experiment: Any, users: int, seed: int = 1) -> TrafficPlan:
    return TrafficPlan(
        experiment_key=experiment.key, variant_keys=[v.key for v in experiment.variants],
        spec=assignment_spec(experiment),
        truths={"control": ArmTruth(0.10, 40.0), "treatment": ArmTruth(0.12, 40.0)},
        users=users, start=datetime.now(UTC) - timedelta(days=14), days=14, seed=seed,
    )


def prefixed(settings: Settings) -> Callable[[str], str]:
    prefix = settings.kafka_topics[0].rsplit(".", 1)[0] + "."
    return lambda topic: prefix + topic


async def committed_total(settings: Settings) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.effective_kafka_bootstrap, group_id=settings.kafka_group_id,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        total = 0
        for topic in settings.kafka_topics:
            for partition in consumer.partitions_for_topic(topic) or await _partitions(consumer, topic):
                total += await consumer.committed(TopicPartition(topic, partition)) or 0
        return total
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()  # noqa: SLF001 - metadata for topics we do not subscribe to
    return consumer.partitions_for_topic(topic) or set()


async def read_dlq(settings: Settings, expected: int, timeout: float = 60) -> list[Any]:
    consumer = AIOKafkaConsumer(settings.kafka_dlq_topic, bootstrap_servers=settings.effective_kafka_bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    out: list[Any] = []
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        while len(out) < expected and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                out.extend(records)
    finally:
        await consumer.stop()
    return out
