"""Where each specialised server lives, so the router, the CLI and the tests
build them one way: `open_service(settings, ...)` then `build_server(service)`.

The names and their roles are `schemas.servers`; each name's package is imported
in a small function below, lazily: a build may leave a server out, and loading
one server never imports the others.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from mcp.server.mcpserver import MCPServer

from mcp_servers.stdio import serve_stdio
from schemas.servers import CHROMADB, CLICKHOUSE, INTELLIGENCE, POSTGRES, ROLES, SERVER_NAMES
from schemas.settings import Settings


def _postgres() -> ModuleType:
    from mcp_servers import postgres

    return postgres


def _clickhouse() -> ModuleType:
    from mcp_servers import clickhouse

    return clickhouse


def _chroma() -> ModuleType:
    from mcp_servers import chroma

    return chroma


def _intelligence() -> ModuleType:
    from mcp_servers import intelligence

    return intelligence


@dataclass(frozen=True)
class ServerSpec:
    name: str  # public backend name used in config and tool prefixes
    load: Callable[[], ModuleType]  # imports the package exporting open_service and build_server
    needs_backends: bool = False  # Experiment Intelligence calls the other servers

    @property
    def role(self) -> str:
        return ROLES[self.name]

    def available(self) -> bool:
        """True when the package is in this build and exports the server entry points."""
        try:
            module = self.load()
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] == "mcp_servers":  # the server's own package is absent
                return False
            raise
        return hasattr(module, "open_service")

    def open_service(self, settings: Settings, **kwargs: Any) -> AbstractAsyncContextManager[Any]:
        return self.load().open_service(settings, **kwargs)

    def build_server(self, service: Any) -> MCPServer:
        return self.load().build_server(service)

    async def serve_stdio(self, settings: Settings) -> None:
        """This server alone over stdio (`neonblue serve <name>`; `python -m mcp_servers.<name>` is the same)."""
        await serve_stdio(self.load(), settings)


_PACKAGES: dict[str, Callable[[], ModuleType]] = {
    POSTGRES: _postgres, CLICKHOUSE: _clickhouse, CHROMADB: _chroma, INTELLIGENCE: _intelligence,
}
# In the order of schemas.servers; a name without a package here fails at import, not later.
SERVERS: dict[str, ServerSpec] = {
    name: ServerSpec(name, _PACKAGES[name], needs_backends=name == INTELLIGENCE) for name in SERVER_NAMES
}
