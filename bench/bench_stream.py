"""Stream processor throughput, end to end, beside the floors and a bare baseline in the same run.

All runs read the same pre-produced topics from the embedded tansu broker, each as its own consumer group:
- floors: aiokafka consume (getmany) → commit only; + orjson parse; + the pydantic `Event` validation;
  + the msgspec fast decoder per event (`schemas.fast_events.decode_event`); then the processor's own
  transport (values read from the record batches, `stream_processor.fetching`) → commit, alone and
  + the columnar `decode_batch` the processor runs;
- baseline: aiokafka consume → chDB insert (raw JSON lines) → commit; no validation, no routing;
- NeonBlue: the real StreamProcessor (msgspec validation with pydantic for what it declines,
  classification, ClickHouse + PostgreSQL sinks, DLQ, commit after every sink acknowledged).
Prints events/s for each and the ratios (goal, issue 21: ≥ 100k events/s sustained on a 1M-event run
and ≥ 1.5× the baseline), with the CPU seconds of this process and of the PostgreSQL server during
each run, the NeonBlue per-stage wall times (fetch = `stream_processor.fetching`; prepare = parse/validate/
classify; <sink> sink = that sink's flushes, each sink in its own lane; dlq+commit = dead letters and the
offsets commit after every sink acknowledged; all of these overlap, so their sum exceeds the wall time)
and the load average (the box is shared): `--events 1000000` for the
1M-event run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from mcp_router.runtime.embedded import EmbeddedKafka, EmbeddedPostgres, free_port
from mcp_servers.clickhouse import open_service as open_clickhouse
from mcp_servers.postgres import open_service as open_postgres
from mcp_servers.postgres.service import assignment_spec
from schemas.events import Event
from schemas.fast_events import decode_batch, decode_event
from schemas.logs import configure_logging
from schemas.settings import Settings
from stream_processor import processor as processing
from stream_processor.fetching import fetch_values
from stream_processor.generator import ArmTruth, TrafficPlan, generate_events, produce
from stream_processor.runner import build_processor

TOPICS = ("experiments_events", "user_events", "analytics_events", "experiment_metrics")
EVENTS_PER_USER = 2.4  # the generator's mean (measured: 120k events for 50k users)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def main_thread_cpu() -> float:
    """CPU seconds of this process's main thread (the event loop: everything that holds the GIL there)."""
    fields = Path(f"/proc/self/task/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def process_cpu(pid: int | None) -> float:
    """CPU seconds of one process (the broker)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def postgres_cpu(data_dir: Path) -> float:
    """CPU seconds of the PostgreSQL server: the postmaster, its finished children and its live backends."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ppid, utime, stime, cutime, cstime = int(fields[1]), *map(int, fields[11:15])
        if int(entry) == pid:
            total += utime + stime + cutime + cstime
        elif ppid == pid:
            total += utime + stime
    return total / CLOCK_TICKS


class GcClock:
    """Time spent in the cyclic garbage collector (all threads), per generation."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.counts = [0, 0, 0]
        self._t = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t = time.perf_counter()
        else:
            self.seconds[info["generation"]] += time.perf_counter() - self._t
            self.counts[info["generation"]] += 1

    def reset(self) -> None:
        self.seconds, self.counts = [0.0, 0.0, 0.0], [0, 0, 0]

    def __str__(self) -> str:
        return ", ".join(f"gen{g} {n}× {s:.2f}s" for g, (n, s) in enumerate(zip(self.counts, self.seconds, strict=True)))


GC = GcClock()


class Meter:
    """Wall and CPU seconds of a run, this process's and PostgreSQL's, with the load average."""

    def __init__(self, pg_dir: Path, broker_pid: int | None) -> None:
        self.pg_dir = pg_dir
        self.broker_pid = broker_pid

    def __enter__(self) -> Meter:
        GC.reset()
        self.wall, self.cpu, self.pg = time.perf_counter(), time.process_time(), postgres_cpu(self.pg_dir)
        self.main = main_thread_cpu()
        self.broker = process_cpu(self.broker_pid)
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu
        self.main = main_thread_cpu() - self.main
        self.broker = process_cpu(self.broker_pid) - self.broker
        self.pg = postgres_cpu(self.pg_dir) - self.pg
        self.load = os.getloadavg()
        self.gc = str(GC)

    def __str__(self) -> str:
        load = " ".join(f"{x:.2f}" for x in self.load)
        return f"wall {self.wall:.1f}s, CPU: this process {self.cpu:.1f}s (main thread {self.main:.1f}s), PostgreSQL {self.pg:.1f}s, broker {self.broker:.1f}s; garbage collector {self.gc}; load {load}"


def timed(stages: dict[str, float], name: str, fn):
    """Wrap an async method so its wall time adds up in stages[name]."""

    async def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            stages[name] = stages.get(name, 0.0) + time.perf_counter() - t

    return wrapper


async def floor(settings: Settings, total: int, group: str, work, batches: bool = False) -> float:
    """consume → `work(values)` → commit, per fetched batch: the cost of the transport (and of a parser).

    `batches`: fetch as the processor does (`stream_processor.fetching`: values and offsets read from the
    record batches) instead of aiokafka's getmany (a ConsumerRecord per message)."""
    consumer = AIOKafkaConsumer(*settings.kafka_topics, bootstrap_servers=settings.effective_kafka_bootstrap,
                                group_id=group, enable_auto_commit=False, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)
    await consumer.start()
    done = 0
    started = None
    try:
        while done < total:
            if batches:
                parts = await fetch_values(consumer, timeout_ms=200, max_records=20_000)
            else:
                parts = {tp: ([r.value for r in records], [r.offset for r in records])
                         for tp, records in (await consumer.getmany(timeout_ms=200, max_records=20_000)).items()}
            if not parts:
                continue
            started = started or time.perf_counter()
            for part in parts.values():
                values, offsets = (part.values, part.offsets) if batches else part
                work(values)
                done += len(values)
            await consumer.commit({tp: (part.offsets if batches else part[1])[-1] + 1 for tp, part in parts.items()})
    finally:
        await consumer.stop()
    return done / (time.perf_counter() - started)


def _orjson(values: list[bytes]) -> None:
    for value in values:
        orjson.loads(value)


def _pydantic(values: list[bytes]) -> None:
    for value in values:
        Event.model_validate_json(value)


def _msgspec(values: list[bytes]) -> None:
    for value in values:
        if decode_event(value) is None:
            Event.model_validate_json(value)  # as the processor does: pydantic decides what msgspec declines


def _batch_decoder(values: list[bytes]) -> None:
    for position in decode_batch(values).declined:
        Event.model_validate_json(values[position])


FLOORS = {"consume+commit": lambda values: None, "+ orjson parse": _orjson, "+ pydantic Event": _pydantic,
          "+ msgspec fast decoder": _msgspec}
# The processor's own transport and decoder: record batches read directly, the columnar decode_batch.
BATCH_FLOORS = {"consume+commit (batches)": lambda values: None, "+ decode_batch (batches)": _batch_decoder}


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


async def stop_merges(clickhouse) -> str:
    """Stop chDB's background merges of `clickhouse`'s events table once its run is measured, and say how
    many parts it left. Merges run in this process's threads: left running, the baseline's (its JSON
    inserts leave many small parts) would be charged to the next run's CPU and wall time."""
    await clickhouse.store.execute(f"SYSTEM STOP MERGES {clickhouse.db}.events")
    table = await clickhouse.store.query(
        "SELECT count() AS parts FROM system.parts WHERE database = {db:String} AND table = 'events' AND active",
        {"db": clickhouse.db})
    return f"{int(table.column('parts')[0].as_py())} active parts, merges stopped"


async def pipeline(settings: Settings, services: dict, total: int, stages: dict[str, float],
                   **overrides) -> float:
    processor = build_processor(settings, services, **overrides)
    processor._prepare = timed(stages, "prepare", processor._prepare)  # noqa: SLF001 - measured, not changed
    processor._commit = timed(stages, "dlq+commit", processor._commit)  # noqa: SLF001
    for name, sink in processor.sinks.items():
        sink.flush = timed(stages, f"{name} sink", sink.flush)
    fetch = processing.fetch_values
    processing.fetch_values = timed(stages, "fetch", fetch)
    try:
        return await _run_pipeline(processor, total)
    finally:
        processing.fetch_values = fetch


async def _run_pipeline(processor, total: int) -> float:
    task = asyncio.create_task(processor.run())
    while processor.stats.consumed == 0:  # noqa: ASYNC110 - polls the stats, as a user would
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


async def main(users: int, max_batch: int | None = None, floors: bool = True,
               registry_sink: bool = True, **processor_options: Any) -> None:
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
            # The produced events are gone from this process, and what is left lives as long as the runs: out of
            # the collector's full passes, which would otherwise walk a million tuples in every floor run (the
            # processor freezes its own startup heap the same way).
            del events
            gc.collect()
            gc.freeze()
            print(f"load average before the runs: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            floor_rates: dict[str, float] = {}
            runs = [(name, work, False) for name, work in FLOORS.items()]
            runs += [(name, work, True) for name, work in BATCH_FLOORS.items()]
            for index, (name, work, batches) in enumerate(runs if floors else ()):
                with Meter(pg.data_dir, kafka.process.pid()) as meter:
                    floor_rates[name] = await floor(settings, total, f"bench-floor-{index}", work, batches)
                print(f"floor     {name:<26} {floor_rates[name]:>10,.0f} events/s  [{meter}]")
            with Meter(pg.data_dir, kafka.process.pid()) as meter:
                base_rate = await baseline(settings, clickhouse_base, total)
            print(f"baseline  (consume → chDB insert → commit): {base_rate:,.0f} events/s  [{meter}]")
            print(f"          (baseline table: {await stop_merges(clickhouse_base)})")
            stages: dict[str, float] = {}
            with Meter(pg.data_dir, kafka.process.pid()) as meter:
                # Without the registry sink (--no-registry-sink): what the stream costs beside PostgreSQL's
                # per-exposure writes (and without the known-experiments check, which reads the registry).
                sinks = {"postgres": postgres, "clickhouse": clickhouse} if registry_sink else {"clickhouse": clickhouse}
                rate = await pipeline(settings, sinks, total, stages,
                                      **({"max_batch": max_batch} if max_batch else {}), **processor_options)
            what = "ClickHouse+PostgreSQL sinks" if registry_sink else "ClickHouse sink only (--no-registry-sink)"
            print(f"NeonBlue  (validate, classify, {what}, commit): {rate:,.0f} events/s  [{meter}]")
            print("NeonBlue stages (wall s): " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))
            # The box's cores are what every part shares: the CPU per event bounds the rate whatever overlaps.
            cpu = {"event loop": meter.main, "other threads (chDB, Arrow)": meter.cpu - meter.main,
                   "PostgreSQL": meter.pg, "broker": meter.broker}
            spent = sum(cpu.values())
            cores = os.cpu_count() or 1
            print("NeonBlue CPU per event (µs): " + ", ".join(f"{k} {v * 1e6 / total:.1f}" for k, v in cpu.items())
                  + f"; total {spent * 1e6 / total:.1f} µs, so at most {cores * total / spent:,.0f} events/s on "
                  f"{cores} cores with nothing else running")
            print(f"ratio NeonBlue/baseline: {rate / base_rate:.2f} (goal ≥ 1.5; absolute goal ≥ 100k events/s "
                  f"sustained on 1M events; this run: {total:,} events)")
            for name, floor_rate in floor_rates.items():
                print(f"  NeonBlue / floor {name!r}: {rate / floor_rate:.2f}")
    finally:
        kafka.stop()
        pg.stop()


if __name__ == "__main__":
    configure_logging("WARNING")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=100_000, help="simulated users (≈2.4 events each)")
    parser.add_argument("--events", type=int, default=None,
                        help="about this many events instead of --users (e.g. 1000000 for the 1M-event run)")
    parser.add_argument("--no-floors", action="store_true", help="skip the floor runs")
    parser.add_argument("--max-batch", type=int, default=None, help="the processor's max_batch (default: its own)")
    parser.add_argument("--max-in-flight", type=int, default=None, help="the processor's max_in_flight")
    parser.add_argument("--flush-wait", type=float, default=None, help="the processor's flush_wait (seconds)")
    parser.add_argument("--no-registry-sink", action="store_true",
                        help="NeonBlue without its PostgreSQL sink (exposures not recorded): the cost of the rest")
    args = parser.parse_args()
    users = args.users if args.events is None else max(1, round(args.events / EVENTS_PER_USER))
    options = {name: value for name, value in (("max_in_flight", args.max_in_flight), ("flush_wait", args.flush_wait))
               if value is not None}
    asyncio.run(main(users, args.max_batch, floors=not args.no_floors, registry_sink=not args.no_registry_sink,
                     **options))
