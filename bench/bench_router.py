"""Router overhead: the same tool called directly on its server vs through the router, in one run.

Prints p50/p99 for: direct in-process (mcp.Client on the server), router-dispatched in-process
(mcp.Client on the router → backend), and a stdio round trip (`neonblue serve` subprocess).
Goal (issues 7, 21): router/direct p50 ratio ≤ 1.10. Also prints the main-thread CPU per call of
both paths (steadier than wall time on a shared box). Logs at INFO like `neonblue serve` (the router
logs one line per call); LOG_LEVEL=WARNING shows the dispatch alone.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time

import anyio
import numpy as np
from mcp import Client, StdioServerParameters

from mcp_router.gateway.backends import Backend
from mcp_router.gateway.router import Router, connected
from mcp_router.gateway.router_tools import build_router_tools

EVENT = {"event": {"event_id": "e1", "event_type": "conversion", "timestamp": "2026-11-01T10:00:00Z",
                   "user_id": "u1", "experiment_id": "checkout-1step"}}


CPU_US: dict[str, list[float]] = {"direct": [], "routed": []}  # main-thread CPU µs per call, per round


async def timed(client: Client, n: int, cpu: list[float] | None = None) -> np.ndarray:
    for _ in range(50):  # warm up
        await client.call_tool("classify_event", EVENT)
    out = np.empty(n)
    cpu_started = time.thread_time()
    for i in range(n):
        t0 = time.perf_counter()
        await client.call_tool("classify_event", EVENT)
        out[i] = (time.perf_counter() - t0) * 1000
    if cpu is not None:  # CPU per call: less disturbed than wall time when the box is shared
        cpu.append((time.thread_time() - cpu_started) / n * 1e6)
    return out


def fmt(name: str, ms: np.ndarray) -> str:
    return f"{name:<34} p50 {np.percentile(ms, 50):7.3f} ms   p99 {np.percentile(ms, 99):7.3f} ms"


async def main(n: int) -> None:
    router = Router([])
    tools_server = build_router_tools(router)
    router.backends["router"] = Backend("router", tools_server)
    async with connected(router):
        # Interleave rounds so drift (CPU frequency, GC) hits both paths alike.
        direct_rounds, routed_rounds = [], []
        async with Client(tools_server) as direct, Client(router.server) as routed:
            for _ in range(10):
                direct_rounds.append(await timed(direct, n // 10, CPU_US["direct"]))
                routed_rounds.append(await timed(routed, n // 10, CPU_US["routed"]))
        direct_ms, routed_ms = np.concatenate(direct_rounds), np.concatenate(routed_rounds)
    print(fmt("direct in-process (classify_event)", direct_ms))
    print(fmt("via router, in-process", routed_ms))
    ratio = statistics.median(routed_ms) / statistics.median(direct_ms)
    print(f"router/direct p50 ratio: {ratio:.3f} (goal <= 1.10); load average {os.getloadavg()[0]:.2f}")
    cpu_direct, cpu_routed = statistics.median(CPU_US["direct"]), statistics.median(CPU_US["routed"])
    print(f"main-thread CPU per call: direct {cpu_direct:.0f} µs, via router {cpu_routed:.0f} µs, "
          f"ratio {cpu_routed / cpu_direct:.3f} (median of 10 interleaved rounds; "
          f"log level {logging.getLevelName(logging.getLogger().level)})")

    with tempfile.TemporaryDirectory() as home:
        params = StdioServerParameters(command=sys.executable, args=["-m", "mcp_router", "serve"],
                                       env={"NEONBLUE_HOME": home, "LOG_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1",
                                            "PATH": "/usr/bin:/bin"})
        async with Client(params) as stdio:
            stdio_ms = await timed(stdio, min(n, 1000))
    print(fmt("stdio round trip (neonblue serve)", stdio_ms))


if __name__ == "__main__":
    # As `neonblue serve` runs: plain stderr logging at INFO, so the router's per-call log line is measured.
    from schemas.logs import configure_logging

    configure_logging(os.environ.get("LOG_LEVEL", "INFO"))
    logging.getLogger("neonblue.serving").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=2000, help="calls per path")
    anyio.run(main, parser.parse_args().n)
