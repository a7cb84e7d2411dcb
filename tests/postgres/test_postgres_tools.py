"""Every tool through an in-memory MCP client, the tool catalogue's schemas and annotations,
and one round trip through `python -m mcp_servers.postgres` over stdio."""

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

from mcp_servers.postgres import build_server, open_service
from mcp_servers.postgres.assignment import assign
from mcp_servers.postgres.service import assignment_spec

REPO = Path(__file__).resolve().parents[2]

READ_ONLY = {"get_experiment", "list_experiments", "predict_user_assignment", "analyze_experiment_data",
             "get_experiment_summary", "list_decisions", "postgres_query", "describe_schema"}
WRITES = {"create_experiment": (False, False), "update_experiment": (True, True), "start_experiment": (False, False),
          "stop_experiment": (True, False), "archive_experiment": (True, True), "set_variant_weights": (True, True),
          "get_variant": (False, True), "record_result": (False, False), "record_decision": (False, False)}

EXPERIMENT = {
    "key": "support-prompt-v2", "name": "Support prompt with examples", "type": "prompt",
    "primary_metric": {"name": "resolution_rate", "direction": "higher"},
    "variants": [{"key": "control", "is_control": True, "config": {"system_prompt": "Answer."}},
                 {"key": "examples", "config": {"system_prompt": "Answer. Examples: ..."}}],
}


@pytest.fixture
async def service(pg_dsn):
    async with open_service(dsn=pg_dsn) as svc:
        yield svc




async def test_the_catalogue_has_typed_schemas_and_honest_annotations(service):
    async with Client(build_server(service)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == READ_ONLY | set(WRITES)
    for name, tool in tools.items():
        assert re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name)
        assert tool.output_schema is not None and tool.output_schema.get("type") == "object", name
        assert tool.description and "Example" in tool.description, name
        hints = tool.annotations
        assert hints.open_world_hint is False
        if name in READ_ONLY:
            assert hints.read_only_hint is True and hints.idempotent_hint is True, name
        else:
            assert hints.read_only_hint is False, name
            assert (hints.destructive_hint, hints.idempotent_hint) == WRITES[name], name


async def test_every_tool_over_an_in_memory_client(service):
    async with Client(build_server(service)) as client:
        created = await call(client, "create_experiment", {"experiment": EXPERIMENT, "actor": "agent:test"})
        assert created["status"] == "draft" and [v["weight"] for v in created["variants"]] == [0.5, 0.5]
        updated = await call(client, "update_experiment", {"experiment": "support-prompt-v2",
                                                           "changes": {"secondary_metrics": ["tokens"]}, "reason": "track cost"})
        assert updated["secondary_metrics"] == [{"name": "tokens", "direction": "higher"}]
        assert (await call(client, "start_experiment", {"experiment": "support-prompt-v2"}))["status"] == "running"

        prediction = await call(client, "predict_user_assignment", {"experiment": "support-prompt-v2", "user_id": "u-1"})
        assignment = await call(client, "get_variant", {"experiment": "support-prompt-v2", "user_id": "u-1",
                                                        "attributes": {"country": "US"}})
        assert assignment["variant_key"] == prediction["variant_key"] and assignment["newly_recorded"]
        assert assignment["config"]["system_prompt"].startswith("Answer.")

        recorded = await call(client, "record_result", {"experiment": "support-prompt-v2", "user_id": "u-1",
                                                        "metric": "resolution_rate", "value": 1.0, "event_id": "e-1"})
        assert recorded["variant_key"] == assignment["variant_key"] and not recorded["duplicate"]
        analysis = await call(client, "analyze_experiment_data", {"experiment": "support-prompt-v2"})
        assert analysis["total_assigned"] == 1 and analysis["metrics"] == ["resolution_rate", "tokens"]
        summary = await call(client, "get_experiment_summary", {"experiment": "support-prompt-v2"})
        assert "Support prompt with examples" in summary["summary"]

        weights = await call(client, "set_variant_weights", {"experiment": "support-prompt-v2",
                                                             "weights": {"control": 0.3, "examples": 0.7},
                                                             "confirm": True, "reason": "more traffic to examples"})
        assert [v["weight"] for v in weights["variants"]] == [0.3, 0.7]
        detail = await call(client, "get_experiment", {"experiment": str(created["id"]), "include_change_log": True})
        assert detail["assignments_by_variant"][assignment["variant_key"]] == 1
        assert [e["change_type"] for e in detail["change_log"]] == ["weights_changed", "started", "updated", "created"]
        listed = await call(client, "list_experiments", {"status": ["running"], "type": "prompt"})
        assert [i["key"] for i in listed["items"]] == ["support-prompt-v2"]

        decision = await call(client, "record_decision", {"decision": {
            "experiment": "support-prompt-v2", "action": "recommend_ship", "reasoning": "clear win",
            "confidence": 0.97, "actor": "intelligence", "inputs": {"p_value": 0.003}}})
        decisions = await call(client, "list_decisions", {"experiment": "support-prompt-v2"})
        assert decisions["items"][0]["id"] == decision["id"]

        rows = await call(client, "postgres_query", {"sql": "SELECT user_id FROM assignments", "limit": 10})
        assert rows["rows"] == [["u-1"]]
        schema = await call(client, "describe_schema", {})
        assert "experiments" in {t["name"] for t in schema["tables"]}

        stopped = await call(client, "stop_experiment", {"experiment": "support-prompt-v2", "winner": "examples",
                                                         "confirm": True, "reason": "examples resolves more"})
        assert stopped["status"] == "concluded" and stopped["winner"] == "examples"
        archived = await call(client, "archive_experiment", {"experiment": "support-prompt-v2", "confirm": True,
                                                             "reason": "shipped"})
        assert archived["status"] == "archived"


