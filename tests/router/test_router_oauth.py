"""Issue 23: /mcp as an OAuth 2.1 resource server beside the static bearer token.

A local token issuer lives in the test: an RSA key, its JWKS (and an RFC 7662 introspection
endpoint) served by uvicorn on a free 127.0.0.1 port. The router's real HTTP app (build_http_app)
serves a router with its own read-only tools and a small in-process MCP server holding one
write tool and one read-only tool (NeonBlue's own annotations); a real MCP client talks to it over
streamable HTTP, and raw HTTP checks the refusals (status, body, WWW-Authenticate). No outside network.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from mcp_calls import readable  # type: ignore[import-not-found]
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mcp_router.gateway.backends import Backend
from mcp_router.gateway.router import Router, connected
from mcp_router.gateway.router_tools import build_router_tools
from mcp_router.runtime.embedded import free_port
from mcp_servers.annotations import READ_ONLY, WRITE
from schemas.settings import Settings

MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
LIST_TOOLS = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
READ, WRITE_SCOPE, BOTH = "experiments:read", "experiments:write", "experiments:read experiments:write"
STATIC = "static-token-of-the-owner"


def call(tool: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": tool, "arguments": arguments or {}}}


# ---------------------------------------------------------------- the local issuer


@dataclass
class Issuer:
    url: str
    key: rsa.RSAPrivateKey
    opaque: dict[str, dict[str, Any]]  # introspection: token -> its RFC 7662 answer

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/jwks"

    @property
    def introspection_url(self) -> str:
        return f"{self.url}/introspect"

    def mint(self, audience: str, scope: str = READ, *, key: rsa.RSAPrivateKey | None = None, kid: str = "k1",
             **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": self.url, "aud": audience, "sub": "alice", "client_id": "agent-7", "scope": scope,
                   "iat": now, "exp": now + 300, **claims}
        return jwt.encode(payload, key or self.key, algorithm="RS256", headers={"kid": kid})


@asynccontextmanager
async def uvicorn_app(app: Any) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def local_issuer() -> AsyncIterator[Issuer]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "k1", "alg": "RS256",
           "use": "sig"}
    opaque: dict[str, dict[str, Any]] = {}

    async def jwks(request: Request) -> JSONResponse:
        return JSONResponse({"keys": [jwk]})

    async def introspect(request: Request) -> JSONResponse:
        if request.headers.get("authorization") is None:  # the resource server authenticates itself
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        form = await request.form()
        return JSONResponse(opaque.get(str(form.get("token")), {"active": False}))

    app = Starlette(routes=[Route("/jwks", jwks), Route("/introspect", introspect, methods=["POST"])])
    async with uvicorn_app(app) as url:
        yield Issuer(url, key, opaque)


# ---------------------------------------------------------------- the router under test


def notes_backend() -> Backend:
    """A real MCP server with one write tool and one read-only tool, as NeonBlue annotates them."""
    mcp = MCPServer("notes")
    notes: list[str] = []

    @mcp.tool(annotations=WRITE)
    def add_note(text: str) -> str:
        """Add a note."""
        notes.append(text)
        return f"{len(notes)} notes"

    @mcp.tool(annotations=READ_ONLY)
    def count_notes() -> int:
        """How many notes there are."""
        return len(notes)

    return Backend("notes", mcp)


@dataclass
class Served:
    url: str
    resource: str
    issuer: Issuer

    def client(self, token: str | None) -> Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return Client(streamable_http_client(f"{self.url}/mcp", http_client=httpx.AsyncClient(headers=headers)))

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers=MCP_HEADERS)


@asynccontextmanager
async def oauth_server(tmp_path: Path, *, introspection: bool = False, static: str | None = STATIC,
                       **update: Any) -> AsyncIterator[Served]:
    from mcp_router.web.http_app import build_http_app

    async with local_issuer() as issuer:
        router = Router([])
        router.backends["router"] = Backend("router", build_router_tools(router))
        router.backends["notes"] = notes_backend()
        async with connected(router):
            port = free_port()
            verify = ({"oauth_introspection_url": issuer.introspection_url, "oauth_client_id": "neonblue",
                       "oauth_client_secret": SecretStr("s3cret")} if introspection else {"oauth_jwks_url": issuer.jwks_url})
            settings = Settings(_env_file=None, neonblue_home=tmp_path).model_copy(update={
                "http_port": port, "oauth_issuer": issuer.url, **verify, **update})
            app = build_http_app(router, settings, static)
            server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                   lifespan="on"))
            task = asyncio.create_task(server.serve())
            try:
                while not server.started:
                    if task.done():
                        task.result()
                    await asyncio.sleep(0.02)
                url = f"http://127.0.0.1:{port}"
                yield Served(url, f"{url}/mcp", issuer)
            finally:
                server.should_exit = True
                await task


# ---------------------------------------------------------------- metadata and the 401 pointer


async def test_no_token_is_401_pointing_at_the_protected_resource_metadata(tmp_path: Path) -> None:
    async with oauth_server(tmp_path) as served, served.http() as http:
        refused = await http.post("/mcp", json=LIST_TOOLS)
        challenge = refused.headers["www-authenticate"]
        metadata_url = f"{served.url}/.well-known/oauth-protected-resource/mcp"
        assert refused.status_code == 401
        assert challenge.startswith("Bearer ") and f'resource_metadata="{metadata_url}"' in challenge
        assert 'error="' not in challenge  # RFC 6750 §3.1: no error code when no credentials were sent
        metadata = await http.get(metadata_url)  # public: no token, no Origin needed
        root = await http.get("/.well-known/oauth-protected-resource")
    assert metadata.status_code == 200 and root.json() == metadata.json()
    document = metadata.json()
    assert document["resource"] == served.resource
    assert document["authorization_servers"] == [served.issuer.url]
    assert set(document["scopes_supported"]) == {READ, WRITE_SCOPE}
    assert document["bearer_methods_supported"] == ["header"]


async def test_without_oauth_settings_nothing_changes(tmp_path: Path) -> None:
    async with oauth_server(tmp_path, oauth_issuer=None) as served, served.http() as http:
        refused = await http.post("/mcp", json=LIST_TOOLS)
        metadata = await http.get("/.well-known/oauth-protected-resource/mcp")
        ok = await http.post("/mcp", json=LIST_TOOLS, headers={"Authorization": f"Bearer {STATIC}"})
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert refused.json() == {"error": "unauthorized", "detail": "missing or wrong bearer token"}
    assert metadata.status_code == 401  # no metadata route: behind the static token like any other path
    assert ok.status_code == 200


# ---------------------------------------------------------------- valid tokens, end to end


@readable
async def test_a_read_token_reads_and_a_write_token_writes_through_a_real_mcp_client(tmp_path: Path) -> None:
    async with oauth_server(tmp_path) as served:
        reader = served.issuer.mint(served.resource, READ)
        writer = served.issuer.mint(served.resource, BOTH)
        async with served.client(reader) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            status = await client.call_tool("router_status", {})
            count = await client.call_tool("count_notes", {})
        assert {"add_note", "count_notes", "router_status"} <= names
        assert not status.is_error and not count.is_error
        async with served.client(writer) as client:
            added = await client.call_tool("add_note", {"text": "ship it"})
            after = await client.call_tool("count_notes", {})
        assert not added.is_error and added.content[0].text == "1 notes"
        assert after.structured_content == {"result": 1}
        # experiments:write alone includes read.
        async with served.client(served.issuer.mint(served.resource, WRITE_SCOPE)) as client:
            assert not (await client.call_tool("count_notes", {})).is_error


async def test_the_audience_may_be_a_list_holding_the_resource(tmp_path: Path) -> None:
    async with oauth_server(tmp_path) as served, served.http() as http:
        token = served.issuer.mint(["https://other.example/api", served.resource + "/"], READ)
        ok = await http.post("/mcp", json=LIST_TOOLS, headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200 and ok.json()["result"]["tools"]


# ---------------------------------------------------------------- refused tokens


async def _refusal(served: Served, token: str, body: dict[str, Any] | None = None) -> httpx.Response:
    async with served.http() as http:
        return await http.post("/mcp", json=body or LIST_TOOLS, headers={"Authorization": f"Bearer {token}"})


async def test_expired_wrong_audience_wrong_issuer_and_wrong_signature_are_401(tmp_path: Path) -> None:
    async with oauth_server(tmp_path) as served:
        issuer, resource = served.issuer, served.resource
        other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = int(time.time())
        cases = {
            "the token has expired": issuer.mint(resource, BOTH, exp=now - 120, iat=now - 600),
            "audience is not this resource": issuer.mint("http://127.0.0.1:1/mcp", BOTH),
            "not issued by the configured issuer": issuer.mint(resource, BOTH, iss="https://evil.example"),
            "signature does not verify": issuer.mint(resource, BOTH, key=other_key),
            "no key of the issuer's JWKS": issuer.mint(resource, BOTH, key=other_key, kid="unknown"),
            "algorithm 'HS256' is not accepted": jwt.encode(
                {"iss": issuer.url, "aud": resource, "exp": now + 300, "scope": BOTH}, "x" * 32, algorithm="HS256"),
            "not a JWT": "definitely-not-a-jwt",
        }
        for reason, token in cases.items():
            refused = await _refusal(served, token)
            assert refused.status_code == 401, reason
            assert reason in refused.json()["detail"], (reason, refused.json())
            challenge = refused.headers["www-authenticate"]
            assert 'error="invalid_token"' in challenge and "resource_metadata=" in challenge, reason


@readable
async def test_a_read_only_token_calling_a_write_tool_is_refused_naming_the_scope(tmp_path: Path) -> None:
    async with oauth_server(tmp_path) as served:
        reader = served.issuer.mint(served.resource, READ)
        refused = await _refusal(served, reader, call("add_note", {"text": "sneaky"}))
        assert refused.status_code == 403
        body = refused.json()
        assert body["id"] == 2 and body["error"]["data"] == {"error": "insufficient_scope", "scope": WRITE_SCOPE,
                                                             "tool": "add_note"}
        assert "add_note" in body["detail"] and WRITE_SCOPE in body["detail"]
        challenge = refused.headers["www-authenticate"]
        assert 'error="insufficient_scope"' in challenge and f'scope="{WRITE_SCOPE}"' in challenge
        assert "resource_metadata=" in challenge
        # Through a real MCP client: the call fails with an error naming the scope, and nothing was written.
        async with served.client(reader) as client:
            with pytest.raises(MCPError) as failure:
                await client.call_tool("add_note", {"text": "sneaky"})
        assert "insufficient_scope" in failure.value.message and WRITE_SCOPE in failure.value.message
        async with served.client(reader) as client:
            assert (await client.call_tool("count_notes", {})).structured_content == {"result": 0}


async def test_a_token_without_any_experiments_scope_cannot_even_list(tmp_path: Path) -> None:
    async with oauth_server(tmp_path) as served:
        refused = await _refusal(served, served.issuer.mint(served.resource, "openid profile"))
    assert refused.status_code == 403 and READ in refused.json()["detail"]
    assert refused.json()["error"]["data"]["scope"] == READ


# ---------------------------------------------------------------- the static token, and the other routes


@readable
async def test_the_static_token_keeps_every_scope_and_oauth_tokens_stay_on_mcp(tmp_path: Path) -> None:
    async with oauth_server(tmp_path) as served:
        async with served.client(STATIC) as client:
            added = await client.call_tool("add_note", {"text": "by the owner"})
        assert not added.is_error
        token = served.issuer.mint(served.resource, BOTH)
        async with httpx.AsyncClient(base_url=served.url) as http:
            metrics_jwt = await http.get("/metrics", headers={"Authorization": f"Bearer {token}"})
            metrics_static = await http.get("/metrics", headers={"Authorization": f"Bearer {STATIC}"})
            wrong_static = await http.post("/mcp", json=LIST_TOOLS,
                                           headers={**MCP_HEADERS, "Authorization": "Bearer not-the-static-one"})
        assert metrics_jwt.status_code == 401  # the token's audience is /mcp, not the rest of the server
        assert metrics_static.status_code == 200
        assert wrong_static.status_code == 401 and 'error="invalid_token"' in wrong_static.headers["www-authenticate"]


async def test_oauth_works_without_a_static_token_on_loopback(tmp_path: Path) -> None:
    async with oauth_server(tmp_path, static=None) as served:
        async with served.http() as http:
            refused = await http.post("/mcp", json=LIST_TOOLS)
        ok = await _refusal(served, served.issuer.mint(served.resource, READ))
    assert refused.status_code == 401 and ok.status_code == 200


# ---------------------------------------------------------------- introspection instead of a JWKS


@readable
async def test_introspected_tokens_are_checked_for_activity_expiry_issuer_audience_and_scope(tmp_path: Path) -> None:
    async with oauth_server(tmp_path, introspection=True) as served:
        now = int(time.time())
        base = {"active": True, "iss": served.issuer.url, "aud": served.resource, "sub": "bob", "exp": now + 300}
        served.issuer.opaque.update({
            "opaque-reader": {**base, "scope": READ},
            "opaque-writer": {**base, "scope": BOTH},
            "opaque-expired": {**base, "scope": BOTH, "exp": now - 120},
            "opaque-elsewhere": {**base, "scope": BOTH, "aud": "https://other.example/mcp"},
            "opaque-inactive": {"active": False},
        })
        async with served.client("opaque-writer") as client:
            assert not (await client.call_tool("add_note", {"text": "introspected"})).is_error
        assert (await _refusal(served, "opaque-reader", call("count_notes"))).status_code == 200
        assert (await _refusal(served, "opaque-reader", call("add_note", {"text": "x"}))).status_code == 403
        for token, reason in (("opaque-expired", "expired"), ("opaque-elsewhere", "audience"),
                              ("opaque-inactive", "not active"), ("never-issued", "not active")):
            refused = await _refusal(served, token)
            assert refused.status_code == 401 and reason in refused.json()["detail"], token


def test_oauth_settings_need_exactly_one_way_to_verify(tmp_path: Path) -> None:
    from mcp_router.web.oauth import OAuthConfig
    from schemas.errors import ConfigError

    base = Settings(_env_file=None, neonblue_home=tmp_path)
    assert OAuthConfig.from_settings(base) is None
    with pytest.raises(ConfigError, match="NEONBLUE_OAUTH_JWKS_URL"):
        OAuthConfig.from_settings(base.model_copy(update={"oauth_issuer": "https://issuer.example"}))
    config = OAuthConfig.from_settings(base.model_copy(update={
        "oauth_issuer": "https://issuer.example", "oauth_jwks_url": "https://issuer.example/jwks",
        "oauth_resource": "https://mcp.example.com/mcp"}))
    assert config.metadata_url == "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"


def test_oauth_settings_read_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NEONBLUE_OAUTH_ISSUER", "https://issuer.example")
    monkeypatch.setenv("NEONBLUE_OAUTH_JWKS_URL", "https://issuer.example/jwks")
    monkeypatch.setenv("NEONBLUE_OAUTH_RESOURCE", "https://mcp.example.com/mcp")
    settings = Settings(_env_file=None, neonblue_home=tmp_path)
    assert (settings.oauth_issuer, settings.oauth_jwks_url, settings.oauth_resource) == (
        "https://issuer.example", "https://issuer.example/jwks", "https://mcp.example.com/mcp")


@readable
async def test_list_results_carry_the_caching_hints_of_2026_07_28(tmp_path: Path) -> None:
    """SEP-2549: tools/prompts/resources lists may be reused for a minute, privately."""
    async with oauth_server(tmp_path) as served, served.client(STATIC) as client:
        results = [await client.list_tools(), await client.list_prompts(), await client.list_resources(),
                   await client.list_resource_templates()]
    assert [(r.ttl_ms, r.cache_scope) for r in results] == [(60_000, "private")] * 4
