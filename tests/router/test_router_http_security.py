"""Issue 16 on the router's HTTP app: a blank token never turns auth off; Host/Origin are checked
on every route; bodies are JSON; the rate limiter is keyed by principal or address (never the raw
Authorization header), limits failed authentication and keeps a bounded table.

The app is the real one (build_http_app over a router with its own tools), served by uvicorn on a
free loopback port; the tests that need many client addresses call it in-process through httpx's
ASGI transport, which sets the peer address of each request."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

from mcp_router.gateway.backends import Backend
from mcp_router.gateway.router import Router, connected
from mcp_router.gateway.router_tools import build_router_tools
from mcp_router.runtime.embedded import ConfigError, free_port
from mcp_router.runtime.serving import resolve_token, token_file
from mcp_router.web.http_app import HostPolicy, build_http_app
from schemas.settings import Settings

MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
LIST_TOOLS = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}


@asynccontextmanager
async def bare_router() -> AsyncIterator[Router]:
    router = Router([])
    router.backends["router"] = Backend("router", build_router_tools(router))
    async with connected(router):
        yield router


@asynccontextmanager
async def served(app, host: str = "127.0.0.1") -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on"))
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


def settings(tmp_path: Path, **update) -> Settings:
    return Settings(_env_file=None, neonblue_home=tmp_path).model_copy(update=update)


def in_process(app, address: str = "127.0.0.1", **kwargs) -> httpx.AsyncClient:
    """A client whose requests reach the app from `address` (no socket: the ASGI call itself)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(address, 40000)),
                             base_url="http://127.0.0.1:8765", **kwargs)


# ---------------------------------------------------------------- 1. an empty token is no token


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_a_blank_token_setting_is_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, blank: str) -> None:
    monkeypatch.setenv("NEONBLUE_HTTP_TOKEN", blank)
    assert Settings(_env_file=None, neonblue_home=tmp_path).http_token is None
    monkeypatch.setenv("NEONBLUE_HTTP_TOKEN", "  padded  ")
    assert Settings(_env_file=None, neonblue_home=tmp_path).http_token.get_secret_value() == "padded"


def test_a_blank_token_file_is_absent_and_the_owner_replaces_it(tmp_path: Path) -> None:
    config = settings(tmp_path)
    path = token_file(config)
    path.parent.mkdir(parents=True)
    path.write_text("  \n")
    assert resolve_token(config, create=False) is None
    fresh = resolve_token(config, create=True)
    assert fresh and len(fresh) >= 32
    assert path.read_text() == fresh
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert resolve_token(config, create=False) == fresh
    # A blank explicit token (model_copy skips validation) still falls through to the file.
    from pydantic import SecretStr

    assert resolve_token(config.model_copy(update={"http_token": SecretStr(" ")}), create=False) == fresh


@pytest.mark.parametrize("blank", ["", "  "])
async def test_the_middleware_never_runs_open_with_a_blank_token(tmp_path: Path, blank: str) -> None:
    async with bare_router() as router:
        with pytest.raises(ConfigError, match="NEONBLUE_HTTP_TOKEN"):
            build_http_app(router, settings(tmp_path), blank)
        with pytest.raises(ConfigError, match="NEONBLUE_HTTP_TOKEN"):  # no token off loopback, even in-process
            build_http_app(router, settings(tmp_path, http_host="0.0.0.0"), None)


def _serve_http(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # DATABASE_URL points at a closed port: were the token accepted, the server would fail there
    # (another message) instead of starting an embedded PostgreSQL.
    env = {**env, "DATABASE_URL": f"postgresql://nobody@127.0.0.1:{free_port()}/x", "NEONBLUE_HTTP_HOST": "0.0.0.0",
           "NEONBLUE_HTTP_PORT": str(free_port()), "NEONBLUE_BACKEND_TIMEOUT": "5", "LOG_LEVEL": "WARNING"}
    return subprocess.run([sys.executable, "-m", "mcp_router", "serve", "--http"], env=env, capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.mark.parametrize("blank", ["", "   "])
def test_serve_refuses_a_blank_token_env_off_loopback(tmp_path: Path, blank: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("HTTP_TOKEN",)}
    env.update(NEONBLUE_HOME=str(tmp_path), NEONBLUE_HTTP_TOKEN=blank)
    done = _serve_http(env)
    lines = [line for line in done.stderr.splitlines() if line.startswith("neonblue:")]
    assert done.returncode == 2 and lines, done.stderr[-2000:]
    assert lines[0].startswith("neonblue: NEONBLUE_HTTP_TOKEN:"), done.stderr[-2000:]
    assert "Traceback" not in done.stderr


def test_serve_refuses_a_blank_token_file_off_loopback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("NEONBLUE_HTTP_TOKEN", "HTTP_TOKEN")}
    env.update(NEONBLUE_HOME=str(tmp_path))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "http_token").write_text(" \n")
    done = _serve_http(env)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "neonblue: NEONBLUE_HTTP_TOKEN:" in done.stderr, done.stderr[-2000:]