async def test_refusals_reach_the_client_with_their_reason(service):
    async with Client(build_server(service)) as client:
        bad_weights = dict(EXPERIMENT, variants=[{"key": "a", "is_control": True, "weight": 0.7},
                                                 {"key": "b", "weight": 0.7}])
        assert "must sum to 1, got 1.4" in await refusal(client, "create_experiment", {"experiment": bad_weights})
        assert "less than or equal to 1" in await refusal(client, "create_experiment", {"experiment": dict(
            EXPERIMENT, variants=[{"key": "a", "is_control": True, "weight": 50}, {"key": "b", "weight": 50}])})
        await call(client, "create_experiment", {"experiment": EXPERIMENT})
        assert "is a draft" in await refusal(client, "record_result", {
            "experiment": "support-prompt-v2", "user_id": "u", "metric": "resolution_rate", "value": 1})
        await call(client, "start_experiment", {"experiment": "support-prompt-v2"})
        assert "only a draft can start" in await refusal(client, "start_experiment", {"experiment": "support-prompt-v2"})
        assert "no experiment with key or id 'ghost'" in await refusal(client, "get_variant", {"experiment": "ghost", "user_id": "u"})
        assert "not allowed" in await refusal(client, "postgres_query", {"sql": "DROP TABLE experiments"})


async def test_stdio_round_trip_assigns_like_this_process(service, pg_dsn):
    await service.create_experiment(EXPERIMENT)
    experiment = await service.start_experiment("support-prompt-v2")
    params = StdioServerParameters(command=sys.executable, args=["-m", "mcp_servers.postgres"], cwd=str(REPO),
                                   env={**os.environ, "DATABASE_URL": pg_dsn, "LOG_LEVEL": "WARNING"})
    users = [f"user-{i}" for i in range(12)]
    async with Client(params) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"get_variant", "postgres_query", "record_decision"} <= names
        remote = {}
        for user in users:
            remote[user] = await call(client, "get_variant", {"experiment": "support-prompt-v2", "user_id": user})
        assert "not declared" in await refusal(client, "record_result", {
            "experiment": "support-prompt-v2", "user_id": "user-0", "metric": "nope", "value": 1})
    spec = assignment_spec(experiment)
    # A service that reads before answering (the default answers a user it has not seen from the hash,
    # which gives the same variant, and records it behind the answer).
    async with open_service(dsn=pg_dsn, assignment_writes="before_answer") as reader:
        for user in users:
            assert remote[user]["source"] == "hash" and remote[user]["newly_recorded"]
            # the same variant, computed in this process from nothing but the seed and the user id ...
            assert experiment.variants[assign(spec, user).variation].key == remote[user]["variant_key"]
            # ... and recorded by the subprocess (its queued writes land before it exits), so this
            # process returns it as the user's assignment
            local = await reader.get_variant("support-prompt-v2", user)
            assert (local.source, local.variant_key) == ("recorded", remote[user]["variant_key"])


async def test_the_stdio_server_exits_with_a_clear_message_when_the_database_is_down():
    env = {**os.environ, "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mcp_servers.postgres", cwd=str(REPO), env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 2
    assert stdout == b""  # stdout is reserved for the protocol
    assert b"DATABASE_URL: cannot connect to PostgreSQL at 127.0.0.1:1/nowhere" in stderr
