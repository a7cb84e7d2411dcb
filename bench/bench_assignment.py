"""Assignment benchmark: get_variant latency over MCP stdio, and batch assignment throughput
beside the growthbook PyPI SDK's own hashing, in the same run.

    .venv/bin/python bench/bench_assignment.py [--calls 2000] [--batch 1000000]

Uses DATABASE_URL when set (a fresh database is created in it), otherwise starts a
throw-away embedded PostgreSQL. Prints figures; asserts nothing but that the batch
path and the SDK agree on every user they both assigned.

The stdio series (issue 21's goal: p50 <= 1.2x the no-op floor) run side by side, interleaved in
rounds: new users (the default NEONBLUE_ASSIGNMENT_WRITES=behind: answered by the hash, recorded just
after the answer), returning users (answered from memory), new users on a server with
NEONBLUE_ASSIGNMENT_WRITES=before_answer (the assignment committed before the answer), and the floor:
the same SDK over stdio with a tool that does nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from growthbook.core import chooseVariation, gbhash, getBucketRanges
from mcp import Client
from mcp.client.stdio import StdioServerParameters

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _databases import drop_database, fresh_database  # noqa: E402 - bench/ is on sys.path

from mcp_router.runtime.embedded import EmbeddedPostgres, free_port  # noqa: E402
from mcp_servers.postgres import open_service  # noqa: E402
from mcp_servers.postgres.assignment import AssignmentSpec, assign_batch  # noqa: E402

SEED = "bench-checkout"
WEIGHTS = (0.5, 0.3, 0.2)

# The floor: the same MCP SDK over stdio with a tool that does nothing, to separate
# the transport's cost from the server's.
NOOP_SERVER = """
from pydantic import BaseModel
from mcp.server.mcpserver import MCPServer

class Out(BaseModel):
    experiment_key: str
    user_id: str
    variant_key: str | None

mcp = MCPServer("noop")

@mcp.tool()
async def get_variant(experiment: str, user_id: str) -> Out:
    return Out(experiment_key=experiment, user_id=user_id, variant_key="v0")

