from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
import uvicorn

from mcp_router.gateway.router import Router
from mcp_router.runtime.embedded import free_port
from mcp_router.web.http_app import build_http_app


@dataclass
class RunningApp:
    url: str
    token: str | None


@pytest.fixture
def serve_http():
    """Serve a router's HTTP app with uvicorn on a free loopback port, inside the test's loop."""
    servers: list[uvicorn.Server] = []
    tasks: list[asyncio.Task] = []

    async def start(router: Router, settings, token: str | None, extra_routes=None) -> RunningApp:
        port = free_port()
        settings = settings.model_copy(update={"http_port": port})
        app = build_http_app(router, settings, token, extra_routes)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
        servers.append(server)
        tasks.append(asyncio.create_task(server.serve()))
        while not server.started:
            await asyncio.sleep(0.02)
        return RunningApp(f"http://127.0.0.1:{port}", token)

    yield start
    for server in servers:
        server.should_exit = True