# ---------------------------------------------------------------- 4. Host, Origin, JSON bodies


async def test_a_foreign_host_is_refused_on_every_route_but_health(tmp_path: Path) -> None:
    async with bare_router() as router:
        app = build_http_app(router, settings(tmp_path), None)
        async with served(app) as url, httpx.AsyncClient(base_url=url) as http:
            port = url.rsplit(":", 1)[1]
            evil = {"Host": "evil.example.com"}
            for method, path, kwargs in [("GET", "/metrics", {}), ("GET", "/api/v1/experiments/", {}),
                                         ("GET", "/openapi.json", {}), ("GET", "/nowhere", {}),
                                         ("POST", "/mcp", {"json": LIST_TOOLS, "headers": MCP_HEADERS})]:
                refused = await http.request(method, path, **{**kwargs, "headers": {**kwargs.get("headers", {}),
                                                                                   **evil}})
                assert refused.status_code == 421, (path, refused.text)
                assert refused.json()["error"] == "misdirected_request"
                assert "evil.example.com" in refused.json()["detail"]
            assert (await http.get("/health", headers=evil)).text == "OK"  # public, reveals nothing
            for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "localhost"):
                assert (await http.get("/metrics", headers={"Host": host})).status_code == 200, host
            listed = await http.post("/mcp", json=LIST_TOOLS, headers=MCP_HEADERS)
            assert listed.status_code == 200 and "router_status" in listed.text


async def test_a_foreign_origin_and_non_json_bodies_are_refused(tmp_path: Path) -> None:
    async with bare_router() as router:
        app = build_http_app(router, settings(tmp_path), None)
        async with served(app) as url, httpx.AsyncClient(base_url=url) as http:
            for origin in ("http://evil.example.com", "null", "http://localhost:9999"):
                cross = await http.post("/mcp", json=LIST_TOOLS, headers={**MCP_HEADERS, "Origin": origin})
                assert cross.status_code == 403, origin
                assert cross.json()["error"] == "forbidden_origin"
            same = await http.post("/mcp", json=LIST_TOOLS, headers={**MCP_HEADERS, "Origin": url})
            assert same.status_code == 200
            for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
                plain = await http.post("/mcp", content=b'{"jsonrpc": "2.0"}',
                                        headers={"Accept": MCP_HEADERS["Accept"], "Content-Type": content_type})
                assert plain.status_code == 415, content_type
                assert plain.json() == {"error": "unsupported_media_type",
                                        "detail": "request bodies must be Content-Type: application/json"}
            untyped = await http.post("/api/v1/experiments/", content=b"{}", headers={"Content-Type": ""})
            assert untyped.status_code == 415
            charset = await http.post("/mcp", content=b"{}",
                                      headers={**MCP_HEADERS, "Content-Type": "application/json; charset=utf-8"})
            assert charset.status_code != 415


def test_host_policy_for_each_kind_of_bind_address(tmp_path: Path) -> None:
    loopback = HostPolicy.from_settings(settings(tmp_path))
    assert loopback.host_allowed("127.0.0.1:8765") and loopback.host_allowed("LOCALHOST:1")
    assert not loopback.host_allowed("evil.example.com:8765") and not loopback.host_allowed(None)
    assert not loopback.host_allowed("localhost.evil.example.com")

    every_interface = HostPolicy.from_settings(settings(tmp_path, http_host="0.0.0.0"))
    assert every_interface.hosts is None  # token mandatory there; the Host is whatever the proxy forwards
    assert every_interface.host_allowed("neonblue.internal:8765")

    listed = HostPolicy.from_settings(settings(tmp_path, http_host="0.0.0.0",
                                               allowed_hosts=["NeonBlue.example.com", "api.example.com:443"],
                                               allowed_origins=["https://app.example.com", "http://localhost:*"]))
    assert listed.host_allowed("neonblue.example.com") and listed.host_allowed("neonblue.example.com:8765")
    assert listed.host_allowed("api.example.com:443") and not listed.host_allowed("api.example.com:80")
    assert listed.host_allowed("127.0.0.1:8765")  # the loopback interface is one of "every interface"
    assert listed.host_allowed("0.0.0.0:8765")  # how `neonblue status` and the chat address such an owner
    assert not listed.host_allowed("evil.example.com")
    assert listed.origin_allowed("https://app.example.com", "neonblue.example.com")
    assert listed.origin_allowed("http://localhost:5173", "neonblue.example.com")
    assert listed.origin_allowed("https://neonblue.example.com", "neonblue.example.com")  # same origin
    assert not listed.origin_allowed("https://evil.example.com", "neonblue.example.com")

    one_address = HostPolicy.from_settings(settings(tmp_path, http_host="10.1.2.3"))
    assert one_address.host_allowed("10.1.2.3:8765") and not one_address.host_allowed("localhost:8765")


