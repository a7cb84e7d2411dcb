"""How much of an agent's context `tools/list` takes: the `core` profile next to `full`.

Opens the router with every server in-process on the embedded stack (PostgreSQL, chDB, Chroma) in a
fresh temp dir, and prints for each profile the number of tools, the bytes of the `tools/list`
result as JSON (what goes over the wire) and an approximate token count (bytes / 4: no tokenizer
needed, and the ratio is what matters), with the share of it taken by input schemas, output
schemas and descriptions, the largest tools, and the size without output schemas (which a client
uses only to check structured results). Also times `find_tools` (the first call builds the index).

    .venv/bin/python bench/bench_tools_list.py

Prints figures; asserts nothing.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import anyio
from mcp import Client

from mcp_router.gateway.backends import PROFILE_META
from mcp_router.gateway.router import PROFILES
from mcp_router.runtime.embedded import EmbeddedPostgres, free_port
from mcp_router.runtime.serving import open_router
from schemas.logs import configure_logging
from schemas.settings import Settings


def size(value: object) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


async def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="nb-bench-tools-"))
    pg = EmbeddedPostgres(home / "pgdata", port=free_port())
    pg.start()
    try:
        settings = Settings(_env_file=None, neonblue_home=home, database_url=pg.dsn, log_level="WARNING",
                            tool_profile="core")
        async with open_router(settings) as router, Client(router.server) as client:
            figures = {}
            for profile in PROFILES:
                listed = await client.list_tools(meta={PROFILE_META: profile}, cache_mode="refresh")
                body = listed.model_dump(mode="json", by_alias=True, exclude_none=True)
                tools = body["tools"]
                figures[profile] = total = size(body)
                print(f"{profile:<5} {len(tools):>3} tools  {total:>7,} bytes  ≈{total // 4:>6,} tokens   "
                      f"input schemas {sum(size(t.get('inputSchema', {})) for t in tools) / total:4.0%}, "
                      f"output schemas {sum(size(t.get('outputSchema', {})) for t in tools) / total:4.0%}, "
                      f"descriptions {sum(size(t.get('description', '')) for t in tools) / total:4.0%}")
                largest = sorted(tools, key=size, reverse=True)[:3]
                print("      largest: " + ", ".join(f"{t['name']} {size(t):,}" for t in largest)
                      + f"; without output schemas {total - sum(size(t.get('outputSchema', {})) for t in tools):,} "
                      "bytes")
            print(f"core / full: {figures['core'] / figures['full']:.1%} of the bytes")
            for label in ("first (builds the index)", "warm"):
                started = time.perf_counter()
                found = await client.call_tool("find_tools", {"query": "split traffic toward the winning arm",
                                                              "limit": 3})
                elapsed = (time.perf_counter() - started) * 1000
                names = [m["name"] for m in found.structured_content["matches"]]
                print(f"find_tools {label}: {elapsed:7.1f} ms -> {names}")
    finally:
        pg.stop()


if __name__ == "__main__":
    configure_logging("WARNING")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    anyio.run(main)
