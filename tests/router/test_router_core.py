"""The router as a front door: catalogue, dispatch, errors, classification, HTTP auth."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from mcp_router.gateway.backends import Backend, CircuitBreaker
from mcp_router.gateway.router import Router, build_catalogue, connected
from mcp_router.gateway.router_tools import build_router_tools
from schemas.settings import Settings


@asynccontextmanager
async def bare_router() -> AsyncIterator[Router]:
    """A router with only its own tools. (Opened inside each test: anyio task groups must
    enter and exit in one task, which async-generator fixtures do not guarantee.)"""
    router = Router([])
    router.backends["router"] = Backend("router", build_router_tools(router))
    async with connected(router):
        yield router


async def test_unknown_tool_is_a_json_rpc_invalid_params_error() -> None:
    async with bare_router() as router:
        async with Client(router.server) as client:
            with pytest.raises(MCPError) as err:
                await client.call_tool("no_such_tool", {})
        assert err.value.code == -32602
        assert "no_such_tool" in err.value.message


async def test_forwarded_results_do_not_reveal_the_backend() -> None:
    async with bare_router() as router:
        async with Client(router.server) as client:
            result = await client.call_tool("router_status", {})
        server_info = (result.meta or {}).get("io.modelcontextprotocol/serverInfo", {})
        assert server_info.get("name") != "router"  # the backend's own name is stripped; the router may add its own
        assert result.structured_content["backends"][0]["name"] == "router"


async def test_classify_event_tool_routes_a_concluded_experiment_to_registry_then_memory() -> None:
    async with bare_router() as router:
        async with Client(router.server) as client:
            result = await client.call_tool("classify_event", {"event": {
                "event_id": "e1", "event_type": "experiment_concluded", "timestamp": "2026-11-01T10:00:00Z",
                "user_id": "system", "experiment_id": "checkout-1step"}})
            bad = await client.call_tool("classify_event", {"event": {"event_id": "e2", "event_type": "teleport"}})
        assert result.structured_content["primary"] == "postgres"
        assert "chromadb" in result.structured_content["secondary"]
        assert result.structured_content["priority"] == "high"
        assert bad.is_error and "event_type" in bad.content[0].text


async def test_prompts_and_resources_are_listed() -> None:
    async with bare_router() as router:
        async with Client(router.server) as client:
            prompts = {p.name for p in (await client.list_prompts()).prompts}
            templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
            schema = await client.read_resource("schema://event")
        assert {"analyze_experiment", "design_experiment"} <= prompts
        assert "experiment://{key}" in templates
        assert '"event_type"' in schema.contents[0].text


def _backend_with_tool(server: str, tool_name: str) -> Backend:
    from mcp.server.mcpserver import MCPServer

    mcp = MCPServer(server)

    @mcp.tool(name=tool_name)
    def anything() -> str:
        """A tool."""
        return server

    backend = Backend(server, mcp)
    backend.tools = anyio.run(mcp.list_tools)
    return backend


def test_colliding_names_get_a_server_prefix_and_stay_unique_within_64_chars() -> None:
    long_name = "compute_" + "x" * 56
    backends = [_backend_with_tool("postgres", "describe_schema"), _backend_with_tool("clickhouse", "describe_schema"),
                _backend_with_tool("chromadb", long_name), _backend_with_tool("intelligence", long_name),
                _backend_with_tool("router", "route_query")]
    cat = build_catalogue(backends)
    assert {"postgres_describe_schema", "clickhouse_describe_schema", "route_query"} <= set(cat.tools)
    assert cat.routes["clickhouse_describe_schema"].original_name == "describe_schema"
    long_ones = [n for n in cat.tools if n.startswith(("chromadb_", "intelligence_"))]
    assert len(long_ones) == 2 and all(len(n) <= 64 for n in long_ones)
    assert build_catalogue(backends).tools.keys() == cat.tools.keys()  # stable across rebuilds


def test_circuit_breaker_opens_after_threshold_and_half_opens_later() -> None:
    breaker = CircuitBreaker(threshold=2, reset_after=0.05)
    breaker.record_failure()
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    import time

    time.sleep(0.06)
    assert breaker.state == "half_open" and breaker.allow()
    breaker.record_failure()  # a failed probe re-opens at once
    assert breaker.state == "open"
    time.sleep(0.06)
    breaker.record_success()
    assert breaker.state == "closed"


async def test_http_requires_the_bearer_token_and_health_is_public(serve_http) -> None:
    async with bare_router() as router:
        app = await serve_http(router, Settings(), token="right-token")
        async with httpx.AsyncClient(base_url=app.url) as http:
            assert (await http.get("/health")).text == "OK"
            body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
            headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
            missing = await http.post("/mcp", json=body, headers=headers)
            wrong = await http.post("/mcp", json=body, headers={**headers, "Authorization": "Bearer wrong"})
            metrics_denied = await http.get("/metrics")
            metrics_ok = await http.get("/metrics", headers={"Authorization": "Bearer right-token"})
        assert missing.status_code == 401 and wrong.status_code == 401
        assert metrics_denied.status_code == 401
        assert "neonblue_tool_calls_total" in metrics_ok.text

        from mcp.client.streamable_http import streamable_http_client

        http = httpx.AsyncClient(headers={"Authorization": "Bearer right-token"})
        async with Client(streamable_http_client(f"{app.url}/mcp", http_client=http)) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            status = await client.call_tool("router_status", {})
        assert {"router_status", "route_query", "classify_event"} <= names
        assert status.structured_content["tools"] >= 3


async def test_rate_limit_answers_429_per_client(serve_http) -> None:
    async with bare_router() as router:
        settings = Settings().model_copy(update={"rate_limit_per_minute": 3})
        app = await serve_http(router, settings, token="t")
        async with httpx.AsyncClient(base_url=app.url, headers={"Authorization": "Bearer t"}) as http:
            codes = [(await http.get("/metrics")).status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200]
        assert codes[3] == 429


def test_http_refuses_a_non_loopback_address_without_a_token(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("NEONBLUE_HTTP_TOKEN", "HTTP_TOKEN")}
    env.update(NEONBLUE_HOME=str(tmp_path), NEONBLUE_HTTP_HOST="0.0.0.0")
    done = subprocess.run([sys.executable, "-m", "mcp_router", "serve", "--http"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("neonblue: NEONBLUE_HTTP_TOKEN:")
