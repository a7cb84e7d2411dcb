"""The REST API served for real: uvicorn on a free loopback port, the router's HTTP app
(bearer auth + rate limiting middleware) with the REST routes, the postgres service
in-process on the test's own PostgreSQL database, and an httpx client.

`rest_api` is a factory of async context managers, entered INSIDE the test body: anyio
task groups (the router's connections, the app's lifespan) must enter and exit in one task.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from mcp_router.gateway.backends import Backend
from mcp_router.gateway.router import Router, connected
from mcp_router.runtime.embedded import free_port
from mcp_router.web.http_app import build_http_app
from mcp_router.web.rest import rest_routes
from mcp_servers.postgres import build_server, open_service
from schemas.settings import Settings

TOKEN = "rest-test-token"


@dataclass
class RestApi:
    url: str
    token: str | None
    http: httpx.AsyncClient  # authorised, base_url set
    router: Router
    service: Any

    async def create_running(self, key: str, **fields: Any) -> dict[str, Any]:
        """Create and start a two-arm experiment through the API itself."""
        body = {"key": key, "name": key, "type": "feature", "primary_metric": "conversion",
                "variants": [{"key": "control", "is_control": True}, {"key": "treatment"}], **fields}
        created = await self.http.post("/api/v1/experiments/", json=body)
        assert created.status_code == 201, created.text
        started = await self.http.post(f"/api/v1/experiments/{key}/start")
        assert started.status_code == 200, started.text
        return started.json()


@asynccontextmanager
async def _serve(app: Any) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()  # raise the startup error
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
def rest_api(pg_dsn: str, ch_database: str, chdb_path: Path) -> Callable[..., AbstractAsyncContextManager[RestApi]]:
    """`async with rest_api(token=..., rate_limit_per_minute=...) as api:` inside the test.

    The router holds the postgres server in-process (as `neonblue up` does); with
    intelligence=True also ClickHouse (chDB, this test's database) and the Experiment
    Intelligence server over the router's backends (no Chroma: similar experiments are skipped);
    intelligence="backend" leaves it out of the in-process services, so REST reaches it through the gateway.
    """

    @asynccontextmanager
    async def open_api(*, token: str | None = TOKEN, postgres_in_process: bool = True,
                       intelligence: bool | str = False, **settings: Any) -> AsyncIterator[RestApi]:
        # model_copy: some fields (rate_limit_per_minute...) are only read from their env alias at init.
        config = Settings(_env_file=None, database_url=pg_dsn, clickhouse_database=ch_database,
                          neonblue_home=chdb_path.parent).model_copy(update={"rate_limit_per_minute": 100_000, **settings})
        async with AsyncExitStack() as stack:
            service = await stack.enter_async_context(open_service(config))
            router = Router([])
            if postgres_in_process:
                router.services["postgres"] = service
                router.backends["postgres"] = Backend("postgres", build_server(service))
            if intelligence:
                from mcp_servers import clickhouse
                from mcp_servers import intelligence as intel

                ch = await stack.enter_async_context(clickhouse.open_service(config))
                router.services["clickhouse"] = ch
                router.backends["clickhouse"] = Backend("clickhouse", clickhouse.build_server(ch))
                brain = await stack.enter_async_context(intel.open_service(config, backends=router.backends))
                if intelligence != "backend":  # "backend": reached only through the gateway, as a remote one is
                    router.services["intelligence"] = brain
                router.backends["intelligence"] = Backend("intelligence", intel.build_server(brain))
            async with connected(router):
                app = build_http_app(router, config, token, extra_routes=rest_routes(router))
                async with _serve(app) as url:
                    headers = {"Authorization": f"Bearer {token}"} if token else {}
                    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
                        yield RestApi(url, token, http, router, service)

    return open_api
