"""The chat's side of MCP: the router's tools as Anthropic tool definitions, and calls back.

The chat never imports a server: it holds a real `mcp.Client` (in-process on the
router's low-level server, or over HTTP to a running stack) and sees exactly the
catalogue an outside agent sees.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import mcp.types as types
from mcp import Client
from mcp.shared.exceptions import MCPError

# The Messages API accepts [a-zA-Z0-9_-]; MCP names may also contain dots.
_API_NAME_BAD = re.compile(r"[^a-zA-Z0-9_-]")
API_NAME_MAX = 64
DEFAULT_MAX_RESULT_CHARS = 16_000


@dataclass
class ToolCall:
    """One tool call the chat made, and what came back."""

    tool: str
    arguments: dict[str, Any]
    is_error: bool = False
    duration_ms: float = 0.0
    text: str = ""  # what the model (or the reader) gets: JSON of the structured result, or the text content
    structured: Any = None
    truncated: bool = False

    def summary(self) -> dict[str, Any]:
        return {"tool": self.tool, "arguments": self.arguments, "is_error": self.is_error}


@dataclass
class ToolBridge:
    """The router's catalogue for the model, and the way its tool_use blocks get executed."""

    client: Client
    tools: list[types.Tool]
    max_result_chars: int = DEFAULT_MAX_RESULT_CHARS
    api_to_mcp: dict[str, str] = field(default_factory=dict)
    read_only: bool = False

    @classmethod
    async def load(cls, client: Client, *, read_only: bool = False,
                   max_result_chars: int = DEFAULT_MAX_RESULT_CHARS) -> ToolBridge:
        tools = (await client.list_tools()).tools
        if read_only:
            tools = [t for t in tools if t.annotations is not None and t.annotations.read_only_hint]
        bridge = cls(client, tools, max_result_chars, read_only=read_only)
        for tool in tools:
            bridge.api_to_mcp[api_tool_name(tool.name, bridge.api_to_mcp)] = tool.name
        return bridge

    @property
    def names(self) -> set[str]:
        return {t.name for t in self.tools}

    def add(self, tools: list[types.Tool]) -> list[str]:
        """Offer more tools from now on (the question's candidates); the names added."""
        added = []
        for tool in tools:
            if tool.name in self.names:
                continue
            if self.read_only and not (tool.annotations is not None and tool.annotations.read_only_hint):
                continue
            self.tools.append(tool)
            self.api_to_mcp[api_tool_name(tool.name, self.api_to_mcp)] = tool.name
            added.append(tool.name)
        return added

    def definitions(self) -> list[dict[str, Any]]:
        """Anthropic `tools`: name, description, input_schema (always a JSON-Schema object)."""
        by_name = {t.name: t for t in self.tools}
        out = []
        for api_name, mcp_name in self.api_to_mcp.items():
            tool = by_name[mcp_name]
            schema = dict(tool.input_schema or {})
            schema.setdefault("type", "object")
            schema.setdefault("properties", {})
            out.append({"name": api_name, "description": (tool.description or tool.title or mcp_name)[:4096],
                        "input_schema": schema})
        return out

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolCall:
        """Run one tool through the MCP client. Never raises for a tool-level problem:
        an unknown tool, a protocol error or an isError answer all come back as is_error."""
        mcp_name = self.api_to_mcp.get(name, name)
        call = ToolCall(tool=mcp_name, arguments=arguments)
        started = time.perf_counter()
        try:
            result = await self.client.call_tool(mcp_name, arguments)
        except MCPError as exc:
            call.is_error, call.text = True, f"error {exc.code}: {exc.message}"
        else:
            call.is_error = bool(result.is_error)
            call.structured = result.structured_content
            call.text = result_text(result)
        call.duration_ms = (time.perf_counter() - started) * 1000
        call.text, call.truncated = truncate(call.text, self.max_result_chars)
        return call


def api_tool_name(mcp_name: str, taken: dict[str, str]) -> str:
    """An Anthropic-safe, unique name for an MCP tool (dots and long names are rewritten stably)."""
    name = _API_NAME_BAD.sub("_", mcp_name)
    if len(name) > API_NAME_MAX or name in taken:
        digest = hashlib.sha1(mcp_name.encode()).hexdigest()[:8]
        name = f"{name[:API_NAME_MAX - 9]}_{digest}"
    return name


def result_text(result: types.CallToolResult) -> str:
    """Structured content as compact JSON when there is some, else the text parts."""
    if result.structured_content is not None and not result.is_error:
        return json.dumps(result.structured_content, default=str, separators=(",", ":"))
    parts = []
    for item in result.content:
        if isinstance(item, types.TextContent):
            parts.append(item.text)
        elif isinstance(item, types.EmbeddedResource) and isinstance(item.resource, types.TextResourceContents):
            parts.append(item.resource.text)
        else:
            parts.append(f"[{item.type} content omitted]")
    return "\n".join(parts) or "(no content)"


def truncate(text: str, limit: int) -> tuple[str, bool]:
    if len(text) <= limit:
        return text, False
    note = (f"\n[truncated by neonblue chat: showing {limit} of {len(text)} characters; "
            "ask the tool for fewer rows or a narrower filter to see the rest]")
    return text[:limit] + note, True
