"""Experiment Intelligence server: the statistics engine and the decisions built on it.

    async with open_service(settings, backends=router.backends) as service:
        server = build_server(service)      # MCPServer with the tools

It reaches the registry (postgres), the event store (clickhouse) and memory
(chromadb) only through their MCP tools, via `backends` (name -> an object with
`async call(tool, arguments) -> structured dict`, e.g. the router's Backends).
The router passes its backends in (registry entry needs_backends=True); without
them, `open_service` opens a router of its own in this process (what
`python -m mcp_servers.intelligence` does).

Pure parts: `stats` (the engine), `analysis` (sufficient statistics → results),
`decisions` (verdict rules, autopilot policies), `priors` (empirical priors),
`behavior` (kNN voting), `planning`, `narrative` (templates), `charts` (PNG).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from schemas.settings import Settings, get_settings

from .decisions import POLICIES, AutopilotPolicy
from .peers import ToolBackend
from .server import build_server
from .service import IntelligenceService


@asynccontextmanager
async def open_service(settings: Settings | None = None, backends: Mapping[str, ToolBackend] | None = None,
                       **overrides: Any) -> AsyncIterator[IntelligenceService]:
    """Yield the service over `backends`; without them, over a router opened here (its in-process servers).

    Overrides: policy (an AutopilotPolicy instead of the one for settings.environment).
    """
    settings = settings or get_settings()
    policy: AutopilotPolicy | None = overrides.pop("policy", None)
    if overrides:
        raise TypeError(f"unknown open_service overrides: {sorted(overrides)}")
    if backends is not None:
        yield IntelligenceService(backends, settings, policy=policy)
        return
    from mcp_router.serving import open_router  # the router imports the registry, which imports us lazily

    async with open_router(settings) as router:
        yield IntelligenceService(router.backends, settings, policy=policy)


__all__ = ["POLICIES", "AutopilotPolicy", "IntelligenceService", "build_server", "open_service"]
