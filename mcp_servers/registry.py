"""Where each specialised server lives, so the router, the CLI and the tests
build them one way: `open_service(settings, ...)` then `build_server(service)`.
"""

from __future__ import annotations

import importlib
import importlib.util
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from mcp.server.mcpserver import MCPServer

from schemas.settings import Settings


@dataclass(frozen=True)
class ServerSpec:
    name: str  # public backend name used in config and tool prefixes
    module: str  # package exporting open_service and build_server
    needs_backends: bool = False  # Experiment Intelligence calls the other servers

    def available(self) -> bool:
        """True when the package exists and exports the server entry points."""
        if importlib.util.find_spec(self.module) is None:
            return False
        return hasattr(importlib.import_module(self.module), "open_service")

    def open_service(self, settings: Settings, **kwargs: Any) -> AbstractAsyncContextManager[Any]:
        return importlib.import_module(self.module).open_service(settings, **kwargs)

    def build_server(self, service: Any) -> MCPServer:
        return importlib.import_module(self.module).build_server(service)


SERVERS: dict[str, ServerSpec] = {
    spec.name: spec
    for spec in (
        ServerSpec("postgres", "mcp_servers.postgres"),
        ServerSpec("clickhouse", "mcp_servers.clickhouse"),
        ServerSpec("chromadb", "mcp_servers.chroma"),
        ServerSpec("intelligence", "mcp_servers.intelligence", needs_backends=True),
    )
}
