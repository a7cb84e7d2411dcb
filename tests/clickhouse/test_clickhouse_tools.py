"""Every tool through an in-memory MCP client, the catalogue's schemas and annotations, and a
round trip through `python -m mcp_servers.clickhouse` over stdio (its own chDB path)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp_calls import call, refusal  # type: ignore[import-not-found]

from mcp_servers.clickhouse import build_server, open_service
from schemas.settings import Settings

REPO = Path(__file__).resolve().parents[2]
READ_ONLY = {"get_variant_statistics", "get_exposures_by_period", "clickhouse_query", "list_tables",
             "generate_analytics_insights", "predict_experiment_trends", "get_segment_statistics",
             "get_interaction_statistics"}
IDEMPOTENT_WRITES = {"ingest_events"}


def events(days: int = 4, users_per_day: int = 6) -> list[dict]:
    out = []
    for d in range(days):
        for i in range(users_per_day):
            user, variant = f"u{d}-{i}", ("control", "treatment")[i % 2]
            ts = f"2025-02-{3 + d:02d}T1{i}:00:00Z"
            out.append({"event_id": f"x-{user}", "event_type": "exposure", "timestamp": ts, "user_id": user,
                        "experiment_id": "tools-exp", "variant": variant, "segment": {"device": "mobile"}})
            out.append({"event_id": f"r-{user}", "event_type": "revenue", "timestamp": ts.replace(":00:00Z", ":30:00Z"),
                        "user_id": user, "experiment_id": "tools-exp", "value": 10.0 + i})
    return out


@pytest.fixture
async def service(chdb_path, ch_database):
    async with open_service(Settings(), chdb_path=chdb_path, database=ch_database, clickhouse_url="") as svc:
        yield svc




async def test_the_catalogue_has_typed_schemas_and_honest_annotations(service):
    async with Client(build_server(service)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == READ_ONLY | IDEMPOTENT_WRITES
    for name, tool in tools.items():
        assert re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name)
        assert tool.output_schema is not None and tool.output_schema.get("type") == "object", name
        assert tool.description and "Example" in tool.description, name
        hints = tool.annotations
        assert hints.open_world_hint is False and hints.destructive_hint is False and hints.idempotent_hint is True
        assert hints.read_only_hint is (name in READ_ONLY), name
    props = tools["get_variant_statistics"].input_schema["properties"]
    assert {"experiment", "metrics", "ratio_metrics", "start_date", "end_date", "segment", "cuped"} <= set(props)


async def test_every_tool_over_an_in_memory_client(service):
    async with Client(build_server(service)) as client:
        stored = await call(client, "ingest_events", {"events": events(), "idempotency_token": "batch-1"})
        assert stored["rows"] == 48 and stored["engine"] == "chdb"
        await call(client, "ingest_events", {"events": events(), "idempotency_token": "batch-1"})

        stats = await call(client, "get_variant_statistics", {"experiment": "tools-exp", "metrics": ["revenue"],
                                                              "cuped": True, "segment": {"device": "mobile"}})
        by_variant = {s["variant"]: s for s in stats["statistics"]}
        assert by_variant["control"]["n"] == 12 and by_variant["control"]["sum"] == 4 * (10 + 12 + 14)
        assert by_variant["treatment"]["mean"] == pytest.approx((11 + 13 + 15) / 3)
        assert by_variant["control"]["pre_sum"] == 0.0

        insights = await call(client, "generate_analytics_insights", {"experiment": "tools-exp",
                                                                      "metrics": ["revenue"], "min_segment_users": 2})
        assert insights["control_variant"] == "control" and insights["summary"]

        trends = await call(client, "predict_experiment_trends", {"experiment": "tools-exp", "metric": "revenue",
                                                                  "days_ahead": 2})
        assert len(trends["variants"][0]["forecast"]) == 2 and "OLS" in trends["model"]

        query = await call(client, "clickhouse_query", {"sql": "SELECT count() AS n FROM events FINAL"})
        assert query["rows"] == [[48]] and query["columns"] == [{"name": "n", "type": "uint64", "comment": ""}]

        tables = await call(client, "list_tables", {})
        events_table = next(t for t in tables["tables"] if t["name"] == "events")
        assert events_table["engine"] == "ReplacingMergeTree"
        assert events_table["sorting_key"] == "experiment_id, user_id, event_id"
        assert all(c["comment"] for c in events_table["columns"])


async def test_refusals_and_bad_arguments_come_back_as_readable_errors(service):
    async with Client(build_server(service)) as client:
        text = await refusal(client, "clickhouse_query", {"sql": "SELECT * FROM file('/etc/passwd', 'LineAsString')"})
        assert "function file() reaches outside" in text and "root:" not in text
        text = await refusal(client, "clickhouse_query", {"sql": "DROP TABLE events"})
        assert "only SELECT, WITH, SHOW, DESCRIBE and EXPLAIN" in text
        text = await refusal(client, "get_variant_statistics", {"experiment": "nope", "metrics": ["revenue"]})
        assert "no exposure events for experiment 'nope'" in text
        bad_event = {**events(1, 1)[0], "event_type": "teleport"}
        assert "event_type" in await refusal(client, "ingest_events", {"events": [bad_event],
                                                                       "idempotency_token": "t"})
        assert "days_ahead" in await refusal(client, "predict_experiment_trends", {
            "experiment": "tools-exp", "metric": "revenue", "days_ahead": 500})


async def test_stdio_round_trip_with_its_own_chdb_path(tmp_path):
    env = {**os.environ, "NEONBLUE_HOME": str(tmp_path / "home"), "CLICKHOUSE_DATABASE": "stdio_db",
           "LOG_LEVEL": "WARNING"}
    env.pop("CLICKHOUSE_URL", None)
    params = StdioServerParameters(command=sys.executable, args=["-m", "mcp_servers.clickhouse"], cwd=str(REPO),
                                   env=env)
    async with Client(params) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert names == READ_ONLY | IDEMPOTENT_WRITES
        await call(client, "ingest_events", {"events": events(2, 2), "idempotency_token": "stdio"})
        result = await call(client, "clickhouse_query", {"sql": "SELECT currentDatabase() AS db, count() AS n FROM events"})
        assert result["rows"] == [["stdio_db", 8]]
        assert "function url() reaches outside" in await refusal(
            client, "clickhouse_query", {"sql": "SELECT * FROM url('http://127.0.0.1:9/', 'CSV', 'a String')"})
    assert (tmp_path / "home" / "chdb").is_dir()  # the subprocess owned a path of its own


async def test_a_second_process_on_the_same_path_exits_with_a_clear_message(service, chdb_path):
    """chDB lets one process own a data path; this test process owns `chdb_path` (see `service`)."""
    env = {**os.environ, "NEONBLUE_HOME": str(chdb_path.parent)}
    env.pop("CLICKHOUSE_URL", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mcp_servers.clickhouse", cwd=str(REPO), env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 2, stderr
    assert stdout == b""
    assert b"cannot open chDB at" in stderr
