"""Stream processor throughput, end to end, beside a bare baseline in the same run.

Both read the same pre-produced topics from the embedded tansu broker:
- baseline: aiokafka consume → chDB insert (raw JSON lines) → commit; no validation, no routing;
- NeonBlue: the real StreamProcessor (orjson/pydantic validation, classification, ClickHouse +
  PostgreSQL sinks, DLQ, commit after flush).
Prints events/s for each and the ratio (goal: ≥150k events/s and ≥0.8× the baseline).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from mcp_router.embedded import EmbeddedKafka, EmbeddedPostgres, free_port
from mcp_servers.clickhouse import open_service as open_clickhouse
from mcp_servers.postgres import open_service as open_postgres
from mcp_servers.postgres.service import assignment_spec
from schemas.settings import Settings
from stream_processor.generator import ArmTruth, TrafficPlan, generate_events, produce
from stream_processor.runner import build_processor

TOPICS = ("experiments_events", "user_events", "analytics_events", "experiment_metrics")


async def baseline(settings: Settings, clickhouse, total: int) -> float:
    consumer = AIOKafkaConsumer(*settings.kafka_topics, bootstrap_servers=settings.effective_kafka_bootstrap,
                                group_id="bench-baseline", enable_auto_commit=False, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)
    await consumer.start()
    done = 0
    started = None
    try:
        while done < total:
            fetched = await consumer.getmany(timeout_ms=200, max_records=20_000)
            if not fetched:
                continue
            started = started or time.perf_counter()
            for tp, records in fetched.items():
                await clickhouse.ingest_json(b"\n".join(r.value for r in records),
                                             token=f"base:{tp.topic}:{tp.partition}:{records[0].offset}")
                done += len(records)
            await consumer.commit({tp: records[-1].offset + 1 for tp, records in fetched.items()})
    finally:
        await consumer.stop()
    return done / (time.perf_counter() - started)


async def pipeline(settings: Settings, services: dict, total: int) -> float:
    processor = build_processor(settings, services)
    task = asyncio.create_task(processor.run())
    while processor.stats.consumed == 0:
        await asyncio.sleep(0.001)
    started = time.perf_counter()
    first = processor.stats.consumed
    while processor.stats.consumed < total:
        if task.done():
            task.result()
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - started
    processor.stop()
    await task
    assert processor.stats.dead_lettered == 0
    return (total - first) / elapsed


async def main(users: int) -> None:
    base = Path(tempfile.mkdtemp(prefix="neonblue-bench-stream-"))
    pg = EmbeddedPostgres(base / "pg", free_port())
    kafka = EmbeddedKafka(free_port(), base / "run", base / "logs")
    pg.start()
    kafka.start()
    try:
        settings = Settings(_env_file=None, neonblue_home=base / "home", database_url=pg.dsn,
                            kafka_bootstrap_servers=kafka.bootstrap, kafka_topics=[f"b.{t}" for t in TOPICS],
                            kafka_group_id="bench-neonblue", clickhouse_database="bench")
        async with open_postgres(settings) as postgres, open_clickhouse(settings) as clickhouse, \
                open_clickhouse(settings, database="bench_baseline") as clickhouse_base:
            experiment = await postgres.create_experiment({
                "key": "bench", "name": "Bench", "type": "ui", "primary_metric": {"name": "conversion"},
                "secondary_metrics": [{"name": "revenue"}],
                "variants": [{"key": "control", "is_control": True, "weight": 0.5}, {"key": "treatment", "weight": 0.5}],
            })
            experiment = await postgres.start_experiment("bench")
            plan = TrafficPlan("bench", [v.key for v in experiment.variants], assignment_spec(experiment),
                               {"control": ArmTruth(0.1, 40), "treatment": ArmTruth(0.11, 40)}, users,
                               datetime.now(UTC) - timedelta(days=14))
            events = [(f"b.{t}", k, v) for t, k, v in generate_events(plan)]
            t0 = time.perf_counter()
            total = await produce(settings.effective_kafka_bootstrap, iter(events), progress=False)
            print(f"produced {total} events in {time.perf_counter() - t0:.1f}s "
                  f"({total / (time.perf_counter() - t0):,.0f} events/s)")
            base_rate = await baseline(settings, clickhouse_base, total)
            print(f"baseline  (consume → chDB insert → commit): {base_rate:,.0f} events/s")
            rate = await pipeline(settings, {"postgres": postgres, "clickhouse": clickhouse}, total)
            print(f"NeonBlue  (validate, classify, ClickHouse+PostgreSQL sinks, commit): {rate:,.0f} events/s")
            print(f"ratio NeonBlue/baseline: {rate / base_rate:.2f} (goal ≥ 0.8; absolute goal ≥ 150k events/s)")
    finally:
        kafka.stop()
        pg.stop()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=100_000, help="simulated users (≈2.4 events each)")
    asyncio.run(main(parser.parse_args().users))
