"""The processor's fetch (stream_processor/fetching.py) on the real tansu broker: the same records as
aiokafka's getmany, in the same order, and the consumer's positions move the same way."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka_topics import create_topics  # type: ignore[import-not-found]

from mcp_router.runtime.embedded import EmbeddedKafka
from stream_processor.fetching import fetch_values, supports_fast_fetch


async def _read_all(consumer: AIOKafkaConsumer, total: int, fast: bool | None) -> dict[int, list[tuple[int, bytes | None]]]:
    """Every record of the topic as (offset, value) per partition: via fetch_values (fast or not), or getmany."""
    out: dict[int, list[tuple[int, bytes | None]]] = {}
    seen = 0
    while seen < total:
        if fast is None:
            fetched = {tp: [(m.offset, m.value) for m in messages]
                       for tp, messages in (await consumer.getmany(timeout_ms=500, max_records=37)).items()}
        else:
            fetched = {tp: list(zip(part.offsets, part.values, strict=True))
                       for tp, part in (await fetch_values(consumer, timeout_ms=500, max_records=37, fast=fast)).items()}
        for tp, records in fetched.items():
            out.setdefault(tp.partition, []).extend(records)
            seen += len(records)
            # the position is the next offset after what was returned, as with getmany
            assert await consumer.position(tp) == records[-1][0] + 1
    return out


async def test_fetch_values_returns_what_getmany_returns(kafka_broker: EmbeddedKafka, kafka_topic: str) -> None:
    topic = f"{kafka_topic}.fetch"
    await create_topics(kafka_broker.bootstrap, [topic], partitions=3)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap, linger_ms=20)
    await producer.start()
    try:
        sends = [await producer.send(topic, key=f"k{i % 17}".encode(), value=None if i % 97 == 0 else f"v{i}".encode())
                 for i in range(2_000)]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()

    results = {}
    for name, fast in (("getmany", None), ("fetch_values", True), ("fetch_values via getmany", False)):
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_broker.bootstrap, group_id=f"{kafka_topic}-{name}",
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        try:
            assert supports_fast_fetch(consumer)
            results[name] = await _read_all(consumer, 2_000, fast)
        finally:
            await consumer.stop()
    assert sum(len(v) for v in results["getmany"].values()) == 2_000
    assert results["fetch_values"] == results["getmany"] == results["fetch_values via getmany"]


async def test_a_consumer_with_a_deserializer_is_served_by_getmany(kafka_broker: EmbeddedKafka, kafka_topic: str) -> None:
    topic = f"{kafka_topic}.decoded"
    await create_topics(kafka_broker.bootstrap, [topic], partitions=1)
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_broker.bootstrap, group_id=f"{kafka_topic}-decoded",
                                value_deserializer=bytes.decode)
    await consumer.start()
    try:
        assert not supports_fast_fetch(consumer)
    finally:
        await consumer.stop()
