"""The router over the real servers: one catalogue, in-process and subprocess backends, dead backends."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import psutil
from mcp import Client, StdioServerParameters
from mcp_calls import readable  # type: ignore[import-not-found]

from mcp_router.runtime.serving import open_router
from schemas.settings import Settings

SEED_TOOLS = {"analyze_experiment_data", "semantic_experiment_search", "get_variant", "get_variant_statistics",
              "router_status", "route_query", "classify_event"}


def _settings(neonblue_home: Path, pg_dsn: str, ch_database: str, chroma_path: Path, **extra) -> Settings:
    return Settings(_env_file=None, neonblue_home=neonblue_home, database_url=pg_dsn,
                    clickhouse_database=ch_database, **extra)


@readable
async def test_one_catalogue_routes_to_in_process_and_stdio_backends(neonblue_home, pg_dsn, ch_database,
                                                                      tmp_path) -> None:
    # ClickHouse runs as a separate process over stdio (its own chDB path); the rest in-process.
    child_home = tmp_path / "child"
    clickhouse = StdioServerParameters(
        command=sys.executable, args=["-m", "mcp_servers.clickhouse"],
        env={**os.environ, "NEONBLUE_HOME": str(child_home), "CLICKHOUSE_DATABASE": "routed", "LOG_LEVEL": "WARNING"})
    settings = _settings(neonblue_home, pg_dsn, ch_database, tmp_path)
    async with open_router(settings, targets={"clickhouse": clickhouse}) as router, Client(router.server) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert SEED_TOOLS <= set(tools), SEED_TOOLS - set(tools)
        assert all(len(name) <= 64 for name in tools)
        kinds = {s["name"]: s["kind"] for s in (await client.call_tool("router_status", {})).structured_content["backends"]}
        assert kinds["clickhouse"] == "stdio" and kinds["postgres"] == "in-process"

        created = await client.call_tool("create_experiment", {"experiment": {
            "key": "routed-exp", "name": "Routed", "type": "prompt", "primary_metric": {"name": "resolved"},
            "variants": [{"key": "control", "is_control": True, "weight": 0.5, "config": {"system_prompt": "A"}},
                         {"key": "concise", "weight": 0.5, "config": {"system_prompt": "B"}}]}})
        assert not created.is_error, created.content
        tables = await client.call_tool("list_tables", {})
        assert not tables.is_error, tables.content
        assert "events" in str(tables.structured_content)
        listed = await client.call_tool("list_experiments", {})
        assert "routed-exp" in str(listed.structured_content)
        # The answer comes from the router, not from the ClickHouse process behind it.
        assert (tables.meta or {}).get("io.modelcontextprotocol/serverInfo", {}).get("name") in (None, "neonblue")


@readable
async def test_a_dead_backend_answers_with_a_clear_error_in_time_and_others_keep_working(
        neonblue_home, pg_dsn, ch_database, tmp_path) -> None:
    child_home = tmp_path / "child"
    clickhouse = StdioServerParameters(
        command=sys.executable, args=["-m", "mcp_servers.clickhouse"],
        env={**os.environ, "NEONBLUE_HOME": str(child_home), "LOG_LEVEL": "WARNING"})
    settings = _settings(neonblue_home, pg_dsn, ch_database, tmp_path, backend_timeout=3.0)
    targets = {"clickhouse": clickhouse, "chromadb": "http://127.0.0.1:9/mcp"}  # nothing listens on port 9
    async with open_router(settings, targets=targets) as router, Client(router.server) as client:
        status = {s["name"]: s for s in (await client.call_tool("router_status", {})).structured_content["backends"]}
        assert status["chromadb"]["healthy"] is False and status["chromadb"]["connect_error"]

        # Freeze, then kill, the ClickHouse subprocess: calls must fail fast and say why.
        child = next(p for p in psutil.Process().children(recursive=True)
                     if "mcp_servers.clickhouse" in " ".join(p.cmdline()))
        child.suspend()
        started = time.monotonic()
        hung = await client.call_tool("list_tables", {})
        assert hung.is_error and "no answer within 3s" in hung.content[0].text
        assert time.monotonic() - started < 10
        child.kill()
        child.wait(10)
        dead = await client.call_tool("list_tables", {})
        assert dead.is_error and "backend 'clickhouse' is unavailable" in dead.content[0].text

        alive = await client.call_tool("list_experiments", {})  # PostgreSQL, in-process, unaffected
        assert not alive.is_error
        status = {s["name"]: s for s in (await client.call_tool("router_status", {})).structured_content["backends"]}
        assert status["clickhouse"]["errors"] >= 2
        assert status["postgres"]["healthy"] is True
