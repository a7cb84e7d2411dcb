"""Backends: the servers the router dispatches to.

Every backend is reached through an `mcp.Client`, whatever it is:
an `MCPServer` in this process (in-memory, no JSON-RPC framing), a command
started over stdio, or a streamable-HTTP URL. Each backend carries its own
timeout, latency/error counters and a circuit breaker, so a dead backend
answers with a clear error quickly instead of hanging the router.

Every isError result leaving a backend is a refusal in `schemas.refusals`' form: one line, its
kind in `_meta`. `Backend.call` raises that kind's class again (a peer's NotFound is a NotFound
here), never by reading the message.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import httpx
import mcp.types as types
import numpy as np
from mcp import Client, StdioServerParameters
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.shared.exceptions import MCPError

from schemas.errors import BackendUnavailable, ServiceError
from schemas.refusals import normalized, refusal, refusal_of, refusal_result

log = logging.getLogger(__name__)

SERVER_INFO_META = "io.modelcontextprotocol/serverInfo"
# A tools/list request's `_meta` key naming the profile to list (the router's `core` or `full`): a
# backend that is itself a NeonBlue router lists every tool to the router in front of it.
PROFILE_META = "neonblue/profile"


@dataclass
class CircuitBreaker:
    """Closed → open after `threshold` consecutive failures; half-open after `reset_after` s."""

    threshold: int = 3
    reset_after: float = 15.0
    failures: int = 0
    opened_at: float | None = None

    @property
    def state(self) -> Literal["closed", "open", "half_open"]:
        if self.opened_at is None:
            return "closed"
        return "half_open" if time.monotonic() - self.opened_at >= self.reset_after else "open"

    def allow(self) -> bool:
        return self.state != "open"

    def record_success(self) -> None:
        self.failures = 0
        self.opened_at = None

    def record_failure(self) -> None:
        self.failures += 1
        if self.failures >= self.threshold or self.state == "half_open":
            self.opened_at = time.monotonic()

    def retry_in(self) -> float:
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.reset_after - (time.monotonic() - self.opened_at))


@dataclass
class BackendStats:
    calls: int = 0
    errors: int = 0  # transport failures and timeouts, not tool-level isError answers
    tool_errors: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=2048))

    def percentiles(self) -> dict[str, float | None]:
        if not self.latencies_ms:
            return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
        values = np.fromiter(self.latencies_ms, dtype=float)
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        return {"p50_ms": round(float(p50), 3), "p95_ms": round(float(p95), 3), "p99_ms": round(float(p99), 3)}


Target = MCPServer | StdioServerParameters | str


def error_result(message: str) -> types.CallToolResult:
    """The router's own refusal that a backend cannot be reached (kind `unavailable`)."""
    return refusal_result(BackendUnavailable(message))


