"""REST API benchmark: POST /api/v1/experiments/get-variant requests/s and latency over loopback.

    .venv/bin/python bench/bench_rest.py [--requests 10000] [--concurrency 32] [--seconds 30] [--client auto]

The server is the router's real HTTP app (bearer auth + rate-limit middleware, the REST routes,
the postgres service in-process, uvicorn) in a subprocess of its own, so the load generator
does not share its CPU time slices with the server's event loop. The load generator is an
async client with `--concurrency` requests in flight on keep-alive connections, bounded by
`--requests` and `--seconds`: aiohttp when installed (auto), else httpx. httpx's connection
pool is itself the bottleneck at high concurrency here (about 5x fewer requests/s than aiohttp
against the same server at 32 in flight), so its figures understate the server. `wrk` is used
when it is on PATH and --client wrk is given.

Series: first assignments (every request a new user: hash + one INSERT of the assignment and of its
exposure's event-outbox row), the same with exposed=false (no outbox row: the outbox's cost), returning
users (sticky: the recorded assignment is read back, nothing written), record-result (one metric value
per request for an assigned user, with its outbox row), and batch get-variant (users/s, 1000 a call).
Uses DATABASE_URL when set (a fresh database is created in it), otherwise a throw-away
embedded PostgreSQL. The rate limit is raised for the run (the default, 600/min per token,
would cap a single client at 10 requests/s). Prints figures; asserts only that answers are 200.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _databases import drop_database, fresh_database  # noqa: E402 - bench/ is on sys.path

from mcp_router.runtime.embedded import EmbeddedPostgres, free_port  # noqa: E402

TOKEN = "bench-token"
KEY = "bench-checkout"
PATH = "/api/v1/experiments/get-variant"
RESULT_PATH = "/api/v1/experiments/record-result"


# ---------------------------------------------------------------- the server (subprocess)


def serve(dsn: str, port: int) -> None:
    """Run the HTTP app as `neonblue serve --http` builds it, with only the postgres server in-process."""
    import anyio
    import uvicorn

    from mcp_router.gateway.backends import Backend
    from mcp_router.gateway.router import Router, connected
    from mcp_router.web.http_app import build_http_app
    from mcp_router.web.rest import rest_routes
    from mcp_servers.postgres import build_server, open_service
    from schemas.settings import Settings

    async def main() -> None:
        settings = Settings(_env_file=None, database_url=dsn).model_copy(
            update={"rate_limit_per_minute": 100_000_000, "http_port": port})
        async with open_service(settings) as service:
            router = Router([Backend("postgres", build_server(service))])
            router.services["postgres"] = service
            async with connected(router):
                app = build_http_app(router, settings, TOKEN, extra_routes=rest_routes(router))
                config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
                                        access_log=False)
                await uvicorn.Server(config).serve()

    anyio.run(main)


# ---------------------------------------------------------------- load generation


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def drive_httpx(url: str, bodies: list[bytes], concurrency: int, seconds: float,
                      path: str = PATH) -> tuple[list[float], float]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    latencies: list[float] = []
    cursor = iter(bodies)
    deadline = time.perf_counter() + seconds

    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as client:
        async def worker() -> None:
            for body in cursor:
                if time.perf_counter() > deadline:
                    return
                t0 = time.perf_counter()
                response = await client.post(path, content=body)
                latencies.append((time.perf_counter() - t0) * 1000)
                if response.status_code not in (200, 201):
                    raise RuntimeError(f"{response.status_code}: {response.text}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, time.perf_counter() - started


async def drive_aiohttp(url: str, bodies: list[bytes], concurrency: int, seconds: float,
                        path: str = PATH) -> tuple[list[float], float]:
    import aiohttp

    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    latencies: list[float] = []
    cursor = iter(bodies)
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(url, headers=headers, connector=connector) as session:
        async def worker() -> None:
            for body in cursor:
                if time.perf_counter() > deadline:
                    return
                t0 = time.perf_counter()
                async with session.post(path, data=body) as response:
                    await response.read()
                    if response.status not in (200, 201):
                        raise RuntimeError(f"{response.status}: {await response.text()}")
                latencies.append((time.perf_counter() - t0) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, time.perf_counter() - started


def drive_wrk(url: str, concurrency: int, seconds: float) -> str:
    """wrk with a fixed body (returning users only: wrk sends one body); its own summary is printed."""
    script = Path(tempfile.mkdtemp()) / "post.lua"
    script.write_text(f'wrk.method = "POST"\nwrk.body = \'{{"experiment": "{KEY}", "user_id": "returning-0"}}\'\n'
                      f'wrk.headers["Content-Type"] = "application/json"\n'
                      f'wrk.headers["Authorization"] = "Bearer {TOKEN}"\n')
    done = subprocess.run(["wrk", "-t2", f"-c{concurrency}", f"-d{int(seconds)}s", "--latency", "-s", str(script),
                           f"{url}{PATH}"], capture_output=True, text=True, check=False)
    return done.stdout


def cpu_seconds(pid: int, with_children: bool = False) -> float:
    """User + system CPU time of a process so far, and of its live children (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split() if with_children else []
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(int(child)) for child in children)


