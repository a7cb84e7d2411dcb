"""Experiment Intelligence server: the statistics engine and the decisions built on it.

    async with open_service(settings, backends=router.backends) as service:
        server = build_server(service)      # MCPServer with the tools

It reaches the registry (postgres), the event store (clickhouse) and memory
(chromadb) only through their MCP tools, via `backends` (name -> an object with
`async call(tool, arguments) -> structured dict`, e.g. the router's Backends).
The router passes its backends in (registry entry needs_backends=True); without
them, `open_service` opens the three servers itself (`peers.open_peers`: in this
process, or the remote ones settings.backends names), which is what
`python -m mcp_servers.intelligence` does.

The service is one class per capability (see `service`); pure parts: `mcp_servers.stats`
(the engine), `analysis` (sufficient statistics → results), `readout` (one experiment's
analysis), `decisions` (verdict rules, autopilot policies), `priors` (empirical priors),
`behavior` (kNN voting), `planning`, `narrative` (templates), `charts` (PNG).
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from schemas.settings import Settings, get_settings

from .decisions import POLICIES, AutopilotPolicy
from .peers import ToolBackend, open_peers
from .server import build_server
from .service import IntelligenceService


@asynccontextmanager
async def open_service(settings: Settings | None = None, backends: Mapping[str, ToolBackend] | None = None,
                       **overrides: Any) -> AsyncIterator[IntelligenceService]:
    """Yield the service over `backends`; without them, over peers opened here (`peers.open_peers`).

    Overrides: policy (an AutopilotPolicy instead of the one for settings.environment).
    """
    settings = settings or get_settings()
    policy: AutopilotPolicy | None = overrides.pop("policy", None)
    if overrides:
        raise TypeError(f"unknown open_service overrides: {sorted(overrides)}")
    if backends is not None:
        yield IntelligenceService(backends, settings, policy=policy)
        return
    async with open_peers(settings) as peers:
        yield IntelligenceService(peers, settings, policy=policy)


__all__ = ["POLICIES", "AutopilotPolicy", "IntelligenceService", "build_server", "open_service"]
