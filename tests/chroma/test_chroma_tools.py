"""Every tool through an in-memory MCP client, the catalogue's schemas and annotations,
a stdio round trip through `python -m mcp_servers.chroma`, and the HttpClient mode
against a real `chroma run` server."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp_calls import call, refusal  # type: ignore[import-not-found]

from mcp_servers.chroma import build_server, open_service

REPO = Path(__file__).resolve().parents[2]
READ_ONLY = {"semantic_experiment_search", "find_similar_user_journeys", "search_optimization_patterns",
             "collection_stats"}
UPSERTS = {"store_experiment_context", "store_user_journey", "store_optimization_pattern", "sync_from_registry"}

EXPERIMENT = {"key": "checkout-1step", "name": "2-step vs 1-step checkout", "type": "ui",
              "segment": "mobile users", "variants": [{"key": "two_step", "is_control": True}, {"key": "one_step"}]}




async def test_the_catalogue_has_typed_schemas_and_honest_annotations(service):
    async with Client(build_server(service)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == READ_ONLY | UPSERTS
    for name, tool in tools.items():
        assert re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name)
        assert tool.output_schema is not None and tool.output_schema.get("type") == "object", name
        assert tool.description and "Example" in tool.description, name
        hints = tool.annotations
        assert hints.open_world_hint is False and hints.idempotent_hint is True, name
        if name in READ_ONLY:
            assert (hints.read_only_hint, hints.destructive_hint) == (True, False), name
        else:  # an upsert may overwrite the stored document of the same id
            assert (hints.read_only_hint, hints.destructive_hint) == (False, True), name
    search = tools["semantic_experiment_search"].input_schema["properties"]
    assert search["limit"]["maximum"] == 100 and search["limit"]["minimum"] == 1


async def test_every_tool_over_an_in_memory_client(service, corpus):
    async with Client(build_server(service)) as client:
        stored = await call(client, "store_experiment_context", {
            "experiment": EXPERIMENT, "analysis": {"winner": "one_step", "lift": 0.15, "p_value": 0.003}})
        assert (stored["status"], stored["id"]) == ("created", "checkout-1step")
        synced = await call(client, "sync_from_registry", {"experiments": [i["record"] for i in corpus["experiments"][4:10]]})
        assert synced["created"] == 6
        found = await call(client, "semantic_experiment_search", {"query": "fewer checkout steps on phones",
                                                                  "where": {"outcome": "success"}, "limit": 3})
        assert found["hits"][0]["id"] == "checkout-1step" and 0 < found["hits"][0]["similarity"] <= 1
        journey = await call(client, "store_user_journey", {"journey": {
            "steps": ["landing_page", "product_detail", "add_to_cart", "purchase"], "device_type": "mobile"}})
        similar = await call(client, "find_similar_user_journeys", {"query": "phone user buys a product"})
        assert similar["hits"][0]["id"] == journey["id"]
        await call(client, "store_optimization_pattern", {"pattern": {
            "optimization_type": "checkout_flow", "outcome": "success", "improvement": 0.35,
            "description": "Reduced checkout steps from 4 to 2"}})
        patterns = await call(client, "search_optimization_patterns", {"query": "simpler checkout"})
        assert patterns["hits"][0]["metadata"]["improvement"] == 0.35
        stats = await call(client, "collection_stats", {})
        assert [c["count"] for c in stats["collections"]] == [7, 1, 1]


async def test_bad_arguments_come_back_as_errors_with_the_reason(service):
    async with Client(build_server(service)) as client:
        assert "unknown operator '$regex'" in await refusal(client, "semantic_experiment_search", {
            "query": "checkout", "where": {"name": {"$regex": "check.*"}}})
        assert "unknown field 'colour'" in await refusal(client, "search_optimization_patterns", {
            "query": "checkout", "where": {"colour": "red"}})
        assert "query must be non-empty" in await refusal(client, "semantic_experiment_search", {"query": "  "})
        assert "limit" in await refusal(client, "semantic_experiment_search", {"query": "checkout", "limit": 500})
        assert "outcome" in await refusal(client, "store_optimization_pattern", {"pattern": {
            "optimization_type": "pricing", "description": "x", "outcome": "great"}})
        assert "no experiments given and no registry connected" in await refusal(client, "sync_from_registry", {})


async def test_sync_pulls_from_the_registry_given_to_build_server(service, corpus):
    def registry():
        return [item["record"] for item in corpus["experiments"][:3]]

    async with Client(build_server(service, registry=registry)) as client:
        report = await call(client, "sync_from_registry", {})
    assert (report["received"], report["created"]) == (3, 3)


async def test_stdio_round_trip(tmp_path):
    env = {**os.environ, "NEONBLUE_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "LOG_LEVEL": "WARNING"}
    env.pop("CHROMA_URL", None)
    params = StdioServerParameters(command=sys.executable, args=["-m", "mcp_servers.chroma"], cwd=str(REPO), env=env)
    async with Client(params) as client:
        assert {t.name for t in (await client.list_tools()).tools} == READ_ONLY | UPSERTS
        await call(client, "store_experiment_context", {"experiment": EXPERIMENT})
        await call(client, "store_experiment_context", {"experiment": {
            "key": "annual-discount", "name": "Annual plan discount 20% vs 15%", "type": "feature"}})
        found = await call(client, "semantic_experiment_search", {"query": "shorter checkout on mobile", "limit": 2})
        assert [hit["id"] for hit in found["hits"]] == ["checkout-1step", "annual-discount"]
        assert "unknown operator" in await refusal(client, "semantic_experiment_search", {
            "query": "x", "where": {"lift": {"$between": [0, 1]}}})
    # the subprocess kept its data under its own NEONBLUE_HOME
    assert (tmp_path / "home" / "chroma" / "chroma.sqlite3").exists()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def chroma_server(tmp_path):
    """A real Chroma server (`chroma run` from the pip package) on a free port."""
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).with_name("chroma")), "run", "--path", str(tmp_path / "server"),
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail("chroma run exited")
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("chroma run did not listen within 60 s")
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=30)


async def test_http_client_mode_against_a_chroma_server(chroma_server, embedding_model):
    async with open_service(url=chroma_server) as service:
        await service.store_experiment_context(EXPERIMENT)
        assert (await service.collection_stats()).backend == f"http:{chroma_server}"
    async with open_service(url=chroma_server) as again:  # a second client sees the same data
        found = await again.semantic_experiment_search("one-page checkout for phones", n_results=1)
        assert found.hits[0].id == "checkout-1step"
        stats = await again.collection_stats()
        experiments = next(c for c in stats.collections if c.name == "experiments")
        assert experiments.embedding_function.startswith("neonblue-local-minilm:")
        assert experiments.hnsw["ef_search"] >= 200
