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

    async def serve_stdio(self, settings: Settings) -> None:
        """This server alone over stdio (`python -m mcp_servers.<name>`, `neonblue serve <name>`)."""
        async with self.open_service(settings) as service:
            await self.build_server(service).run_stdio_async()


SERVERS: dict[str, ServerSpec] = {
    spec.name: spec
    for spec in (
        ServerSpec("postgres", "mcp_servers.postgres"),
        ServerSpec("clickhouse", "mcp_servers.clickhouse"),
        ServerSpec("chromadb", "mcp_servers.chroma"),
        ServerSpec("intelligence", "mcp_servers.intelligence", needs_backends=True),
    )
}


def stdio_main(name: str) -> int:
    """Entry point of `python -m mcp_servers.<name>`: logs to stderr, a store that is down is one
    line and exit status 2, Ctrl-C is 130."""
    import logging

    import anyio

    from schemas.errors import ServiceError
    from schemas.logs import configure_logging
    from schemas.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level)
    try:
        anyio.run(SERVERS[name].serve_stdio, settings)
    except ServiceError as exc:
        logging.getLogger(f"mcp_servers.{name}").error("%s", exc)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
