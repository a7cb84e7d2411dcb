"""Each embedded part really works: one round trip through each, on the real engine."""

from __future__ import annotations

import asyncio

import asyncpg
import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from mcp_router.runtime.embedded import EmbeddedKafka


async def test_postgres_round_trip(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        version = await conn.fetchval("SHOW server_version")
        await conn.execute("CREATE TABLE t (id int PRIMARY KEY, note text)")
        await conn.executemany("INSERT INTO t VALUES ($1, $2)", [(1, "a"), (2, "b")])
        rows = await conn.fetch("SELECT id, note FROM t ORDER BY id")
    finally:
        await conn.close()
    assert version.startswith("16")
    assert [tuple(r) for r in rows] == [(1, "a"), (2, "b")]


def test_chdb_mergetree_round_trip(chdb_path, ch_database: str) -> None:
    from chdb import session

    sess = session.Session(str(chdb_path))
    sess.query(f"CREATE DATABASE IF NOT EXISTS {ch_database}")
    sess.query(f"CREATE TABLE {ch_database}.t (id UInt64, v Float64) ENGINE = MergeTree ORDER BY id")
    sess.query(f"INSERT INTO {ch_database}.t SELECT number, number * 0.5 FROM numbers(1000)")
    result = orjson.loads(sess.query(f"SELECT count() AS n, sum(v) AS s FROM {ch_database}.t", "JSON").bytes())
    assert int(result["data"][0]["n"]) == 1000
    assert result["data"][0]["s"] == sum(i * 0.5 for i in range(1000))


def test_chroma_add_and_query(chroma_path) -> None:
    import chromadb

    client = chromadb.PersistentClient(path=str(chroma_path))
    coll = client.create_collection("round_trip", configuration={"hnsw": {"space": "cosine"}},
                                    embedding_function=None)
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(20, 8))
    coll.add(ids=[f"d{i}" for i in range(20)], embeddings=vectors.tolist(), documents=[f"doc {i}" for i in range(20)])
    hit = coll.query(query_embeddings=[vectors[13].tolist()], n_results=3)
    assert hit["ids"][0][0] == "d13"
    assert coll.count() == 20


async def test_kafka_produce_and_consume_in_a_group(kafka_broker: EmbeddedKafka, kafka_topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    await producer.start()
    try:
        for i in range(50):
            await producer.send(kafka_topic, key=f"u{i % 5}".encode(), value=orjson.dumps({"i": i}))
        await producer.flush()
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(kafka_topic, bootstrap_servers=kafka_broker.bootstrap, group_id=f"g-{kafka_topic}",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    seen: list[int] = []
    try:
        async with asyncio.timeout(30):
            while len(seen) < 50:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    seen.extend(orjson.loads(r.value)["i"] for r in records)
        await consumer.commit()
        committed = {tp: await consumer.committed(tp) for tp in consumer.assignment()}
    finally:
        await consumer.stop()
    assert sorted(seen) == list(range(50))
    assert sum(committed.values()) == 50