def report(name: str, latencies: list[float], elapsed: float, cpu: tuple[float, float] = (0.0, 0.0)) -> None:
    """One series; `cpu` = the CPU seconds of the server and of PostgreSQL during it (figures the
    machine's load barely moves, unlike the wall-clock ones)."""
    per_request = (f"   CPU µs/req: server {cpu[0] / len(latencies) * 1e6:4.0f}, PostgreSQL "
                   f"{cpu[1] / len(latencies) * 1e6:4.0f}" if any(cpu) else "")
    print(f"{name:<34} {len(latencies) / elapsed:>9,.0f} req/s   p50 {statistics.median(latencies):7.2f} ms   "
          f"p99 {percentile(latencies, 99):7.2f} ms   ({len(latencies):,} requests in {elapsed:.1f} s){per_request}")


# ---------------------------------------------------------------- main


async def wait_up(url: str, proc: asyncio.subprocess.Process, within: float = 120) -> None:
    async with httpx.AsyncClient(base_url=url) as client:
        deadline = time.perf_counter() + within
        while time.perf_counter() < deadline:
            if proc.returncode is not None:
                raise RuntimeError(f"the server exited with {proc.returncode}")
            try:
                if (await client.get("/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the server did not come up")


async def run(args: argparse.Namespace, dsn: str, pg_pid: int | None = None) -> None:
    """The series against a server on `dsn`; `pg_pid`: the embedded PostgreSQL's postmaster, whose CPU is reported."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = await asyncio.create_subprocess_exec(sys.executable, __file__, "--serve", dsn, str(port))
    try:
        await wait_up(url, proc)
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as http:
            created = await http.post("/api/v1/experiments/", json={
                "key": KEY, "name": "REST bench", "type": "ui", "primary_metric": "conversion",
                "variants": [{"key": "control", "is_control": True, "weight": 0.5}, {"key": "a", "weight": 0.3},
                             {"key": "b", "weight": 0.2}]})
            assert created.status_code == 201, created.text
            assert (await http.post(f"/api/v1/experiments/{KEY}/start")).status_code == 200

            returning = [f"returning-{i}" for i in range(min(args.requests, 5000))]
            for i in range(0, len(returning), 1000):  # record them first, through the batch endpoint
                batch = await http.post("/api/v1/experiments/get-variant/batch",
                                        json={"experiment": KEY, "user_ids": returning[i:i + 1000]})
                assert batch.status_code == 200, batch.text

        load = os.getloadavg()[0]
        print(f"== REST get-variant over loopback: {args.client} client, {args.concurrency} in flight; "
              f"server: uvicorn, 1 process; load average {load:.1f} on {os.cpu_count()} cores ==")
        if args.client == "wrk":
            print(await asyncio.to_thread(drive_wrk, url, args.concurrency, min(args.seconds, 30)))
            return
        drive = drive_aiohttp if args.client == "aiohttp" else drive_httpx

        def bodies(users: list[str]) -> list[bytes]:
            return [f'{{"experiment": "{KEY}", "user_id": "{u}"}}'.encode() for u in users]

        def cpu_now() -> tuple[float, float]:
            return cpu_seconds(proc.pid), cpu_seconds(pg_pid, with_children=True) if pg_pid else 0.0

        async def series(name: str, payloads: list[bytes], concurrency: int, path: str = PATH) -> None:
            before = cpu_now()
            latencies, elapsed = await drive(url, payloads, concurrency, args.seconds, path)
            report(name, latencies, elapsed, tuple(b - a for a, b in zip(before, cpu_now(), strict=True)))

        await drive(url, bodies(returning[:500]), args.concurrency, 10)  # warm up: connections, caches
        await series("first assignment (hash + INSERT)", bodies([f"new-{i}" for i in range(args.requests)]),
                     args.concurrency)
        # The same with exposed=false: the assignment alone, without its exposure's outbox row.
        hidden = [f'{{"experiment": "{KEY}", "user_id": "hidden-{i}", "exposed": false}}'.encode()
                  for i in range(args.requests)]
        await series("  same, exposed=false (no outbox)", hidden, args.concurrency)
        again = (returning * (args.requests // len(returning) + 1))[:args.requests]
        await series("returning user (sticky read)", bodies(again), args.concurrency)
        await series("returning user, 1 in flight", bodies(again[:1000]), 1)
        results = [f'{{"experiment": "{KEY}", "user_id": "{u}", "metric": "conversion", "value": 1.0, '
                   f'"event_id": "bench-{i}"}}'.encode() for i, u in enumerate(again)]
        await series("record-result", results, args.concurrency, RESULT_PATH)

        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as http:
            users = [f"batch-{i}" for i in range(20_000)]
            before = cpu_now()
            started = time.perf_counter()
            for i in range(0, len(users), 1000):
                batch = await http.post("/api/v1/experiments/get-variant/batch",
                                        json={"experiment": KEY, "user_ids": users[i:i + 1000]})
                assert batch.status_code == 200 and batch.json()["newly_recorded"] == 1000, batch.text
            elapsed = time.perf_counter() - started
            server_cpu, pg_cpu = (b - a for a, b in zip(before, cpu_now(), strict=True))
        print(f"{'batch get-variant (1000 per call)':<34} {len(users) / elapsed:>9,.0f} users/s   "
              f"({len(users) // 1000} sequential calls, {elapsed / (len(users) // 1000) * 1000:.1f} ms per call)"
              f"   CPU µs/user: server {server_cpu / len(users) * 1e6:.1f}, PostgreSQL {pg_cpu / len(users) * 1e6:.1f}")
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000, help="requests per series (upper bound)")
    parser.add_argument("--seconds", type=float, default=30, help="time limit per series")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--client", choices=["auto", "httpx", "aiohttp", "wrk"], default="auto")
    args = parser.parse_args()
    if args.client == "auto":
        args.client = "aiohttp" if importlib.util.find_spec("aiohttp") else "httpx"
    if args.client == "wrk" and shutil.which("wrk") is None:
        parser.error("wrk is not on PATH; use --client httpx or aiohttp")

    admin = os.environ.get("DATABASE_URL")
    server = base = None
    if not admin:
        base = Path(tempfile.mkdtemp(prefix="nb-bench-rest-"))
        server = EmbeddedPostgres(base / "pgdata", port=free_port())
        admin = server.start()
    dsn = await fresh_database(admin, "bench_rest")
    pg_pid = int((base / "pgdata" / "postmaster.pid").read_text().split()[0]) if base is not None else None
    try:
        await run(args, dsn, pg_pid)
    finally:
        await drop_database(admin, dsn)
        if server is not None:
            server.stop()
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        asyncio.run(main())