def test_allowed_hosts_and_origins_read_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NEONBLUE_ALLOWED_HOSTS", "a.example.com, b.example.com:8443")
    monkeypatch.setenv("NEONBLUE_ALLOWED_ORIGINS", '["https://app.example.com"]')
    s = Settings(_env_file=None, neonblue_home=tmp_path)
    assert s.allowed_hosts == ["a.example.com", "b.example.com:8443"]
    assert s.allowed_origins == ["https://app.example.com"]


# ---------------------------------------------------------------- 5. the rate limiter


async def test_rotating_the_authorization_header_does_not_bypass_the_limit(tmp_path: Path) -> None:
    variants = ["Bearer t", "bearer t", "BEARER t", "Bearer  t", "Bearer   t", "bEaReR t"]
    async with bare_router() as router:
        app = build_http_app(router, settings(tmp_path, rate_limit_per_minute=3), "t")
        async with served(app) as url, httpx.AsyncClient(base_url=url) as http:
            codes = [(await http.get("/metrics", headers={"Authorization": v})).status_code for v in variants]
        assert codes == [200, 200, 200, 429, 429, 429]

        open_app = build_http_app(router, settings(tmp_path, rate_limit_per_minute=3), None)
        async with served(open_app) as url, httpx.AsyncClient(base_url=url) as http:
            codes = [(await http.get("/metrics", headers={"Authorization": f"x{i}"})).status_code for i in range(6)]
        assert codes == [200, 200, 200, 429, 429, 429]


async def test_failed_authentication_is_limited_per_client_address(tmp_path: Path) -> None:
    async with bare_router() as router:
        app = build_http_app(router, settings(tmp_path, auth_failure_limit_per_minute=4), "right")
        async with served(app) as url:
            attacker = httpx.AsyncClient(base_url=url, transport=httpx.AsyncHTTPTransport(local_address="127.0.0.2"))
            async with attacker, httpx.AsyncClient(base_url=url, headers={"Authorization": "Bearer right"}) as user:
                codes = [(await attacker.get("/metrics", headers={"Authorization": f"Bearer guess{i}"})).status_code
                         for i in range(7)]
                assert codes == [401, 401, 401, 401, 429, 429, 429]
                locked = await attacker.get("/api/v1/experiments/", headers={"Authorization": "Bearer right"})
                assert locked.status_code == 429  # past the limit the token is not compared at all
                assert locked.json()["error"] == "rate_limited" and int(locked.headers["retry-after"]) >= 1
                assert (await user.get("/metrics")).status_code == 200  # another address is unaffected
                assert (await attacker.get("/health")).status_code == 200


async def test_the_bucket_table_stays_small_whatever_the_headers_and_addresses(tmp_path: Path) -> None:
    async with bare_router() as router:
        app = build_http_app(router, settings(tmp_path), None)
        async with in_process(app) as http:
            for i in range(300):  # distinct 64 KB headers used to be 300 buckets keyed by 64 KB strings
                big = f"Bearer {i:06d}" + "x" * 65_536
                assert (await http.get("/metrics", headers={"Authorization": big})).status_code == 200
        assert len(app.buckets) == 1

        from mcp_router.web.http_app import BucketTable

        app.buckets = BucketTable(max_entries=100)
        for i in range(1_000):
            async with in_process(app, f"10.0.{i // 250}.{i % 250}") as http:
                assert (await http.get("/metrics")).status_code == 200
            assert len(app.buckets) <= 100
        # IPv6 peers count per /64: rotating the interface id inside one network shares one bucket.
        limited = build_http_app(router, settings(tmp_path, rate_limit_per_minute=2), None)
        codes = []
        for i in range(4):
            async with in_process(limited, f"2001:db8::{i + 1:x}") as http:
                codes.append((await http.get("/metrics")).status_code)
        assert codes == [200, 200, 429, 429]