mcp.run()
"""


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def user_ids(n: int, prefix: str = "") -> list[str]:
    return [f"{prefix}{uuid.UUID(int=i * 2654435761 + 12345)}" for i in range(n)]


async def stdio_latency(dsn: str, calls: int) -> dict[str, list[float]]:
    async with open_service(dsn=dsn) as service:
        await service.create_experiment({
            "key": SEED, "name": "bench", "type": "feature", "primary_metric": "conversion",
            "variants": [{"key": f"v{i}", "is_control": i == 0, "weight": w} for i, w in enumerate(WEIGHTS)],
        })
        await service.start_experiment(SEED)
        in_process = []
        for user in user_ids(calls, "local-"):
            started = time.perf_counter()
            await service.get_variant(SEED, user)
            in_process.append((time.perf_counter() - started) * 1000)

    params = StdioServerParameters(command=sys.executable, args=["-m", "mcp_servers.postgres"], cwd=str(REPO),
                                   env={**os.environ, "DATABASE_URL": dsn, "LOG_LEVEL": "WARNING"})
    new_users, returning, floor, before = [], [], [], []

    async def timed_calls(client: Client, users: list[str], out: list[float]) -> None:
        for user in users:
            started = time.perf_counter()
            result = await client.call_tool("get_variant", {"experiment": SEED, "user_id": user})
            out.append((time.perf_counter() - started) * 1000)
            assert not result.is_error, result

    # Both servers run side by side and the series are interleaved in rounds, so drift in the machine's
    # load (it is shared) hits the floor and the measured series alike.
    noop = StdioServerParameters(command=sys.executable, args=["-c", NOOP_SERVER])
    before_answer = StdioServerParameters(
        command=sys.executable, args=["-m", "mcp_servers.postgres"], cwd=str(REPO),
        env={**os.environ, "DATABASE_URL": dsn, "LOG_LEVEL": "WARNING", "NEONBLUE_ASSIGNMENT_WRITES": "before_answer"})
    async with Client(params) as client, Client(noop) as floor_client, Client(before_answer) as before_client:
        for warm in (client, floor_client, before_client):
            await timed_calls(warm, user_ids(200, "warm-"), [])
        users, before_users = user_ids(calls), user_ids(calls, "before-")
        rounds = 10
        for r in range(rounds):
            part = slice(r * calls // rounds, (r + 1) * calls // rounds)
            await timed_calls(client, users[part], new_users)  # first call: the hash, recorded behind the answer
            await timed_calls(floor_client, users[part], floor)
            await timed_calls(client, users[part], returning)  # later calls: the recorded assignment, from memory
            await timed_calls(before_client, before_users[part], before)  # first call, recorded before answering
    return {"in-process service, new users": in_process, "stdio, new users (default)": new_users,
            "stdio, returning users (recorded)": returning, "stdio, new users, before_answer": before,
            "stdio floor: no-op tool, same SDK": floor}


def batch_throughput(n: int, sdk_n: int) -> tuple[float, float, int]:
    ids = user_ids(n)
    spec = AssignmentSpec(seed=SEED, weights=WEIGHTS)
    assign_batch(spec, ids[:1000])  # warm up
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        variations, _ = assign_batch(spec, ids)
        best = min(best, time.perf_counter() - started)
    ours = n / best

    sample = ids[:sdk_n]
    ranges = getBucketRanges(len(WEIGHTS), 1.0, list(WEIGHTS))
    started = time.perf_counter()
    theirs_variations = [chooseVariation(gbhash(SEED, u, 2), ranges) for u in sample]
    theirs = sdk_n / (time.perf_counter() - started)
    mismatches = int(np.count_nonzero(variations[:sdk_n] != np.array(theirs_variations)))
    return ours, theirs, mismatches


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="get_variant calls per latency series")
    parser.add_argument("--batch", type=int, default=1_000_000, help="users in the vectorised batch")
    parser.add_argument("--sdk", type=int, default=200_000, help="users hashed by the growthbook SDK")
    args = parser.parse_args()

    print("== batch assignment (Python, in process) ==")
    ours, theirs, mismatches = batch_throughput(args.batch, args.sdk)
    print(f"neonblue assign_batch (numpy):   {ours:>12,.0f} assignments/s  ({args.batch:,} users, best of 3)")
    print(f"growthbook SDK gbhash+choose:    {theirs:>12,.0f} assignments/s  ({args.sdk:,} users)")
    print(f"speed-up: {ours / theirs:.1f}x   disagreements with the SDK: {mismatches} of {args.sdk:,}")

    server = None
    admin = os.environ.get("DATABASE_URL")
    tmp = None
    if not admin:
        tmp = tempfile.TemporaryDirectory(prefix="nb-bench-")
        server = EmbeddedPostgres(Path(tmp.name) / "pgdata", port=free_port())
        admin = server.start()
    dsn = await fresh_database(admin)
    try:
        load = os.getloadavg()[0]
        print(f"\n== get_variant latency ({args.calls} calls per series, ms; load average {load:.1f} "
              f"on {os.cpu_count()} cores) ==")
        series = await stdio_latency(dsn, args.calls)
        for name, samples in series.items():
            print(f"{name:<36} p50 {statistics.median(samples):6.3f}   p99 {percentile(samples, 99):6.3f}   "
                  f"mean {statistics.fmean(samples):6.3f}")
        floor = statistics.median(series["stdio floor: no-op tool, same SDK"])
        for name in ("stdio, new users (default)", "stdio, returning users (recorded)",
                     "stdio, new users, before_answer"):
            print(f"{name} p50 / floor p50: {statistics.median(series[name]) / floor:.2f} (goal, issue 21: <= 1.2)")
        print(f"load average after the series: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        await drop_database(admin, dsn)
        if server is not None:
            server.stop()
            tmp.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
