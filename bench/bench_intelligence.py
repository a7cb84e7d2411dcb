"""Experiment Intelligence figures on the embedded stack (PostgreSQL, chDB, Chroma) in a fresh temp dir.

1. `analyze_experiment_performance` latency on 10M events (1M users, 3 arms, revenue primary +
   conversion secondary, CUPED on), called as an agent would: an MCP client on the router, the
   intelligence server reaching the registry, the event store and memory through their tools.
   Reported for the first call (which builds the per-user rollup), warm calls, and calls right
   after a new batch of events (the rollup recomputes its users), next to the ClickHouse
   statistics query alone, as wall and CPU time.
   Goal (issue 8): <= 1 s.
2. `predict_user_behavior` accuracy on held-out generated journeys (next action and outcome),
   next to the majority guess.

    .venv/bin/python bench/bench_intelligence.py [--events 10000000] [--repeat 5] [--optimize] [--journeys 1000]

Prints figures; asserts nothing. Other load on the machine changes them: run on an idle box.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import anyio
import pyarrow.compute as pc
from _timing import timed  # bench/ is on sys.path when a script runs
from mcp import Client

from mcp_router.runtime.embedded import EmbeddedPostgres, free_port
from mcp_router.runtime.serving import open_router
from mcp_servers.clickhouse.synthetic import SyntheticExperiment, generate
from mcp_servers.intelligence.behavior import synthetic_journeys, with_random_cuts
from schemas.logs import configure_logging
from schemas.settings import Settings

EXPERIMENT = {
    "key": "bench", "name": "Bench: three checkout layouts", "type": "ui",
    "description": "Three checkout page layouts compared on revenue per user",
    "primary_metric": {"name": "revenue", "direction": "higher"},
    "secondary_metrics": [{"name": "conversion", "direction": "higher"}],
    "variants": [{"key": "control", "is_control": True}, {"key": "v1"}, {"key": "v2"}],
}


async def call(client: Client, tool: str, args: dict) -> dict:
    result = await client.call_tool(tool, args)
    if result.is_error:
        raise RuntimeError(f"{tool}: {result.content[0].text}")
    return result.structured_content  # type: ignore[return-value]



def report(label: str, runs: list[tuple[float, float]]) -> None:
    wall = [w for w, _ in runs]
    cpu = [c for _, c in runs]
    print(f"{label}: median {statistics.median(wall) * 1000:.0f} ms wall (min {min(wall) * 1000:.0f}), "
          f"{statistics.median(cpu) * 1000:.0f} ms CPU ({len(runs)} runs)")


async def analysis_latency(router, client: Client, args: argparse.Namespace) -> None:
    started = time.perf_counter()
    users = max(1000, args.events // 10)  # ~10 events per user (exposure, conversion, purchases, pre-period)
    table = generate(SyntheticExperiment(
        experiment_id="bench", users=users, variants=("control", "v1", "v2"),
        conversion_rate={"control": 0.10, "v1": 0.10, "v2": 0.11},
        revenue_mean={"control": 20.0, "v1": 20.0, "v2": 21.0},
        purchases_per_user=4.4, pre_purchases_per_user=4.4, days=28, seed=1))
    table = table.slice(0, min(args.events, table.num_rows)).sort_by("timestamp")
    print(f"generated {table.num_rows:,} events ({users:,} users, 3 arms) in {time.perf_counter() - started:.1f} s")
    ch = router.services["clickhouse"]
    started = time.perf_counter()
    for k in range(0, table.num_rows, 1_000_000):
        await ch.ingest_arrow(table.slice(k, 1_000_000), f"bench-{k}")
    print(f"ingested in {time.perf_counter() - started:.1f} s")
    await call(client, "create_experiment", {"experiment": EXPERIMENT})
    await call(client, "start_experiment", {"experiment": "bench"})

    args_analysis = {"experiment": "bench", "options": {"cuped": True, "record_decision": False}}
    result: dict = {}

    async def analyze() -> None:
        result.update(await call(client, "analyze_experiment_performance", args_analysis))

    async def audited() -> None:
        await call(client, "analyze_experiment_performance", {"experiment": "bench"})

    async def statistics_only() -> None:
        await ch.get_variant_statistics("bench", ["revenue", "conversion"], cuped=True)

    report("first analysis in the process (builds the per-user rollup; first query plans and embedding)",
           await timed(analyze, 1))
    for stage in ("right after ingest", "after merges") if args.optimize else ("right after ingest",):
        if stage == "after merges":
            started = time.perf_counter()
            await ch.store.execute(f"OPTIMIZE TABLE {ch.db}.events FINAL")
            print(f"OPTIMIZE FINAL: {time.perf_counter() - started:.1f} s")
        report(f"analyze_experiment_performance via the router, {table.num_rows:,} events, 3 arms, CUPED, "
               f"{stage}", await timed(analyze, args.repeat))
        print("  last run inside the server: " + ", ".join(f"{k} {v:.0f}" for k, v in result["timings_ms"].items())
              + f", total {result['elapsed_ms']:.0f} ms")
        report("  of which the ClickHouse statistics query alone", await timed(statistics_only, args.repeat))
        report("  with the verdict written to the audit trail", await timed(audited, args.repeat))
    # A live experiment: 50k more events (the same users buying again) arrive before each analysis.
    fresh = table.slice(table.num_rows // 2, 50_000)
    fresh = fresh.set_column(0, "event_id", pc.binary_join_element_wise(fresh.column("event_id"), "-live", ""))
    live: list[tuple[float, float]] = []
    for k in range(args.repeat):
        await ch.ingest_arrow(fresh, f"live-{k}")  # a re-sent batch: its users are recomputed, nothing doubles
        live += await timed(analyze, 1)
    report(f"analysis right after each new batch of {fresh.num_rows:,} events "
           f"({pc.count_distinct(fresh.column('user_id')).as_py():,} users to recompute)", live)
    primary = [m for m in result["metrics"] if m["role"] == "primary"]
    print(f"verdict: {result['verdict']['verdict']} ({result['verdict']['rule_id']}); "
          + "; ".join(f"{m['variant']} revenue {m['relative_lift'] * 100:+.2f}% (CUPED variance "
                      f"-{m['cuped']['variance_reduction'] * 100:.0f}%)" for m in primary))


async def behaviour_accuracy(router, client: Client, args: argparse.Namespace) -> None:
    train = synthetic_journeys(args.journeys, seed=11)
    held_out = synthetic_journeys(args.held_out, seed=12)
    started = time.perf_counter()
    limiter = anyio.CapacityLimiter(4)

    async def store(journey: dict) -> None:
        async with limiter:
            await call(client, "store_user_journey", {"journey": journey})

    async with anyio.create_task_group() as tg:
        for journey in train:
            tg.start_soon(store, journey)
    print(f"stored {len(train)} journeys in {time.perf_counter() - started:.1f} s")
    service = router.services["intelligence"]
    for label, journeys in (("cut before the last step", held_out),
                            ("cut at a uniform position, session end included", with_random_cuts(held_out, seed=13))):
        started = time.perf_counter()
        evaluation = await service.evaluate_behavior_predictions(journeys)
        elapsed = time.perf_counter() - started
        print(f"predict_user_behavior on {evaluation.journeys} held-out journeys, {label} "
              f"({elapsed / evaluation.journeys * 1000:.0f} ms each): next action accuracy "
              f"{evaluation.next_action_accuracy:.3f} (majority guess {evaluation.next_action_baseline:.3f}), outcome "
              f"accuracy {evaluation.outcome_accuracy:.3f} (majority guess {evaluation.outcome_baseline:.3f})")


async def main(args: argparse.Namespace) -> None:
    home = Path(tempfile.mkdtemp(prefix="nb-bench-intel-"))
    pg = EmbeddedPostgres(home / "pgdata", port=free_port())
    pg.start()
    try:
        settings = Settings(_env_file=None, neonblue_home=home, database_url=pg.dsn, clickhouse_url=None,
                            chroma_url=None, log_level="WARNING")
        print(f"data dir {home}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}")
        async with open_router(settings) as router, Client(router.server) as client:
            if args.events:
                await analysis_latency(router, client, args)
            if args.journeys:
                await behaviour_accuracy(router, client, args)
    finally:
        pg.stop()


if __name__ == "__main__":
    configure_logging("WARNING")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000, help="events in the analysed experiment (0: skip)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--optimize", action="store_true", help="also measure after OPTIMIZE FINAL (merged parts)")
    parser.add_argument("--journeys", type=int, default=1000, help="stored journeys (0: skip the accuracy run)")
    parser.add_argument("--held-out", type=int, default=300)
    anyio.run(main, parser.parse_args())
