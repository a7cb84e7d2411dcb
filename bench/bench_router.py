"""Router overhead: the same tool called directly on its server vs through the router, in one run.

Prints p50/p99 for: direct in-process (mcp.Client on the server), router-dispatched in-process
(mcp.Client on the router → backend), and a stdio round trip (`neonblue serve` subprocess).
Goal (issue 7): router/direct p50 ratio ≤ 1.10.
"""

from __future__ import annotations

import argparse
import logging
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


async def timed(client: Client, n: int) -> np.ndarray:
    for _ in range(50):  # warm up
        await client.call_tool("classify_event", EVENT)
    out = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        await client.call_tool("classify_event", EVENT)
        out[i] = (time.perf_counter() - t0) * 1000
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
            for _ in range(5):
                direct_rounds.append(await timed(direct, n // 5))
                routed_rounds.append(await timed(routed, n // 5))
        direct_ms, routed_ms = np.concatenate(direct_rounds), np.concatenate(routed_rounds)
    print(fmt("direct in-process (classify_event)", direct_ms))
    print(fmt("via router, in-process", routed_ms))
    ratio = statistics.median(routed_ms) / statistics.median(direct_ms)
    print(f"router/direct p50 ratio: {ratio:.3f} (goal <= 1.10)")

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

    configure_logging("INFO")
    logging.getLogger("neonblue.serving").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=2000, help="calls per path")
    anyio.run(main, parser.parse_args().n)
