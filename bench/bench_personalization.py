"""Personalization (issue 22): the contextual bandit's offline regret table, and the decision latency of
personalize_experiment_experience over stdio against a no-op floor.

1. Replays synthetic traffic with planted per-device conversion rates through four policies (uniform
   assignment, the plain Thompson bandit, the contextual bandit pooled toward the global arm, the planted
   optimum) and prints cumulative expected regret (conversions lost to the optimum, mean ± SE over the
   replications), the conversion rate and the share of users given their device's best arm. Two worlds:
   arm B best on mobile and C on desktop, and no context effect at all.
2. Loads a personalised experiment (the demo's planted paywall, 20,000 users) into an embedded PostgreSQL
   and chDB, then starts the intelligence server alone over stdio (`python -m mcp_servers.intelligence`,
   its peers in its process) and times, interleaved in rounds: the no-op floor (find_experiment_interactions
   with refresh=false: the same server and transport, no store read), a preview decision (no user: the
   bandit only) and a served decision (a new user: the bandit plus its exposure written to the event store).
   The posterior table is re-read from the event store at most every 5 s, so the p99 shows those reads.

    python bench/bench_personalization.py [--users 20000] [--replications 20] [--floor 0.05] [-n 300]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import numpy as np
from mcp import Client, StdioServerParameters

from mcp_router.apps.demo import PERSONALISED_RATES, context_events
from mcp_router.runtime.embedded import EmbeddedPostgres, free_port
from mcp_router.runtime.serving import open_router
from mcp_servers.stats.contextual_bandit import replay
from schemas.logs import configure_logging
from schemas.settings import Settings

KEY = "paywall-personalised"

SHARES = {"mobile": 0.5, "desktop": 0.4, "tablet": 0.1}
WORLDS = {
    "context effect (B best on mobile, C on desktop, A on tablet)":
        {"mobile": [0.10, 0.14, 0.08], "desktop": [0.10, 0.08, 0.13], "tablet": [0.11, 0.10, 0.10]},
    "no context effect (B best everywhere)": {c: [0.10, 0.12, 0.11] for c in SHARES},
}


def regret_table(users: int, replications: int, floor: float, seed: int = 22) -> list[str]:
    lines = []
    for title, rates in WORLDS.items():
        r = replay(rates, SHARES, users=users, replications=replications, exploration_rate=floor, seed=seed)
        lines.append(f"{title}: {users} users x {replications} replications, exploration floor {floor:.0%}")
        lines.append(f"  {'policy':<11} {'cum. regret':>18} {'conv. rate':>11} {'best-arm share':>15}")
        for name, g, se, rate, share in zip(r.policies, r.regret, r.regret_se, r.reward_rate, r.optimal_share,
                                            strict=True):
            lines.append(f"  {name:<11} {g:>10.1f} ± {se:>5.1f} {rate:>11.4f} {share:>15.3f}")
        i, j = r.policies.index("contextual"), r.policies.index("thompson")
        d = np.array(r.regret_per_replication[i]) - np.array(r.regret_per_replication[j])
        lines.append(f"  contextual − thompson regret: {d.mean():+.1f} ± {d.std(ddof=1) / math.sqrt(len(d)):.1f} "
                     "(paired SE)")
    return lines


async def load(settings: Settings, users: int) -> None:
    """Create and start the personalised experiment and ingest its planted history (in this process)."""
    async with open_router(settings) as router, Client(router.server) as client:
        await client.call_tool("create_experiment", {"experiment": {
            "key": KEY, "name": "Paywall layout, personalised by device", "type": "ui", "primary_metric": "conversion",
            "tags": ["personalized", "personalize:device"],
            "variants": [{"key": "standard", "is_control": True, "weight": 1 / 3}, {"key": "compact", "weight": 1 / 3},
                         {"key": "table", "weight": 1 / 3}]}})
        await client.call_tool("start_experiment", {"experiment": KEY})
        start = datetime.now(UTC) - timedelta(days=14)
        lines = [v for _, _, v in context_events(KEY, ["standard", "compact", "table"], PERSONALISED_RATES, users,
                                                  start, seed=16)]
        await router.services["clickhouse"].ingest_json(b"\n".join(lines), "bench-personalization")


async def latency(n: int, users: int) -> None:
    home = Path(tempfile.mkdtemp(prefix="nb-bench-pers-"))
    pg = EmbeddedPostgres(home / "pgdata", port=free_port())
    pg.start()
    try:
        # chDB keeps its directory locked for the life of the process that opened it: load in a child process
        loaded = await anyio.run_process([sys.executable, __file__, "--load-into", str(home), pg.dsn,
                                          "--users", str(users)], check=False)
        if loaded.returncode:
            raise SystemExit(f"loading the experiment failed: {loaded.stderr.decode()[-2000:]}")
        env = {**os.environ, "NEONBLUE_HOME": str(home), "DATABASE_URL": pg.dsn, "LOG_LEVEL": "WARNING",
               "HF_HUB_OFFLINE": "1", "ENVIRONMENT": "production"}
        params = StdioServerParameters(command=sys.executable, args=["-m", "mcp_servers.intelligence"], env=env)
        async with Client(params) as client:
            calls = {
                "no-op floor (find_experiment_interactions, refresh=false)":
                    lambda i: ("find_experiment_interactions", {"refresh": False}),
                "personalize, preview (no user: bandit only)":
                    lambda i: ("personalize_experiment_experience", {"experiment": KEY, "context": {"device": "mobile"}}),
                "personalize, served (new user: bandit + exposure written)":
                    lambda i: ("personalize_experiment_experience", {
                        "experiment": KEY, "user_id": f"bench-{i}", "context": {"device": ("mobile", "desktop")[i % 2]}}),
            }
            times: dict[str, list[float]] = {k: [] for k in calls}
            served: dict[str, int] = {}
            for make in calls.values():  # warm up: imports, caches, the first posterior read
                for i in range(10):
                    await client.call_tool(*make(-1 - i))
            for r in range(5):  # interleaved rounds: drift hits every path alike
                for name, make in calls.items():
                    for i in range(n // 5):
                        tool, args = make(r * n + i)
                        t0 = time.perf_counter()
                        result = await client.call_tool(tool, args)
                        times[name].append((time.perf_counter() - t0) * 1000)
                        assert not result.is_error, result.content
                        if "user_id" in args:
                            key = f"{args['context']['device']} → {result.structured_content['variant']}"
                            served[key] = served.get(key, 0) + 1
        floor = float(np.percentile(times[next(iter(times))], 50))
        print(f"decision latency over stdio, {n} calls each ({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}):")
        for name, ms in times.items():
            p50, p99 = np.percentile(ms, 50), np.percentile(ms, 99)
            print(f"  {name:<58} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  (p50 {p50 - floor:+.2f} ms over the floor)")
        print("  served: " + ", ".join(f"{k} {v}" for k, v in sorted(served.items())))
    finally:
        pg.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--replications", type=int, default=20)
    parser.add_argument("--floor", type=float, default=0.05, help="exploration floor (production policy: 0.05)")
    parser.add_argument("-n", type=int, default=300, help="calls per path for the latency (0: skip it)")
    parser.add_argument("--load-into", nargs=2, metavar=("HOME", "DSN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_into:
        configure_logging("WARNING")
        settings = Settings(_env_file=None, neonblue_home=Path(args.load_into[0]), database_url=args.load_into[1],
                            clickhouse_url=None, chroma_url=None, log_level="WARNING")
        anyio.run(load, settings, args.users)
        return
    print("\n".join(regret_table(args.users, args.replications, args.floor)))
    if args.n:
        configure_logging("WARNING")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        anyio.run(latency, args.n, args.users)


if __name__ == "__main__":
    main()
