"""ClickHouse server figures on the embedded engine (chDB) in a fresh temp data dir.

1. Columnar ingest: `ingest_arrow` in batches of 50k rows, each with its own
   idempotency token (normalisation + insert with dedup token), sequentially and
   with --writers concurrent writers (chDB runs inserts in parallel). Goal (issue 4): >= 1M rows/s.
2. Raw JSON ingest: `ingest_json` of JSONEachRow bytes in batches of 50k rows.
3. `get_variant_statistics` over 10M events (1M users, 3 variants, conversion +
   revenue, CUPED on both): the first call (builds the per-user rollup), warm
   calls, calls right after each new 50k-event batch (the rollup recomputes the
   batch's users), and one pass over the events with FINAL (unmerged, then
   merged) and without FINAL, to show what the rollup and exactly-once reading
   cost. Goal: <= 0.5 s.

    .venv/bin/python bench/bench_clickhouse.py [--events 10000000] [--batch 50000]

Prints figures; asserts nothing. The machine's load changes them: run on an idle box.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from _timing import timed  # bench/ is on sys.path when a script runs

from mcp_servers.clickhouse import open_service, queries
from mcp_servers.clickhouse.synthetic import SyntheticExperiment, generate
from schemas.settings import Settings


def experiment(events: int, seed: int = 1) -> pa.Table:
    # ~10 events per user: 1 exposure, ~0.11 conversions, ~4.5 purchases, ~4.5 pre-period purchases.
    users = max(1000, events // 10)
    spec = SyntheticExperiment(
        experiment_id="bench", users=users, variants=("control", "v1", "v2"),
        conversion_rate={"control": 0.10, "v1": 0.11, "v2": 0.12},
        revenue_mean={"control": 20.0, "v1": 21.0, "v2": 22.0},
        purchases_per_user=4.4, pre_purchases_per_user=4.4, days=28, seed=seed,
    )
    table = generate(spec)
    table = table.slice(0, min(events, table.num_rows))
    # A Kafka stream arrives roughly in time order: batches cover a day or two each.
    return table.sort_by("timestamp")


def json_lines(table: pa.Table) -> bytes:
    rows = table.drop_columns(["raw"]).to_pylist()
    out = []
    for row in rows:
        segment = {"device": row.pop("device")}
        for key in ("country", "source", "plan"):
            row.pop(key)
        row["timestamp"] = row["timestamp"].isoformat()
        row = {k: v for k, v in row.items() if v not in ("", None)}
        row["segment"] = segment
        out.append(orjson.dumps(row))
    return b"\n".join(out)



async def main(args: argparse.Namespace, home: Path) -> None:
    settings = Settings(neonblue_home=home, clickhouse_url=None)
    print(f"chDB data dir {home}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}")
    started = time.perf_counter()
    table = experiment(args.events)
    print(f"generated {table.num_rows:,} events in {time.perf_counter() - started:.1f} s")
    batches = [table.slice(i, args.batch) for i in range(0, table.num_rows, args.batch)]

    async with open_service(settings, database="bench") as ch:
        # 1. columnar ingest, sequential then concurrent writers (half the data each way)
        half = len(batches) // 2
        started, cpu = time.perf_counter(), time.process_time()
        for k, batch in enumerate(batches[:half]):
            await ch.ingest_arrow(batch, f"bench-{k}")
        rows = sum(b.num_rows for b in batches[:half])
        seq, per_cpu = rows / (time.perf_counter() - started), rows / (time.process_time() - cpu)
        started, cpu = time.perf_counter(), time.process_time()
        queue = list(enumerate(batches[half:], start=half))

        async def writer() -> None:
            while queue:
                k, batch = queue.pop()
                await ch.ingest_arrow(batch, f"bench-{k}")

        await asyncio.gather(*(writer() for _ in range(args.writers)))
        rows = sum(b.num_rows for b in batches[half:])
        par, par_cpu = rows / (time.perf_counter() - started), rows / (time.process_time() - cpu)
        print(f"ingest_arrow, batches of {args.batch:,}: {seq:,.0f} rows/s sequential ({per_cpu:,.0f} per CPU-second), "
              f"{par:,.0f} rows/s with {args.writers} writers ({par_cpu:,.0f} per CPU-second); CPU = normalisation + "
              f"insert + background merges")
        replay = batches[0]
        started = time.perf_counter()
        await ch.ingest_arrow(replay, "bench-0")
        print(f"replaying a stored batch (same token): {(time.perf_counter() - started) * 1000:.0f} ms, stores nothing")

        # 2. raw JSON
        async with open_service(settings, database="bench_json") as chj:
            sample = table.slice(0, min(args.json_events, table.num_rows))
            payloads = [json_lines(sample.slice(i, args.batch)) for i in range(0, sample.num_rows, args.batch)]
            started, cpu = time.perf_counter(), time.process_time()
            for k, payload in enumerate(payloads):
                await chj.ingest_json(payload, f"json-{k}")
            rate = sample.num_rows / (time.perf_counter() - started)
            per_cpu = sample.num_rows / (time.process_time() - cpu)
            mb = sum(map(len, payloads)) / 1e6
            print(f"ingest_json, batches of {args.batch:,} ({mb:.0f} MB JSONEachRow): {rate:,.0f} rows/s, "
                  f"{per_cpu:,.0f} rows per CPU-second")

        # 3. statistics over everything
        result: list = []

        async def stats(use_rollup: bool = True) -> None:
            result.append(await ch.get_variant_statistics("bench", ["conversion", "revenue"], cuped=True,
                                                          use_rollup=use_rollup))

        async def parts() -> int:
            table = await ch.store.query("SELECT count() AS n FROM system.parts "
                                         "WHERE database = 'bench' AND table = 'events' AND active")
            return table.column("n")[0].as_py()

        def report(label: str, runs: list[tuple[float, float]]) -> None:
            wall = statistics.median(w for w, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            print(f"{label}: median {wall:.3f} s wall, {cpu:.2f} s CPU (min wall {min(w for w, _ in runs):.3f}, "
                  f"{len(runs)} runs)")

        described = f"{table.num_rows:,} events, 3 variants x 2 metrics + CUPED"
        print(f"get_variant_statistics, {described}:")
        report("  first call in the process: builds the per-user rollup", await timed(stats, 1))
        report("  warm: nothing new since the last call (reads the rollup)", await timed(stats, args.repeat))
        # A live stream: a batch of new events for users already in the experiment, then a call.
        fresh = experiment(args.batch * 10, seed=2).slice(0, args.batch)
        fresh = fresh.set_column(0, "event_id", pc.binary_join_element_wise(fresh.column("event_id"), "-live", ""))
        live: list[tuple[float, float]] = []
        for k in range(args.repeat):
            await ch.ingest_arrow(fresh, f"live-{k}")  # the same events again: refreshes, stores nothing new
            live += await timed(stats, 1)
        report(f"  after each new batch of {args.batch:,} events (refreshes their "
               f"{pc.count_distinct(fresh.column('user_id')).as_py():,} users)", live)
        rollup = result[-1]
        report(f"  one pass over the events, FINAL, {await parts()} parts", await timed(lambda: stats(False), args.repeat))
        assert result[-1].statistics == rollup.statistics or all(
            abs(a.sum - b.sum) <= 1e-6 * max(1.0, abs(b.sum)) for a, b in zip(rollup.statistics, result[-1].statistics, strict=True))
        started = time.perf_counter()
        await ch.store.execute("OPTIMIZE TABLE bench.events FINAL")
        print(f"OPTIMIZE FINAL (the state background merges converge to): {time.perf_counter() - started:.1f} s")
        report(f"  one pass over the events after merges ({await parts()} parts)",
               await timed(lambda: stats(False), args.repeat))
        window = result[-1]
        params = {"exp": "bench", "start_ms": int(window.window_start.timestamp() * 1000),
                  "end_ms": int(window.window_end.timestamp() * 1000),
                  "pre_ms": int(window.pre_period_start.timestamp() * 1000), "m0": "conversion", "m1": "revenue"}
        sql = queries.variant_statistics_sql("bench", 2, [], cuped=True)
        report("  the same pass without FINAL (would double-count replays)",
               await timed(lambda: ch.store.query(sql.replace(" FINAL", ""), params), args.repeat))
        print(f"users {sum(v.users for v in window.variants):,}; load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--batch", type=int, default=50_000)
    parser.add_argument("--writers", type=int, default=2, help="concurrent writers for the second half")
    parser.add_argument("--json-events", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=5)
    home = Path(tempfile.mkdtemp(prefix="nb-bench-ch-"))
    try:
        asyncio.run(main(parser.parse_args(), home))
    finally:
        shutil.rmtree(home, ignore_errors=True)
