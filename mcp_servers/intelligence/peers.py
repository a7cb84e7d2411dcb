"""The other NeonBlue servers, reached through the router's backends by their MCP tool names.

All data the intelligence server uses flows through these tool calls (the
same JSON a remote server over stdio or HTTP returns), never through private
imports of the other servers, so an in-process and a remote backend behave alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from schemas.errors import BackendUnavailable

POSTGRES, CLICKHOUSE, CHROMA = "postgres", "clickhouse", "chromadb"


class ToolBackend(Protocol):
    async def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """Call a tool; return its structured content; raise ServiceError / BackendUnavailable."""


class Peers:
    """Typed-by-name access to the registry (postgres), the event store (clickhouse) and memory (chromadb)."""

    def __init__(self, backends: Mapping[str, ToolBackend]) -> None:
        self.backends = backends  # the router's live dict: backends connect after this service opens

    async def call(self, server: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        backend = self.backends.get(server)
        if backend is None:
            raise BackendUnavailable(f"the {server} server is not connected to the intelligence server")
        return await backend.call(tool, {k: v for k, v in arguments.items() if v is not None})

    def has(self, server: str) -> bool:
        return server in self.backends

    async def postgres(self, tool: str, **arguments: Any) -> dict[str, Any]:
        return await self.call(POSTGRES, tool, arguments)

    async def clickhouse(self, tool: str, **arguments: Any) -> dict[str, Any]:
        return await self.call(CLICKHOUSE, tool, arguments)

    async def chroma(self, tool: str, **arguments: Any) -> dict[str, Any]:
        return await self.call(CHROMA, tool, arguments)
