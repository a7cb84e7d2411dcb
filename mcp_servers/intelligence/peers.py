"""The other NeonBlue servers, reached by their MCP tool names.

All data the intelligence server uses flows through these tool calls (the
same JSON a remote server over stdio or HTTP returns), never through private
imports of the other servers, so an in-process and a remote backend behave alike.

Inside the router the backends are the router's (`open_service(settings, backends=router.backends)`).
Alone (`python -m mcp_servers.intelligence`), `open_peers` opens them itself: each peer in this
process behind an in-memory MCP client, or the remote server settings.backends names
(`stdio:<command>` or an http(s) URL).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from types import ModuleType
from typing import Any, Protocol

import anyio
from anyio.abc import TaskGroup
from mcp import Client, StdioServerParameters
from mcp.server.mcpserver import MCPServer

from schemas.errors import BackendUnavailable, ServiceError
from schemas.refusals import refusal_of
from schemas.servers import CHROMADB, CLICKHOUSE, PEERS_OF_INTELLIGENCE, POSTGRES, backend_target
from schemas.settings import Settings

log = logging.getLogger(__name__)


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
        return await self.call(CHROMADB, tool, arguments)


def service_error_in(exc: BaseException) -> ServiceError | None:
    """The ServiceError inside `exc`: itself, or, through nested exception groups, the first leaf when
    every leaf is one (a task group whose peer call was refused wraps the refusal in a group)."""
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        leaves = [service_error_in(e) for e in exc.exceptions]
        if all(leaves):
            return leaves[0]
    return None


@asynccontextmanager
async def gathering() -> AsyncIterator[TaskGroup]:
    """A task group for concurrent peer calls whose refusal reaches the caller as itself.

    anyio wraps a task's exception in an ExceptionGroup, and the MCP SDK shows a client only
    "Error executing tool X" for anything but a ToolError; so a group of ServiceErrors is
    re-raised as its (first) ServiceError, with its message. Anything else stays a group.
    """
    try:
        async with anyio.create_task_group() as tg:
            yield tg
    except BaseExceptionGroup as group:
        refusal = service_error_in(group)
        if refusal is None:
            raise
        raise refusal from None


class ClientPeer:
    """A peer behind an MCP client: its structured answer, or its refusal as a ServiceError."""

    def __init__(self, name: str, client: Client, timeout: float | None) -> None:
        self.name = name
        self.client = client
        self.timeout = timeout

    async def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        try:
            with anyio.fail_after(self.timeout):
                result = await self.client.call_tool(tool, arguments)
        except TimeoutError:
            raise BackendUnavailable(
                f"backend '{self.name}' is unavailable: no answer within {self.timeout:g}s calling {tool}") from None
        except ServiceError:
            raise
        except Exception as exc:  # noqa: BLE001 - connection lost, process died, protocol error
            raise BackendUnavailable(f"backend '{self.name}' is unavailable: {type(exc).__name__}: {exc}") from exc
        if result.is_error:
            raise refusal_of(result)  # the peer's kind and line (schemas.refusals), no backend name added
        if result.structured_content is not None:
            return result.structured_content
        raise ServiceError(f"{tool} returned no structured content")


def _postgres() -> ModuleType:
    from mcp_servers import postgres

    return postgres


def _clickhouse() -> ModuleType:
    from mcp_servers import clickhouse

    return clickhouse


def _chroma() -> ModuleType | None:
    try:
        from mcp_servers import chroma
    except ModuleNotFoundError as exc:  # a build without semantic memory: similar experiments are skipped
        log.warning("the chromadb server is not installed in this build (%s); skipped", exc)
        return None
    return chroma


# The peers' packages, imported by name (not through mcp_servers.registry, which imports this server).
_PACKAGES = {POSTGRES: _postgres, CLICKHOUSE: _clickhouse, CHROMADB: _chroma}


@asynccontextmanager
async def open_peers(settings: Settings) -> AsyncIterator[dict[str, ToolBackend]]:
    """The postgres, clickhouse and chromadb servers for an intelligence server running alone.

    Each is opened in this process (its store per the settings) behind an in-memory MCP client,
    unless settings.backends names a remote one. Closed on exit.
    """
    peers: dict[str, ToolBackend] = {}
    async with AsyncExitStack() as stack:
        for name in PEERS_OF_INTELLIGENCE:
            target: MCPServer | StdioServerParameters | str
            timeout: float | None = settings.backend_timeout
            if name in settings.backends:
                target = backend_target(name, settings.backends[name])
            else:
                package = _PACKAGES[name]()
                if package is None:
                    continue
                service = await stack.enter_async_context(package.open_service(settings))
                target, timeout = package.build_server(service), None  # same process: each store has its own limits
            client = await stack.enter_async_context(
                Client(target, read_timeout_seconds=timeout))
            peers[name] = ClientPeer(name, client, timeout)
        yield peers