class Backend:
    """One server behind the router."""

    def __init__(self, name: str, target: Target, *, timeout: float = 30.0, token: str | None = None,
                 breaker: CircuitBreaker | None = None) -> None:
        self.name = name
        self.target = target
        self.timeout = timeout
        self.token = token
        self.breaker = breaker or CircuitBreaker()
        self.stats = BackendStats()
        self.client: Client | None = None
        self.connect_error: str | None = None
        self.tools: list[types.Tool] = []
        self.resources: list[types.Resource] = []
        self.resource_templates: list[types.ResourceTemplate] = []
        self.prompts: list[types.Prompt] = []

    @property
    def kind(self) -> str:
        if isinstance(self.target, MCPServer):
            return "in-process"
        return "stdio" if isinstance(self.target, StdioServerParameters) else "http"

    @property
    def healthy(self) -> bool:
        return self.client is not None and self.breaker.state == "closed"

    def _client(self) -> Client:
        if isinstance(self.target, str) and self.token:
            from mcp.client.streamable_http import streamable_http_client

            http = httpx.AsyncClient(headers={"Authorization": f"Bearer {self.token}"}, timeout=self.timeout)
            return Client(streamable_http_client(self.target, http_client=http), read_timeout_seconds=self.timeout)
        return Client(self.target, read_timeout_seconds=None if isinstance(self.target, MCPServer) else self.timeout)

    async def connect(self, stack: AsyncExitStack) -> None:
        """Open the connection and read the catalogue. A failure marks the backend down, not the router."""
        try:
            # Entering the client opens its task group, which must outlive this call: no cancel scope
            # around it (the client's own read timeout bounds the handshake).
            client = await stack.enter_async_context(self._client())
            with anyio.fail_after(max(self.timeout, 60.0)):
                self.tools = (await client.list_tools(meta={PROFILE_META: "full"})).tools
                caps = client.server_capabilities
                if caps.resources is not None:
                    self.resources = (await client.list_resources()).resources
                    self.resource_templates = (await client.list_resource_templates()).resource_templates
                if caps.prompts is not None:
                    self.prompts = (await client.list_prompts()).prompts
        except Exception as exc:  # noqa: BLE001 - any connect failure means "down", reported by router_status
            leaf = first_leaf(exc)
            self.connect_error = f"{type(leaf).__name__}: {leaf}"
            self.breaker.opened_at = time.monotonic()
            self.breaker.failures = self.breaker.threshold
            log.error("backend %s (%s) failed to connect: %s", self.name, self.kind, self.connect_error)
            return
        self.client = client
        log.info("backend %s (%s): %d tools", self.name, self.kind, len(self.tools))

    def _unavailable(self, why: str) -> str:
        return f"backend '{self.name}' is unavailable: {why}"

    async def call_tool(self, tool: str, arguments: dict[str, Any]) -> types.CallToolResult:
        """Call a tool; transport failures and timeouts come back as isError results."""
        if self.client is None:
            return error_result(self._unavailable(self.connect_error or "not connected"))
        if not self.breaker.allow():
            return error_result(self._unavailable(
                f"circuit open after {self.breaker.failures} failures; retry in {self.breaker.retry_in():.0f}s"))
        started = time.perf_counter()
        self.stats.calls += 1
        try:
            if isinstance(self.target, MCPServer):
                # Same process: no transport can hang, and each store enforces its own query timeouts,
                # so the hot path skips a per-call timer (it costs ~30 µs, half the call itself).
                result = await self._call_in_process(self.target, tool, arguments)
            else:
                with anyio.fail_after(self.timeout):
                    result = await self.client.call_tool(tool, arguments)
        except TimeoutError:
            self.stats.errors += 1
            self.breaker.record_failure()
            return error_result(self._unavailable(f"no answer within {self.timeout:g}s calling {tool}"))
        except Exception as exc:  # noqa: BLE001 - connection lost, process died, protocol error
            self.stats.errors += 1
            self.breaker.record_failure()
            leaf = first_leaf(exc)
            return error_result(self._unavailable(f"{type(leaf).__name__}: {leaf}"))
        self.stats.latencies_ms.append((time.perf_counter() - started) * 1000)
        self.breaker.record_success()
        if result.is_error:
            self.stats.tool_errors += 1
            result = normalized(result)  # a remote server's refusal reads like an in-process one
        return strip_identity(result)

    @staticmethod
    async def _call_in_process(server: MCPServer, tool: str, arguments: dict[str, Any]) -> types.CallToolResult:
        """Call an in-process server's tool without a second client/session hop.

        Errors become isError results exactly as the SDK's own call handler makes them, so an
        in-process backend answers like the same server over stdio or HTTP.
        """
        try:
            result = await server.call_tool(tool, arguments)
        except MCPError:
            raise
        except Exception as exc:  # noqa: BLE001 - a plain MCPServer (ToolServer answers refusals itself)
            if not isinstance(exc, ToolError) or isinstance(exc, UnexpectedToolError):
                log.exception("tool %s raised an unexpected exception", tool)
            return refusal_result(refusal(exc, server._tool_input_schema(tool)))
        if not isinstance(result, types.CallToolResult):  # an input-required round trip: not routed in-process
            raise ServiceError(f"tool {tool} asked for client input, which the router cannot relay")
        return result

    async def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """Call a tool and return its structured content; a refusal raises its kind's ServiceError
        subclass (NotFound, InvalidInput, Conflict, QueryRefused, BackendUnavailable, InternalError)
        with the peer's own line, no backend name added.

        This is how one server (Experiment Intelligence) uses another.
        """
        result = await self.call_tool(tool, arguments)
        if result.is_error:
            raise refusal_of(result)
        if result.structured_content is not None:
            return result.structured_content
        log.error("backend %s: tool %s returned no structured content", self.name, tool)
        raise ServiceError(f"{tool} returned no structured content")

    async def read_resource(self, uri: str) -> types.ReadResourceResult:
        if self.client is None:
            raise BackendUnavailable(self._unavailable(self.connect_error or "not connected"))
        with anyio.fail_after(self.timeout):
            return await self.client.read_resource(uri)

    async def get_prompt(self, name: str, arguments: dict[str, str] | None) -> types.GetPromptResult:
        if self.client is None:
            raise BackendUnavailable(self._unavailable(self.connect_error or "not connected"))
        with anyio.fail_after(self.timeout):
            return await self.client.get_prompt(name, arguments)

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "healthy": self.healthy,
            "circuit": self.breaker.state,
            "tools": len(self.tools),
            "calls": self.stats.calls,
            "errors": self.stats.errors,
            "tool_errors": self.stats.tool_errors,
            "connect_error": self.connect_error,
            **self.stats.percentiles(),
        }


def first_leaf(exc: BaseException) -> BaseException:
    """The first real exception inside (possibly nested) exception groups, for a readable message."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def strip_identity(result: types.CallToolResult) -> types.CallToolResult:
    """Forwarded results must not reveal which backend answered."""
    if result.meta and SERVER_INFO_META in result.meta:
        meta = {k: v for k, v in result.meta.items() if k != SERVER_INFO_META}
        return result.model_copy(update={"meta": meta or None})
    return result
